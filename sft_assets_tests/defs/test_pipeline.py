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

from sft_assets.cli import run_all, unsynced
from sft_assets.core.exports import validate_exports
from sft_assets.core.storage import Warehouse
from sft_assets.definitions import build_defs
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


def out_of_sync(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, list]:
    """Every asset (partition) Dagster marks missing or unsynced, as the UI shows them."""
    graph = defs.resolve_asset_graph()
    on_request = ("generated_instructions", "selection_report")  # never materialized by a run or automation
    keys = [k for k in graph.materializable_asset_keys if k.to_user_string() not in on_request]
    found: dict[str, list] = {}
    for partition in [None, *instance.get_dynamic_partitions("corpus")]:
        same = [k for k in keys if (graph.get(k).partitions_def is not None) == (partition is not None)]
        for key in unsynced(instance, graph, same, partition):
            found.setdefault(key.to_user_string(), []).append(partition)
    return found


def materialized_in_new_runs(instance: dg.DagsterInstance, before: set[str]) -> set[tuple[str, str | None]]:
    """(asset, partition) of every materialization by a run not in ``before`` (run ids)."""
    return {(e.asset_materialization.asset_key.to_user_string(), e.asset_materialization.partition)
            for run in instance.get_runs() if run.run_id not in before
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)}


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
    assert labels[0] == sft_rows and labels[2] >= 1 and labels[3] == 0
    # the sample's 134 SFT answers give the judge 23 held-out pairs, too few to measure it: its gate refuses it,
    # every SFT row says why, and quality is left to the rules (no score, no row dropped as missing one)
    gates = con.execute("SELECT count(quality_score), count(*) FILTER (WHERE quality_gate LIKE '%too few pairs%') "
                        "FROM quality_labels").fetchone()
    assert gates == (0, sft_rows)
    missing = con.execute("SELECT count(*) FROM selection_decisions WHERE list_contains(reasons, "
                          "'missing_signal:quality_score')").fetchone()[0]
    assert missing == 0
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


SCORES = ("quality_labels", "ppl_scores", "option_probabilities")


def test_one_step_scores_every_file_as_one_run_per_file_would(sample_run, sample_cache, tmp_path):
    """`run` scores all files in one score_corpus run (one step per asset); the tables it writes per file, and each
    file's row count on its materialization, are those of a run per file, as the UI's per-partition launch does."""
    data, _, instance = sample_run
    files = instance.get_dynamic_partitions("corpus")
    runs = instance.get_runs(dg.RunsFilter(job_name="score_corpus"))
    assert len(files) >= 5 and len(runs) == 1
    counts = {}
    for event in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = event.asset_materialization
        counts[materialization.asset_key.to_user_string(), materialization.partition] = \
            materialization.metadata["dagster/row_count"].value
    assert set(counts) == {(asset, file) for asset in SCORES for file in files}

    copy = tmp_path / "per_file"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("dagster_home"))
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(copy), "SFT_ASSETS_CACHE": str(sample_cache)}))
    one_step, per_file = Warehouse(data / "warehouse"), defs.resources["warehouse"].warehouse()
    for asset in SCORES:
        for file in files:
            assert per_file.delete(asset, file)
    fresh = dg.DagsterInstance.ephemeral()
    fresh.add_dynamic_partitions("corpus", files)
    job = defs.resolve_job_def("score_corpus")
    for file in files:
        assert job.execute_in_process(partition_key=file, instance=fresh,
                                      asset_selection=[dg.AssetKey(a) for a in SCORES]).success
    for asset in SCORES:
        for file in files:
            table = per_file.read(asset, file)
            assert_frame_equal(one_step.read(asset, file), table)
            assert counts[asset, file] == table.height
    assert sum(counts["quality_labels", file] for file in files) == \
        duckdb.connect(str(data / "catalog.duckdb"), read_only=True).execute(
            "SELECT count(*) FROM raw_records WHERE kind = 'sft'").fetchone()[0]


