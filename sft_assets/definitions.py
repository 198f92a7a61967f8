"""The code location: every asset, check, job, sensor and resource."""

from __future__ import annotations

import dagster as dg

from sft_assets.defs import ingest
from sft_assets.defs.resources import ParquetIOManager, RawRoot, WarehouseResource
from sft_assets.defs.sensors import build_raw_files_sensor
from sft_assets.settings import Settings

ALL_ASSETS = [*ingest.assets]
POOL_JOB = "build_pool"

corpus_job = dg.define_asset_job(
    "ingest_corpus",
    selection=dg.AssetSelection.assets(*ALL_ASSETS).required_multi_asset_neighbors()
    & dg.AssetSelection.groups("ingest"),
    description="Ingest one raw file: its partition of raw_records and quarantined_records.",
)


def build_defs(settings: Settings) -> dg.Definitions:
    warehouse = WarehouseResource(base_uri=settings.warehouse, catalog_path=settings.catalog)
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[corpus_job],
        sensors=[build_raw_files_sensor(corpus_job)],
        resources={
            "io_manager": ParquetIOManager(warehouse=warehouse),
            "warehouse": warehouse,
            "raw_root": RawRoot(root=settings.raw_root),
        },
    )


defs = build_defs(Settings.from_env())
