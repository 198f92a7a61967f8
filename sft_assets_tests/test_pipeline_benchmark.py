"""benchmarks/pipeline.py's per-asset breakdown, read from the event log of a real build of the sample."""

import importlib.util
import subprocess
import sys
from pathlib import Path

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
    labels = assets["quality_labels"]  # one step over every file: its rows summed over the files
    assert labels["runs"] == 1 and labels["partitions"] == len(files)
    assert labels["rows"] == store.read_partitions("quality_labels").height
    assert assets["candidate_pool"]["runs"] == 1 and assets["candidate_pool"]["partitions"] == 0
    assert assets["candidate_pool"]["rows"] == store.read("candidate_pool").height
    produced = {asset for row in result["assets"] for asset in row["rows_by_asset"]}
    every = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"sft_dataset", "ppo_prompts", "ppl_scores"} <= produced <= every
    assert all(row["seconds"] > 0 for row in result["assets"])
    assert result["runs"] == len(instance.get_run_records())
    assert 0 < result["run_overhead_s"] < result["run_s"]


def test_phases_come_from_the_progress_display_and_the_closing_summary():
    """Lines as `sft-assets run` printed them in a whole-corpora run (the progress display repaints with
    carriage returns); the summary's order, the files counted, and no phase from a step count."""
    lines = ["update_corpus ━━━━━━━━━━━━━━ 180/181 files 69 rows/s 0:25:40 ETA 0:00:05\r"
             "update_corpus ━━━━━━━━━━━━━━ 181/181 files 69 rows/s 0:25:45 ETA 0:00:00",
             "analyze_pool ━━━━━━━━━━━━━━━━━━━━━━━━ 7/7 steps  0:08:12 ETA 0:00:00",
             "score_corpus ━━━━━━━━━━━━━━━━━━━━━━━━ 17/17 files 3 rows/s 0:10:00 ETA 0:00:00",
             "Summary",
             "  elapsed         update_corpus 1545.2 s, analyze_pool 492.7 s, score_corpus 1845.4 s, "
             "select_and_export 8.5 s"]
    assert _benchmark().parse_phases(lines) == [
        {"phase": "update_corpus", "partitions": 181, "seconds": 1545.2},
        {"phase": "analyze_pool", "seconds": 492.7},
        {"phase": "score_corpus", "partitions": 17, "seconds": 1845.4},
        {"phase": "select_and_export", "seconds": 8.5}]


def test_a_baseline_run_imports_the_exported_commit_not_this_checkout(tmp_path, monkeypatch):
    """``--baseline``: the child must run the exported commit's package, though this checkout is installed
    (an editable install) and on the parent's PYTHONPATH."""
    bench = _benchmark()
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    code = tmp_path / "baseline" / "code"
    head = bench.export_commit("HEAD", code)
    assert len(head) == 40 and (code / "sft_assets" / "__init__.py").is_file()
    env = bench.child_env(tmp_path, REPO.parent / "shared" / "corpora", data=tmp_path / "baseline" / "data",
                          code=code)
    printed = subprocess.run([sys.executable, "-c", "import sft_assets; print(sft_assets.__file__)"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(printed.strip()).resolve().is_relative_to(code.resolve())
    assert env["SFT_ASSETS_DATA"] == str(tmp_path / "baseline" / "data")
    assert env["DAGSTER_HOME"] == str(tmp_path / "baseline" / "data" / "dagster_home")
