"""Live operation end to end: a file dropped into the raw root of a running ``dagster dev`` ends in fresh
exports through the sensor and declarative automation alone, and costs one partition's scoring; so does
a change to that file; its deletion rebuilds the pool and the exports without it. The tests run in order
on one ``dagster dev``."""

import json
import os
import time

import polars as pl
import pytest

from sft_assets_tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

SOURCE = "alpaca_en/alpaca_data-0-3252.json"
NEW_KEY = "alpaca_en/alpaca_dropped.json"
NEW_ROWS = 50  # K-Center picks about half; their perplexity on CPU is most of the test's time
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}

SENSORS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors {
    name sensorState { status } } } } } }"""
PARTITIONS = """{ assetNodeOrError(assetKey: {path: ["raw_records"]}) { ... on AssetNode { partitionKeys } } }"""
RUNS = """query($after: Float) { runsOrError(filter: {createdAfter: $after}) { ... on Runs { results {
    runId status startTime endTime assetSelection { path } tags { key value } } } } }"""
MATERIALIZATIONS = """query($key: AssetKeyInput!, $after: String) { assetOrError(assetKey: $key) { ... on Asset {
    assetMaterializations(afterTimestampMillis: $after) { timestamp partition } } } }"""


def runs_since(live, since: float) -> list[dict]:
    return live.graphql(RUNS, after=since)["runsOrError"]["results"]


def materialized_since(live, asset: str, since: float) -> list[tuple[float, str | None]]:
    """(seconds since the epoch, partition) of each materialization of ``asset`` after ``since``."""
    events = live.graphql(MATERIALIZATIONS, key={"path": [asset]}, after=str(int(since * 1000)))
    return [(int(e["timestamp"]) / 1000, e["partition"]) for e in events["assetOrError"]["assetMaterializations"]]


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def wait_until_settled(live, since: float, after: str) -> float:
    """When the exports were last written after ``after``'s last materialization since ``since``, once no run
    is left to finish; fails on a failed or canceled run."""
    def settled() -> float | None:
        before = [t for t, _ in materialized_since(live, after, since)]
        exported = [t for t, _ in materialized_since(live, "exports", since)]
        runs = runs_since(live, since)
        assert not [r for r in runs if r["status"] in ("FAILURE", "CANCELED")], runs
        busy = any(r["status"] in IN_PROGRESS for r in runs)
        return max(exported) if before and exported and max(exported) > max(before) and not busy else None

    return wait_for(settled, 480, "the automation to rebuild up to the exports", interval=3)


def assert_built_from_fresh_decisions(live, since: float) -> None:
    """Item 12's guarantee: every sft_dataset and exports build since ``since`` came after the last
    selection_decisions build before it, and selection came after the last pool rebuild before it."""
    decided = [t for t, _ in materialized_since(live, "selection_decisions", since)]
    pooled = [t for t, _ in materialized_since(live, "candidate_pool", since)]
    assert decided and pooled and min(decided) > max(pooled)
    for asset in ("sft_dataset", "exports"):
        built = [t for t, _ in materialized_since(live, asset, since)]
        assert built and min(built) > min(decided), asset


def exported_corpora(live) -> set[str]:
    return set(pl.read_parquet(live.data / "warehouse" / "sft_dataset.parquet")["corpus"])


def test_sensor_and_automation_are_on_by_default(live_dagster):
    nodes = live_dagster.graphql(SENSORS)["repositoriesOrError"]["nodes"]
    status = {s["name"]: s["sensorState"]["status"] for node in nodes for s in node["sensors"]}
    assert {name: status.get(name) for name in ("raw_files_sensor", "automation_condition_sensor")} == {
        "raw_files_sensor": "RUNNING", "automation_condition_sensor": "RUNNING"}


def test_a_dropped_file_ends_in_fresh_exports(live_dagster, corpora, artifacts, record_property):
    live = live_dagster
    sft_export = live.data / "exports" / "sft_alpaca.json"
    before = sft_export.read_bytes()
    rows = json.loads((corpora / SOURCE).read_text(encoding="utf-8"))[:NEW_ROWS]
    staged = live.data / "staged.json"  # written outside the raw root, then moved in whole
    staged.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (live.data / "raw" / NEW_KEY).parent.mkdir()
    dropped = time.time()
    os.replace(staged, live.data / "raw" / NEW_KEY)

    wait_for(lambda: NEW_KEY in live.graphql(PARTITIONS)["assetNodeOrError"]["partitionKeys"], 120,
             "raw_files_sensor to add the partition")
    registered = time.time() - dropped

    exported_at = wait_until_settled(live, dropped, "ppl_scores")
    time.sleep(15)  # several automation ticks: nothing more may start once the exports are fresh
    runs = runs_since(live, dropped)
    (artifacts / "live_runs.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")

    assert all(r["status"] == "SUCCESS" for r in runs), [(r["runId"], r["status"]) for r in runs]
    assert {tag(r, "dagster/sensor_name") for r in runs} == {"raw_files_sensor", "automation_condition_sensor"}
    ingested = [tag(r, "dagster/partition") for r in runs if tag(r, "dagster/sensor_name") == "raw_files_sensor"]
    assert ingested == [NEW_KEY]
    # only the new file is scored; the quality model is not retrained for it
    for asset in ("quality_labels", "ppl_scores", "option_probabilities"):
        assert {p for _, p in materialized_since(live, asset, dropped)} == {NEW_KEY}, asset
    assert materialized_since(live, "quality_model", dropped) == []

    new_instructions = {r["instruction"] for r in rows}
    assert any(r["instruction"] in new_instructions for r in json.loads(sft_export.read_text(encoding="utf-8")))
    assert sft_export.read_bytes() != before and sft_export.stat().st_mtime >= dropped
    assert_built_from_fresh_decisions(live, dropped)

    timings = {"partition_registered_s": round(registered, 1),
               "drop_to_fresh_exports_s": round(exported_at - dropped, 1), "runs": len(runs)}
    (artifacts / "live_timings.json").write_text(json.dumps(timings, indent=1), encoding="utf-8")
    for key, value in timings.items():
        record_property(key, value)


def test_a_changed_file_is_reingested_and_rescored_alone(live_dagster, corpora):
    live = live_dagster
    rows = json.loads((corpora / SOURCE).read_text(encoding="utf-8"))[NEW_ROWS: 2 * NEW_ROWS]
    staged = live.data / "staged.json"
    staged.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    changed = time.time()
    os.replace(staged, live.data / "raw" / NEW_KEY)

    wait_until_settled(live, changed, "ppl_scores")
    time.sleep(15)
    runs = runs_since(live, changed)
    assert all(r["status"] == "SUCCESS" for r in runs), [(r["runId"], r["status"]) for r in runs]
    ingested = [tag(r, "dagster/partition") for r in runs if tag(r, "dagster/sensor_name") == "raw_files_sensor"]
    assert ingested == [NEW_KEY]
    for asset in ("raw_records", "quality_labels", "ppl_scores", "option_probabilities"):
        assert {p for _, p in materialized_since(live, asset, changed)} == {NEW_KEY}, asset
    assert_built_from_fresh_decisions(live, changed)
    kept = pl.read_parquet(live.data / "warehouse" / "sft_dataset.parquet").filter(pl.col("corpus") == NEW_KEY)
    assert kept.height and set(kept["instruction"]) <= {r["instruction"] for r in rows}


def test_a_deleted_file_leaves_the_pool_and_the_exports(live_dagster):
    live = live_dagster
    assert NEW_KEY in exported_corpora(live)
    deleted = time.time()
    (live.data / "raw" / NEW_KEY).unlink()

    wait_until_settled(live, deleted, "candidate_pool")
    time.sleep(15)
    runs = runs_since(live, deleted)
    assert all(r["status"] == "SUCCESS" for r in runs), [(r["runId"], r["status"]) for r in runs]
    assert NEW_KEY not in live.graphql(PARTITIONS)["assetNodeOrError"]["partitionKeys"]
    assert NEW_KEY not in exported_corpora(live)
    assert_built_from_fresh_decisions(live, deleted)