def test_blocking_checks_catch_planted_violations(sample_run):
    from sft_assets.core.datasets import rm_problems, sft_problems

    _, defs, _ = sample_run
    store = defs.resources["warehouse"].warehouse()
    sft, near, rm = store.read("sft_dataset"), store.read("near_duplicates"), store.read("rm_dataset")
    assert sft_problems(sft, near) == [] and rm_problems(rm) == []
    assert rm["quality_margin"].is_null().all()  # the sample's judge is refused (too few pairs): no margin

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
    assert out_of_sync(defs, instance) == {}  # what the UI shows: nothing unsynced after a run

    runs = {r.run_id for r in instance.get_runs()}
    assert run_all(defs=defs, instance=instance) == 0  # nothing changed: nothing rebuilt but the volatile root
    assert materialized_in_new_runs(instance, runs) == {("curated_reference", None)}

    rows = read_corpus("alpaca_en/alpaca_data-3252-6382.json").records.head(30)
    new = data / "raw" / "new chunk.json"
    new.write_text(json.dumps(rows.select("instruction", "input", "output").to_dicts()), encoding="utf-8")
    runs = {r.run_id for r in instance.get_runs()}
    assert run_all(defs=defs, instance=instance) == 0
    rebuilt = materialized_in_new_runs(instance, runs)
    # the new file is ingested and embedded, and no other file is
    assert {p for a, p in rebuilt if a in ("raw_records", "embeddings")} == {"new chunk.json"}
    assert {("ppl_scores", "new chunk.json"), ("selection_decisions", None), ("exports", None)} <= rebuilt
    con = duckdb.connect(str(data / "catalog.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM candidate_pool WHERE corpus = 'new chunk.json'").fetchone()[0] == 30
    # every row the cascade sends to a model has its score, old partitions included
    missing = con.execute("""
        SELECT count(*) FROM diverse_subset d JOIN candidate_pool p USING (record_id)
        LEFT JOIN ppl_scores s USING (record_id) WHERE p.kind = 'sft' AND s.record_id IS NULL
        AND record_id IN (SELECT record_id FROM quality_labels WHERE len(quality_reasons) = 0)""").fetchone()[0]
    assert missing == 0
    assert out_of_sync(defs, instance) == {}

    # a changed file: its content hash is its raw_files data version, so its records are unsynced, only its
    new.write_text(json.dumps(rows.head(20).select("instruction", "input", "output").to_dicts()), encoding="utf-8")
    runs = {r.run_id for r in instance.get_runs()}
    assert run_all(defs=defs, instance=instance) == 0
    assert {p for a, p in materialized_in_new_runs(instance, runs) if a == "raw_records"} == {"new chunk.json"}
    assert con.execute("SELECT count(*) FROM candidate_pool WHERE corpus = 'new chunk.json'").fetchone()[0] == 20
    con.close()


def test_a_retrained_quality_model_unsyncs_the_quality_labels_only_if_it_changed(sample_run, sample_cache, tmp_path,
                                                                               monkeypatch):
    """quality_model's data version is its weights (or, refused, its gate's reason): a retrain to the same result
    marks nothing unsynced; a different result marks every file's quality labels unsynced, and `run` rescores
    them. On the sample the judge is refused for too few pairs; measured on fewer pairs it is another judge."""
    data = tmp_path / "retrain"
    defs, instance = _build(data, sample_cache)
    from sft_assets.core import quality as quality_core
    from sft_assets.defs.quality import QualityModelConfig

    pool = defs.resolve_job_def("analyze_pool")
    files = instance.get_dynamic_partitions("corpus")

    def retrain(C: float) -> None:
        config = {"ops": {"quality_model": {"config": {"C": C}}}}
        assert pool.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("quality_model")],
                                       run_config=config).success

    retrain(QualityModelConfig().C)  # the default: the same result
    assert out_of_sync(defs, instance) == {}
    monkeypatch.setattr(quality_core, "MIN_MEASURED_PAIRS", 10)  # the judge is now trained and measured
    retrain(0.001)
    stale = out_of_sync(defs, instance)
    assert sorted(stale["quality_labels"]) == sorted(files) and "rm_dataset" in stale
    runs = {r.run_id for r in instance.get_runs()}
    assert run_all(defs=defs, instance=instance) == 0
    rebuilt = materialized_in_new_runs(instance, runs)
    assert {p for a, p in rebuilt if a == "quality_labels"} == set(files)
    assert ("quality_model", None) not in rebuilt  # in sync with its inputs: not retrained back
    assert out_of_sync(defs, instance) == {}


KILLED_PARTITION = "zh/中文指令.json"  # the one file whose perplexities the cache lacks
RUN_ALL = [sys.executable, "-c", "from sft_assets.cli import run_all; raise SystemExit(run_all())"]  # `make run`


