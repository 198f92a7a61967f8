"""The whole graph on the bundled sample, as `make run` builds it: from raw files to exports."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sft_assets.cli import run_all
from sft_assets.core.exports import validate_exports
from sft_assets.core.storage import Warehouse
from sft_assets.definitions import build_defs
from sft_assets.defs.uncertainty import partitions_missing_scores
from sft_assets.sample import write_sample
from sft_assets.settings import Settings
from sft_assets_tests.conftest import REPO


def _build(data: Path, cache: Path):
    """Build everything on a fresh sample; model scores may come from ``cache`` (keyed by model and record)."""
    write_sample(data)
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(data), "SFT_ASSETS_CACHE": str(cache)}))
    instance = dg.DagsterInstance.ephemeral()
    assert run_all(defs=defs, instance=instance) == 0
    return defs, instance


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, sample_cache):
    data = tmp_path_factory.mktemp("sample")
    defs, instance = _build(data, sample_cache)
    return data, defs, instance


def test_exports_are_written_and_valid(sample_run):
    data, _, _ = sample_run
    exports = data / "exports"
    assert validate_exports(exports) == []
    for name in ("sft_alpaca.json", "sft_messages.jsonl", "rm_pairs.jsonl", "ppo_prompts.jsonl",
                 "dataset_info.json", "README.md"):
        assert (exports / name).stat().st_size > 0, name


def test_cascade_scores_only_survivors(sample_run):
    data, _, _ = sample_run
    con = duckdb.connect(str(data / "catalog.duckdb"), read_only=True)
    scored_dups = con.execute("""
        SELECT count(*) FROM ppl_scores s JOIN near_duplicates n USING (record_id)
        WHERE n.near_duplicate_of IS NOT NULL""").fetchone()[0]
    assert scored_dups == 0
    scored_rule_failures = con.execute("""
        SELECT count(*) FROM ppl_scores s JOIN quality_labels q USING (record_id)
        WHERE len(q.quality_reasons) > 0""").fetchone()[0]
    assert scored_rule_failures == 0
    # perplexity, the costliest signal, comes last: only rows K-Center picked are scored
    outside_subset = con.execute("""
        SELECT count(*) FROM ppl_scores s ANTI JOIN diverse_subset d USING (record_id)""").fetchone()[0]
    assert outside_subset == 0
    # the quality model too scores only the subset's answers; its cheap rules judge every SFT row
    labels = con.execute("""
        SELECT count(*), count(quality_score), count(*) FILTER (WHERE len(quality_reasons) > 0),
               count(quality_score) FILTER (WHERE record_id NOT IN (SELECT record_id FROM diverse_subset))
        FROM quality_labels""").fetchone()
    sft_rows = con.execute("SELECT count(*) FROM raw_records WHERE kind = 'sft'").fetchone()[0]
    assert labels[0] == sft_rows and 0 < labels[1] < sft_rows and labels[2] >= 1 and labels[3] == 0
    statuses = dict(con.execute("SELECT status, count(*) FROM ppl_scores GROUP BY 1").fetchall())
    assert statuses == {"ok": statuses["ok"]} and statuses["ok"] > 30
    # the sample's one empty answer stops at the quality rules, before the language model
    why = con.execute("""
        SELECT d.reasons FROM selection_decisions d JOIN candidate_pool p USING (record_id)
        WHERE p.instruction = 'Name a primary color.'""").fetchone()[0]
    assert why[0] == "failed_quality:empty_output"
    mass = con.execute("SELECT min(option_mass), max(option_mass) FROM option_probabilities").fetchone()
    assert 0.0 <= mass[0] <= mass[1] <= 1.0


def test_every_pool_row_has_a_decision_and_a_why(sample_run):
    data, defs, _ = sample_run
    con = duckdb.connect(str(data / "catalog.duckdb"), read_only=True)
    pool = con.execute("SELECT count(*) FROM candidate_pool").fetchone()[0]
    kept, dropped = con.execute(
        "SELECT count(*) FILTER (kept), count(*) FILTER (NOT kept) FROM selection_decisions").fetchone()
    assert kept + dropped == pool and kept > 0 and dropped > 0
    # the re-cased, re-punctuated copy of a sample row is an exact duplicate of the original
    why = con.execute("""
        SELECT d.reasons FROM selection_decisions d JOIN candidate_pool p USING (record_id)
        WHERE p.instruction = 'what is the capital of france'""").fetchone()[0]
    assert why[0].startswith("exact_duplicate_of:")
    lineage = con.execute("SELECT count(*) FROM sft_dataset WHERE source IS NULL OR source_row IS NULL").fetchone()
    assert lineage[0] == 0


def assert_same_results(first: Path, second: Path) -> None:
    """Byte-identical exports and the same selection decisions, row for row."""
    names = sorted(p.name for p in (first / "exports").iterdir())
    assert names == sorted(p.name for p in (second / "exports").iterdir())
    for name in names:
        assert (first / "exports" / name).read_bytes() == (second / "exports" / name).read_bytes(), name
    decisions = [Warehouse(data / "warehouse").read("selection_decisions") for data in (first, second)]
    assert_frame_equal(*decisions)


def test_rebuild_from_scratch_is_byte_identical(sample_run, sample_cache, tmp_path):
    first, _, _ = sample_run
    second = tmp_path / "again"
    _build(second, sample_cache)
    assert_same_results(first, second)


def test_blocking_checks_catch_planted_violations(sample_run):
    from sft_assets.core.datasets import rm_problems, sft_problems

    _, defs, _ = sample_run
    store = defs.resources["warehouse"].warehouse()
    sft, near, rm = store.read("sft_dataset"), store.read("near_duplicates"), store.read("rm_dataset")
    assert sft_problems(sft, near) == [] and rm_problems(rm) == []
    assert rm["quality_margin"].null_count() == 0

    assert "more than once" in sft_problems(pl.concat([sft, sft.head(1)]), near)[0]
    orphan = sft.with_columns(source=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise("source"))
    assert "trace to a source" in sft_problems(orphan, near)[0]
    copy = near.filter(pl.col("near_duplicate_of").is_in(sft["record_id"].implode())).head(1)
    planted = pl.concat([sft, sft.head(1).with_columns(record_id=copy["record_id"])])
    assert any("near-duplicate pairs" in p for p in sft_problems(planted, near))
    same = rm.head(1).with_columns(rejected=pl.col("chosen"))
    assert "invalid pairs" in rm_problems(pl.concat([rm, same]))[0]


def test_second_run_rebuilds_only_what_a_new_file_needs(sample_run, sample_cache, read_corpus, tmp_path):
    import json

    data = tmp_path / "incremental"  # sample_run has filled sample_cache: only the new file needs scores
    defs, instance = _build(data, sample_cache)

    def partitions_run(job: str) -> list[str]:
        return sorted(r.tags["dagster/partition"] for r in instance.get_runs(dg.RunsFilter(job_name=job)))

    before = {job: partitions_run(job) for job in ("update_corpus", "score_corpus")}
    assert run_all(defs=defs, instance=instance) == 0  # nothing changed: no per-file run
    assert {job: partitions_run(job) for job in before} == before

    rows = read_corpus("alpaca_en/alpaca_data-3252-6382.json").records.head(30)
    new = data / "raw" / "new chunk.json"
    new.write_text(json.dumps(rows.select("instruction", "input", "output").to_dicts()), encoding="utf-8")
    assert run_all(defs=defs, instance=instance) == 0
    added = {job: sorted(set(partitions_run(job)) - set(before[job])) for job in before}
    assert added["update_corpus"] == ["new chunk.json"]
    assert "new chunk.json" in added["score_corpus"]
    con = duckdb.connect(str(data / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM candidate_pool WHERE corpus = 'new chunk.json'").fetchone()[0] == 30
    # every row the cascade sends to the language model has its score, old partitions included
    assert partitions_missing_scores(defs.resources["warehouse"].warehouse(), partitions_run("update_corpus")) == []


KILLED_PARTITION = "zh/中文指令.json"  # sorts last: the run has scored every other file when it gets there
RUN_ALL = [sys.executable, "-c", "from sft_assets.cli import run_all; raise SystemExit(run_all())"]  # `make run`


def _cache_without_perplexities(source: Path, target: Path, record_ids: list[str]) -> None:
    """A copy of ``source``'s cache minus the perplexities of ``record_ids``: the run has scoring to do there."""
    shutil.copytree(source, target)
    cache = Warehouse(target)
    for namespace in (name for name, _ in cache.assets() if name.startswith("ppl-")):
        for shard in cache.partitions(namespace):
            rows = cache.read(namespace, shard)
            kept = rows.filter(~pl.col("record_id").is_in(record_ids))
            if kept.height == 0:
                cache.delete(namespace, shard)
            elif kept.height < rows.height:
                cache.write(kept, namespace, shard)


