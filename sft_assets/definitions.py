"""The code location: every asset, check, job, sensor and resource."""

import dagster as dg

from sft_assets.defs import (
    automation, diversity, ingest, novelty, quality, selection, selection_value, self_instruct, uncertainty,
)
from sft_assets.defs.models import EmbeddingModel, LanguageModel
from sft_assets.defs.resources import EmbeddingsIOManager, ParquetIOManager, RawRoot, WarehouseResource
from sft_assets.defs.sensors import build_raw_files_sensor
from sft_assets.defs.versions import with_code_versions
from sft_assets.settings import Settings

ALL_ASSETS = [*ingest.assets, *diversity.assets, *novelty.assets, *quality.assets, *uncertainty.assets,
              *selection.assets]

# The order `sft-assets run` follows; in the UI each is a job of its own. A new file is ingested and
# embedded in one run (what raw_files_sensor runs too): a Dagster run costs about half a second of event
# log writes, so one run per file per phase, not two, saves minutes over a few hundred files.
PHASES = (
    ("update_corpus", True, [ingest.ingest, diversity.embeddings],
     "Per corpus file: normalized records, quarantine, and embeddings of rows not in the cache."),
    ("analyze_pool", False, [diversity.candidate_pool, diversity.near_duplicates, diversity.topic_clusters,
                             diversity.diverse_subset, *novelty.assets, quality.quality_model],
     "Over the whole pool: dedup, topics, the K-Center subset, novelty, the quality model (trained once)."),
    ("score_corpus", True, [quality.quality_labels, *uncertainty.assets],
     "Per corpus file: quality labels, then perplexity and option probabilities of the rows that survived."),
    ("select_and_export", False, selection.assets,
     "Over the whole pool: decisions with reasons, the SFT/RM/PPO datasets and the exports."),
)
# Parts of update_corpus on their own, for the UI: re-read files, or re-embed after a model change.
PARTS = (
    ("ingest_corpus", True, [ingest.ingest], "Per corpus file: normalized records and quarantine."),
    ("embed_corpus", True, [diversity.embeddings], "Per corpus file: embeddings of rows not in the cache."),
)
JOBS = {name: dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets)
                                  | dg.AssetSelection.checks_for_assets(*assets), description=text)
        for name, _, assets, text in (*PHASES, *PARTS)}


def build_defs(settings: Settings) -> dg.Definitions:
    warehouse = WarehouseResource(base_uri=settings.warehouse, catalog_path=settings.catalog)
    return dg.Definitions(
        # Self-instruct rounds and the selection report run on request only: automated, every new file would
        # start a round or a fine-tuning run.
        assets=[*automation.automate(with_code_versions(ALL_ASSETS)), *with_code_versions(self_instruct.assets),
                *with_code_versions(selection_value.assets), *ingest.sources],
        asset_checks=[*selection.checks, *quality.checks],
        jobs=[*JOBS.values(), *self_instruct.jobs],
        sensors=[build_raw_files_sensor(JOBS["update_corpus"], JOBS["analyze_pool"], settings.sensor_seconds),
                 automation.automation_sensor(settings.sensor_seconds)],
        resources={
            "io_manager": ParquetIOManager(warehouse=warehouse),
            "embeddings_io_manager": EmbeddingsIOManager(warehouse=warehouse),
            "warehouse": warehouse,
            "raw_root": RawRoot(root=settings.raw_root),
            "curated_root": RawRoot(root=settings.curated_root, category_globs=[]),
            "embedding_model": EmbeddingModel(cache_uri=settings.cache),
            "language_model": LanguageModel(cache_uri=settings.cache),
            "model_store": quality.ModelStore(path=f"{settings.cache}/models"),
            "export_folder": selection.ExportFolder(path=settings.exports),
        },
    )


# Local runs (`make ui`): one process per run, so the models load once per run rather than once per step.
defs = dg.Definitions.merge(build_defs(Settings.from_env()), dg.Definitions(executor=dg.in_process_executor))
