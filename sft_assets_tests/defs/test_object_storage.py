"""Real materializations with the warehouse and the row cache on a non-local fsspec filesystem (memory://).

On Kubernetes every step runs in its own pod, so tables and caches live on
object storage (s3://, gs://); memory:// goes through the same UPath/fsspec
code paths without a bucket.
"""

import shutil
import uuid

import dagster as dg
import numpy as np
import pytest
from upath import UPath

from sft_assets.cli import run_all
from sft_assets.core.embedding_cache import vectors_of
from sft_assets.definitions import build_defs
from sft_assets.settings import Settings

# A small real slice: Chinese instructions with a non-ASCII file name, and an exam CSV.
FILES = ("zh_categories/企业管理问题.json", "cmmlu/dev/agronomy.csv")


@pytest.fixture
def object_store():
    root = UPath(f"memory://sft-assets-{uuid.uuid4().hex}")
    yield root
    if root.exists():
        root.fs.rm(root.path, recursive=True)


def _metadata(instance, asset: str, key: str) -> dict:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records[0]
    return record.asset_materialization.metadata


def test_ingest_and_embed_on_object_storage(tmp_path, corpora, read_corpus, object_store):
    raw = tmp_path / "raw"
    for relpath in FILES:
        (raw / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpora / relpath, raw / relpath)
    settings = Settings.from_env({"SFT_ASSETS_DATA": str(tmp_path / "data"), "SFT_ASSETS_RAW_ROOT": str(raw),
                                  "SFT_ASSETS_WAREHOUSE": str(object_store / "warehouse"),
                                  "SFT_ASSETS_CACHE": str(object_store / "cache")})
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    # the run's event log is a local file by nature: it goes beside, not into, the data folder
    assert run_all(until="update_corpus", defs=defs, instance=instance, log_dir=tmp_path / "logs") == 0

    store = defs.resources["warehouse"].warehouse()
    assert not store.is_local and store.partitions("raw_records") == sorted(FILES)
    for relpath in FILES:
        expected = read_corpus(relpath)
        assert store.read("raw_records", relpath).equals(expected.records)
        assert store.read("quarantined_records", relpath).height == expected.quarantine.height
        assert store.read("embeddings", relpath)["record_id"].to_list() == expected.records["record_id"].to_list()
        # the .npy beside the parquet: on object storage it is read whole, not memory-mapped
        vectors = store.read_vectors("embeddings", relpath)
        assert type(vectors) is np.ndarray and np.array_equal(vectors, vectors_of(store.read("embeddings", relpath)))
        assert _metadata(instance, "embeddings", relpath)["computed_rows"].value == expected.records.height
    assert not any(p.name.endswith(".tmp") for p in store.table_dir("raw_records").iterdir())
    # nothing landed on local disk: no warehouse folder, no cache, and no catalog for a remote warehouse
    assert not (tmp_path / "data").exists()

    # embedding a file again reads every vector back from the row cache on the object store
    for relpath in FILES:
        assert defs.resolve_job_def("embed_corpus").execute_in_process(partition_key=relpath, instance=instance).success
        assert _metadata(instance, "embeddings", relpath)["computed_rows"].value == 0