def _cache_without_perplexities(source: Path, target: Path, record_ids: list[str] | None) -> None:
    """A copy of ``source``'s cache minus the perplexities of ``record_ids`` (None: all of them): the run has
    scoring to do there."""
    shutil.copytree(source, target)
    cache = Warehouse(target)
    for namespace in (name for name, _ in cache.assets() if name.startswith("ppl-")):
        for shard in cache.partitions(namespace):
            rows = cache.read(namespace, shard)
            kept = rows.head(0) if record_ids is None else rows.filter(~pl.col("record_id").is_in(record_ids))
            if kept.height == 0:
                cache.delete(namespace, shard)
            elif kept.height < rows.height:
                cache.write(kept, namespace, shard)


def _ppl_step_started(instance: dg.DagsterInstance) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name="score_corpus"))
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
            # One step writes every file's quality labels just before the perplexities. Only then is the run's
            # instance read from here: opening it while the run creates it would race on the schema.
            while not store.exists("quality_labels", KILLED_PARTITION):
                assert run.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            monkeypatch.setenv("DAGSTER_HOME", str(home))
            instance = dg.DagsterInstance.get()
            while not _ppl_step_started(instance):
                assert run.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            time.sleep(2)  # inside the step: the model loading or scoring the file's rows
        finally:
            run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
        instance.dispose()

    # killed inside the one step that scores every file, before its output; the step before it is in place
    assert not store.partitions("ppl_scores")
    assert store.partitions("quality_labels") == Warehouse(reference / "warehouse").partitions("quality_labels")
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


def test_a_file_without_its_scores_is_listed_and_its_rows_not_kept(sample_run, sample_cache, tmp_path):
    """A per-file scoring run that failed leaves no quality_labels table for that file: the IO manager skips it,
    so selection must not keep the file's rows unjudged, and its check says which file it was."""
    data, _, instance = sample_run
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(copy), "SFT_ASSETS_CACHE": str(sample_cache)}))
    store = defs.resources["warehouse"].warehouse()
    before = store.read("selection_decisions")
    kept_sft = before.filter(pl.col("kept") & (pl.col("kind") == "sft"))
    file = kept_sft.group_by("corpus").len().sort("len", descending=True)["corpus"][0]
    assert store.delete("quality_labels", file)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("selection_decisions")], raise_on_error=False)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert not checks["every_file_loaded"].passed and checks["counts_add_up"].passed
    assert checks["every_file_loaded"].metadata["not_materialized"].value == {"quality_labels": [file]}
    after = store.read("selection_decisions").join(kept_sft.filter(pl.col("corpus") == file).select("record_id"),
                                                   on="record_id", how="semi")
    assert after.height and not after["kept"].any()
    assert (after["first_reason"] == "missing_signal:quality_score").all()


def test_terminal_shows_progress_and_a_summary_not_dagster_events(sample_run, sample_cache, tmp_path):
    """`make run` as a person sees it: a progress line per phase, no Dagster DEBUG events (they go to the
    log file, whose path is printed), and the summary at the end."""
    data = tmp_path / "data"
    write_sample(data)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SFT_ASSETS_")},
           "SFT_ASSETS_DATA": str(data), "SFT_ASSETS_CACHE": str(sample_cache), "DAGSTER_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-m", "sft_assets", "run"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "DEBUG" not in out and "STEP_START" not in out and "LOADED_INPUT" not in out, out[:3000]
    for phase in ("update_corpus", "analyze_pool", "score_corpus", "select_and_export"):
        assert phase in out
    assert "files" in out and "rows/s" in out
    log = next((data / "logs").glob("run-*.log"))
    assert str(log) in out and "STEP_SUCCESS" in log.read_text(encoding="utf-8")
    summary = out[out.rindex("Summary"):].splitlines()
    assert [line.split()[0] for line in summary[1:] if line.strip()] == [
        "rows", "pool", "kept", "top", "elapsed", "exports", "event", "inspect"]
    assert "SFT" in summary[3] and "RM" in summary[3] and "PPO" in summary[3]
    assert summary[-1].strip().startswith("inspect") and "make ui" in summary[-1]