def _ppl_step_started(instance: dg.DagsterInstance, partition: str) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name="score_corpus", tags={"dagster/partition": partition}))
    return any(event.step_key == "ppl_scores" for run in runs
               for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))


@pytest.mark.slow
def test_killed_mid_scoring_resumes_to_the_same_results(sample_run, sample_cache, tmp_path, monkeypatch):
    """`sft-assets run` in a process of its own, SIGKILLed inside ppl_scores, then run again: the
    same exports and decisions as the uninterrupted run, and no cache ever holds a partial row.
    The cache starts warm except for the perplexities of one file, so the run has real scoring to
    be killed in and the test stays short."""
    reference, _, _ = sample_run
    data, home = tmp_path / "data", tmp_path / "data" / "home"
    write_sample(data)
    killed_ids = Warehouse(reference / "warehouse").read("ppl_scores", KILLED_PARTITION)["record_id"].to_list()
    assert killed_ids
    _cache_without_perplexities(sample_cache, data / "cache", killed_ids)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SFT_ASSETS_")},
           "SFT_ASSETS_DATA": str(data), "DAGSTER_HOME": str(home)}

    log_path, store = tmp_path / "run.log", Warehouse(data / "warehouse")
    with open(log_path, "wb") as log:
        run = subprocess.Popen(RUN_ALL, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 300
            # The file's quality labels come just before its perplexities. Only then is the run's instance
            # read from here: opening it while the run creates it would race on the schema.
            while not store.exists("quality_labels", KILLED_PARTITION):
                assert run.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            monkeypatch.setenv("DAGSTER_HOME", str(home))
            instance = dg.DagsterInstance.get()
            while not _ppl_step_started(instance, KILLED_PARTITION):
                assert run.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            time.sleep(2)  # inside the step: the model loading or scoring the file's rows
        finally:
            run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
        instance.dispose()

    assert not store.exists("ppl_scores", KILLED_PARTITION)  # killed inside the step, before its output
    assert store.exists("ppl_scores", "en_instructions.json")  # files scored before it are in place
    cache = Warehouse(data / "cache")
    for namespace, _ in cache.assets():  # every shard whole and readable; none from the killed step
        shards = [cache.read(namespace, shard) for shard in cache.partitions(namespace)]
        assert all(shard.height for shard in shards)
        if namespace.startswith("ppl-"):
            assert not pl.concat(shards)["record_id"].is_in(killed_ids).any()

    with open(log_path, "ab") as log:
        resumed = subprocess.run(RUN_ALL, cwd=REPO, env=env, stdout=log, stderr=log, timeout=600)
    assert resumed.returncode == 0, log_path.read_text(errors="replace")[-3000:]
    assert_same_results(reference, data)


def test_every_column_of_every_asset_has_a_description(sample_run):
    """The UI's Columns table explains itself: each column in each materialized schema has its line."""
    _, _, instance = sample_run
    undescribed: dict[str, set[str]] = {}
    schemas = 0
    for record in instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=100_000):
        materialization = record.asset_materialization
        schema = materialization.metadata.get("dagster/column_schema")
        if schema is None:
            continue
        schemas += 1
        for column in schema.schema.columns:
            if not (column.description or "").strip():
                undescribed.setdefault(materialization.asset_key.to_user_string(), set()).add(column.name)
    assert schemas > 10
    assert undescribed == {}
