"""Every bad input of core/test_bad_inputs.py beside a slice of a real corpus, in one
raw root, ingested through the real Definitions: each run finishes, each
partition accounts for its rows, and the real slice is left exactly as it was."""

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from polars.testing import assert_frame_equal

from sft_assets.cli import sync_partitions
from sft_assets.core.rawfiles import partition_key
from sft_assets.core.readers import read_file
from sft_assets.definitions import build_defs
from sft_assets.defs.ingest import IngestConfig
from sft_assets.settings import Settings
from sft_assets_tests.core.test_bad_inputs import CAP_BYTES, CASES, GOOD, OPTIONS, _lines, write_case

REAL_SLICE = "alpaca_en/first_50.json"
ESCAPE = "escape.json"
DEFAULT_MAX_SHARE = IngestConfig().max_quarantine_share


def run_ingest(defs, instance, raw, key, max_share=None):
    """One ingest run with the suite's decompression cap (RawRoot config, as in the Launchpad)."""
    run_config = {"resources": {"raw_root": {"config": {"root": str(raw), "max_decompressed_bytes": CAP_BYTES}}}}
    if max_share is not None:
        run_config["ops"] = {"ingest": {"config": {"max_quarantine_share": max_share}}}
    return defs.resolve_job_def("ingest_corpus").execute_in_process(
        partition_key=key, instance=instance, run_config=run_config, raise_on_error=False)


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _files(store, key):
    return {table: store.path(table, key).read_bytes() for table in ("raw_records", "quarantined_records")}


@dataclass
class BadRoot:
    raw: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    partitions: list[str]  # registered from the scan
    slice_files: dict[str, bytes]  # the real slice's tables before any bad file was ingested
    results: dict[str, dg.ExecuteInProcessResult]

    @property
    def store(self):
        return self.defs.resources["warehouse"].warehouse()


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory, corpora):
    """The bad files, a real slice and a link out of the root; the slice ingested first, then every bad file."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    raw = tmp / "raw"
    for case in CASES:
        write_case(raw, case)
    rows = json.loads((corpora / "alpaca_en" / "alpaca_data-0-3252.json").read_text(encoding="utf-8"))[:50]
    (raw / REAL_SLICE).parent.mkdir(parents=True)
    (raw / REAL_SLICE).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (tmp / "secret.json").write_text(json.dumps([GOOD]), encoding="utf-8")
    (raw / ESCAPE).symlink_to(tmp / "secret.json")

    defs = build_defs(Settings.under(tmp / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    sync_partitions(instance, defs)
    partitions = sorted(instance.get_dynamic_partitions("corpus"))
    assert run_ingest(defs, instance, raw, REAL_SLICE).success
    slice_files = _files(defs.resources["warehouse"].warehouse(), REAL_SLICE)
    results = {case.name: run_ingest(defs, instance, raw, partition_key(case.name)) for case in CASES}
    return BadRoot(raw, defs, instance, partitions, slice_files, results)


def test_only_the_link_out_of_the_root_is_left_out(bad_root):
    assert bad_root.partitions == sorted([REAL_SLICE, *(c.name for c in CASES)])


@pytest.mark.parametrize("case", CASES, ids=[c.name.split("/")[0] for c in CASES])
def test_every_bad_file_finishes_and_accounts_for_its_rows(bad_root, case):
    store, result = bad_root.store, bad_root.results[case.name]
    assert result.success
    checks = checks_of(result)
    assert checks["rows_conserved"].passed and checks["record_id_unique"].passed
    counts = checks["rows_conserved"].metadata
    records, quarantine = store.read("raw_records", case.name), store.read("quarantined_records", case.name)
    assert counts["rows_read"].value == records.height + quarantine.height
    assert records.height == case.normalized and set(quarantine["reason"]) == case.reasons
    assert (quarantine["reason"].str.len_chars() > 0).all() and quarantine["reason"].null_count() == 0
    share = checks["quarantine_share"]
    assert share.severity == dg.AssetCheckSeverity.WARN
    assert share.passed == (quarantine.height <= DEFAULT_MAX_SHARE * counts["rows_read"].value)


def test_the_real_slice_is_untouched(bad_root):
    store = bad_root.store
    assert _files(store, REAL_SLICE) == bad_root.slice_files  # not rewritten by any other partition's run
    alone = read_file(bad_root.raw / REAL_SLICE, REAL_SLICE, OPTIONS)
    assert_frame_equal(store.read("raw_records", REAL_SLICE), alone.records)
    assert alone.records.height == 50 and store.read("quarantined_records", REAL_SLICE).height == 0


def test_catalog_answers_over_all_partitions(bad_root):
    con = duckdb.connect(bad_root.defs.resources["warehouse"].catalog_path, read_only=True)
    records = dict(con.execute("SELECT corpus, count(*) FROM raw_records GROUP BY 1").fetchall())
    assert records == {REAL_SLICE: 50, **{c.name: c.normalized for c in CASES if c.normalized}}
    reasons = {r for (r,) in con.execute("SELECT DISTINCT reason FROM quarantined_records").fetchall()}
    assert reasons == set().union(*(c.reasons for c in CASES))


def test_a_link_registered_by_hand_is_refused_at_read_time(tmp_path):
    """A partition key that names a link out of the root (added before the link changed, or by hand)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (tmp_path / "secret.json").write_text(json.dumps([GOOD]), encoding="utf-8")
    (raw / ESCAPE).symlink_to(tmp_path / "secret.json")
    defs, instance = build_defs(Settings.under(tmp_path / "data", raw_root=raw)), dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", [ESCAPE])
    result = run_ingest(defs, instance, raw, ESCAPE)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "outside the raw root" in failure.step_failure_data.error.message
    store = defs.resources["warehouse"].warehouse()
    assert not store.exists("raw_records", ESCAPE) and not store.exists("quarantined_records", ESCAPE)