def test_a_failed_file_stops_the_run_before_selection(sample_cache, tmp_path, monkeypatch):
    """A file whose run fails (here: a read error on one file): the other files are still ingested, then the
    run stops before anything is selected or exported, naming the file, the step, why, and how to resume."""
    import io

    from rich.console import Console

    from sft_assets.core.readers import UnreadableFile
    from sft_assets.defs import ingest

    def failing_read(path, relpath, options):
        if relpath == "broken.json":
            raise UnreadableFile(f"cannot read {path}: Input/output error")
        return read_file(path, relpath, options)

    read_file = ingest.read_file
    monkeypatch.setattr(ingest, "read_file", failing_read)
    data = tmp_path / "data"
    write_sample(data)
    (data / "raw" / "broken.json").write_text("[]", encoding="utf-8")
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(data), "SFT_ASSETS_CACHE": str(sample_cache)}))
    instance = dg.DagsterInstance.ephemeral()
    screen = io.StringIO()
    assert run_all(defs=defs, instance=instance, console=Console(file=screen, soft_wrap=True)) == 1
    out = screen.getvalue()
    assert "FAILED update_corpus: file 'broken.json', step ingest: broken.json: cannot read" in out, out
    assert "Input/output error" in out and "Stopped after update_corpus" in out and "make run" in out
    store = defs.resources["warehouse"].warehouse()
    assert store.exists("raw_records", "en_instructions.json")  # the other files are done
    assert not store.exists("candidate_pool") and not store.exists("selection_decisions")
    assert not (data / "exports").exists()


def test_a_failed_scoring_step_names_its_files_and_stops_before_selection(sample_run, sample_cache, tmp_path,
                                                                          monkeypatch):
    """One step scores every file: when the language model fails on a chunk of rows, the run stops before
    selection, naming the phase, the step, the files of the failed chunk and the error; the files' quality
    labels, the step before, are in place. The cache has every other score (sample_run): only perplexity runs."""
    import io

    from rich.console import Console

    from sft_assets.defs import uncertainty
    from sft_assets.defs.models import LanguageModel

    def out_of_memory(*args, **kwargs):
        raise MemoryError("the language model ran out of memory")

    data, cache = tmp_path / "data", tmp_path / "cache"
    _cache_without_perplexities(sample_cache, cache, None)
    monkeypatch.setattr(uncertainty, "answer_perplexity", out_of_memory)
    monkeypatch.setattr(LanguageModel, "load", lambda self: None)
    write_sample(data)
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(data), "SFT_ASSETS_CACHE": str(cache)}))
    screen = io.StringIO()
    assert run_all(defs=defs, instance=dg.DagsterInstance.ephemeral(),
                   console=Console(file=screen, soft_wrap=True, width=400)) == 1
    out = screen.getvalue()
    files = sorted(p.relative_to(data / "raw").as_posix() for p in (data / "raw").rglob("*") if p.is_file())
    assert f"FAILED score_corpus: {len(files)} files in one step, " in out, out
    assert "step ppl_scores: RuntimeError: scoring " in out and " rows of " in out and "ran out of memory" in out, out
    assert "Stopped after score_corpus" in out and "make run" in out
    store = defs.resources["warehouse"].warehouse()
    assert store.partitions("quality_labels") == files and not store.partitions("ppl_scores")
    assert not store.exists("selection_decisions") and not (data / "exports").exists()


def test_a_step_over_every_file_shows_its_rows_on_the_progress_line(sample_run, sample_cache, tmp_path):
    """score_corpus's bar moves once per run, so the step reports the rows it has scored to the progress line
    (here the sample's perplexities, the one score the cache lacks, with the real language model)."""
    import io
    import re

    from rich.console import Console

    reference, _, _ = sample_run
    data, cache = tmp_path / "data", tmp_path / "cache"
    _cache_without_perplexities(sample_cache, cache, None)
    write_sample(data)
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(data), "SFT_ASSETS_CACHE": str(cache)}))
    screen = io.StringIO()
    assert run_all(defs=defs, instance=dg.DagsterInstance.ephemeral(),
                   console=Console(file=screen, soft_wrap=True, width=400)) == 0
    scored = Warehouse(reference / "warehouse").read_partitions("ppl_scores")["record_id"].n_unique()
    line = next(line for line in screen.getvalue().splitlines() if line.startswith("score_corpus"))
    assert re.search(rf"ppl_scores: {scored}/{scored} rows scored", line), line


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
