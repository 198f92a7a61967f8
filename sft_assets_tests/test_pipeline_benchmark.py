"""benchmarks/pipeline.py's per-asset breakdown, read from the event log of a real build of the sample."""

import importlib.util
import sys

from sft_assets.core.storage import Warehouse
from sft_assets_tests.conftest import REPO
from sft_assets_tests.defs.test_pipeline import _build


def _benchmark():
    """The benchmark script as a module (it imports bench_env from its own folder)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_breakdown_sums_steps_rows_and_partitions_per_asset(tmp_path, sample_cache):
    bench = _benchmark()
    data = tmp_path / "data"
    defs, instance = _build(data, sample_cache)
    result = bench.breakdown(instance, bench.run_ids(instance))
    assets = {row["asset"]: row for row in result["assets"]}
    store = Warehouse(data / "warehouse")
    files = store.partitions("raw_records")

    ingest = assets["raw_records + quarantined_records"]  # the multi-asset is one step
    assert ingest["runs"] == ingest["partitions"] == len(files)
    assert ingest["rows_by_asset"]["raw_records"] == store.read_partitions("raw_records").height
    assert bench.asset_rows(result, "raw_records") == ingest["rows_by_asset"]["raw_records"]
    assert assets["candidate_pool"]["runs"] == 1 and assets["candidate_pool"]["partitions"] == 0
    assert assets["candidate_pool"]["rows"] == store.read("candidate_pool").height
    produced = {asset for row in result["assets"] for asset in row["rows_by_asset"]}
    every = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"sft_dataset", "ppo_prompts", "ppl_scores"} <= produced <= every
    assert all(row["seconds"] > 0 for row in result["assets"])
    assert result["runs"] == len(instance.get_run_records())
    assert 0 < result["run_overhead_s"] < result["run_s"]
