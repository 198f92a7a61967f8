"""The code location: every asset, check, job, sensor and resource."""

import dagster as dg

from sft_assets.defs import diversity, ingest, selection
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.resources import ParquetIOManager, RawRoot, WarehouseResource
from sft_assets.defs.sensors import build_raw_files_sensor
from sft_assets.settings import Settings

ALL_ASSETS = [*ingest.assets, *diversity.assets, *selection.assets]
POOL_JOB = "build_pool"

corpus_job = dg.define_asset_job(
    "ingest_corpus",
    selection=dg.AssetSelection.assets(ingest.ingest, diversity.embeddings),
    description="Everything per corpus file: records, quarantine, embeddings (new rows only).",
)
pool_job = dg.define_asset_job(
    POOL_JOB,
    selection=dg.AssetSelection.assets(*ALL_ASSETS) - dg.AssetSelection.assets(ingest.ingest, diversity.embeddings),
    description="Everything over the whole pool: dedup, topics, diversity, scores, selection, exports.",
)


def build_defs(settings: Settings) -> dg.Definitions:
    warehouse = WarehouseResource(base_uri=settings.warehouse, catalog_path=settings.catalog)
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[corpus_job, pool_job],
        sensors=[build_raw_files_sensor(corpus_job)],
        resources={
            "io_manager": ParquetIOManager(warehouse=warehouse),
            "warehouse": warehouse,
            "raw_root": RawRoot(root=settings.raw_root),
            "embedding_model": EmbeddingModel(cache_uri=settings.cache),
            "export_folder": selection.ExportFolder(path=settings.exports),
        },
    )


defs = build_defs(Settings.from_env())