def test_quarantine_share_threshold_is_run_config(tmp_path):
    """Two of three rows bad: warns at the default threshold (0.2), passes at 0.7, never blocks the run."""
    raw, key = tmp_path / "raw", "mostly_bad.jsonl"
    raw.mkdir()
    (raw / key).write_text('{"output": "orphan"}\n[1]\n' + json.dumps(GOOD) + "\n", encoding="utf-8")
    defs, instance = build_defs(Settings.under(tmp_path / "data", raw_root=raw)), dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", [key])
    warned = run_ingest(defs, instance, raw, key)
    assert warned.success
    share = checks_of(warned)["quarantine_share"]
    assert not share.passed and share.severity == dg.AssetCheckSeverity.WARN
    assert share.metadata["share"].value == pytest.approx(2 / 3) and share.metadata["threshold"].value == DEFAULT_MAX_SHARE
    relaxed = checks_of(run_ingest(defs, instance, raw, key, max_share=0.7))["quarantine_share"]
    assert relaxed.passed and relaxed.metadata["threshold"].value == 0.7


def test_a_reader_that_skips_a_unit_fails_rows_conserved(tmp_path, monkeypatch):
    """The check counts the file's units apart from the reader: a silently skipped one blocks the partition."""
    from sft_assets.core import readers
    from sft_assets_tests.core.test_readers import _skipping

    raw, key = tmp_path / "raw", "three.jsonl"
    raw.mkdir()
    (raw / key).write_bytes(_lines(GOOD, GOOD | {"output": "11"}, GOOD | {"output": "13"}))
    defs, instance = build_defs(Settings.under(tmp_path / "data", raw_root=raw)), dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", [key])
    assert checks_of(run_ingest(defs, instance, raw, key))["rows_conserved"].passed
    monkeypatch.setattr(readers, "_units", _skipping(readers._units))
    result = run_ingest(defs, instance, raw, key)
    check = checks_of(result)["rows_conserved"]
    assert not check.passed and not result.success
    assert check.metadata["source_units"].value == 3 and check.metadata["units_without_a_row"].value == 1
    assert check.metadata["rows_read"].value == 2 and check.metadata["first_unaccounted"].value == "1"


def test_a_column_mapping_in_the_raw_root_config_reads_a_foreign_schema(tmp_path):
    """A folder of files with their own field names: quarantined with the names seen, then read once the
    Launchpad's raw_root config maps them."""
    raw, key = tmp_path / "raw", "vendor/qa.jsonl"
    (raw / "vendor").mkdir(parents=True)
    (raw / key).write_bytes(_lines({"q": "Name a prime.", "a": "7"}, {"q": "2 + 2?", "a": "4"}))
    defs, instance = build_defs(Settings.under(tmp_path / "data", raw_root=raw)), dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", [key])
    store = defs.resources["warehouse"].warehouse()
    assert run_ingest(defs, instance, raw, key).success
    assert store.read("quarantined_records", key)["reason"].to_list() == ["missing_field:instruction (seen: a, q)"] * 2
    config = {"root": str(raw), "column_mapping": {"vendor/*": {"q": "instruction", "a": "output"}}}
    assert defs.resolve_job_def("ingest_corpus").execute_in_process(
        partition_key=key, instance=instance, run_config={"resources": {"raw_root": {"config": config}}}).success
    assert store.read("raw_records", key)["output"].to_list() == ["7", "4"]
    assert store.read("quarantined_records", key).height == 0
