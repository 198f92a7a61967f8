"""Ingest through Dagster on the whole real corpora, and the raw-folder sensor."""

import json
import shutil

import dagster as dg
import pytest

from sft_assets.cli import sync_partitions
from sft_assets.core.rawfiles import content_hash
from sft_assets.definitions import build_defs
from sft_assets.settings import Settings

EXPECTED_ROWS_READ = {
    "alpaca_cot": 25_970,
    "gsm8k": 7_473,
    "alpaca_en": 30_186,
    "zh_categories": 10_282,
    "hh_rlhf": 2_312,
    "alpaca_eval": 2_432,  # 18 draws among them, quarantined as preference_draw
    "self_instruct": 175,
}


@pytest.fixture(scope="module")
def corpora_run(tmp_path_factory, corpora):
    """Every file of ../shared/corpora ingested through Dagster, one run per partition."""
    data = tmp_path_factory.mktemp("data")
    defs = build_defs(Settings.under(data, raw_root=corpora))
    instance = dg.DagsterInstance.ephemeral()
    files, _ = sync_partitions(instance, defs)  # what `sft-assets run` does first, then ingest only
    job = defs.resolve_job_def("ingest_corpus")
    assert all(job.execute_in_process(partition_key=key, instance=instance).success for key in files)
    return defs, instance, defs.resources["warehouse"].warehouse()


def _metadata(instance, key, asset="raw_records"):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return records[0].asset_materialization.metadata


def test_every_file_is_a_partition_and_rows_are_conserved(corpora_run):
    defs, instance, store = corpora_run
    keys = instance.get_dynamic_partitions("corpus")
    assert len(keys) == 182  # every data file; LICENSE files are not data
    assert "zh_categories/代码问题.json" in keys and "cmmlu/dev/agronomy.csv" in keys
    per_dataset: dict[str, int] = {}
    for key in keys:
        records, quarantine = store.read("raw_records", key), store.read("quarantined_records", key)
        read = _metadata(instance, key)["rows_read"].value
        assert read == records.height + quarantine.height, key
        assert records["record_id"].n_unique() == records.height, key
        assert quarantine["reason"].null_count() == 0
        dataset = key.split("/")[0]
        per_dataset[dataset] = per_dataset.get(dataset, 0) + read
    for dataset, expected in EXPECTED_ROWS_READ.items():
        assert per_dataset[dataset] == expected, dataset


def test_cmmlu_subjects_and_truncated_file(corpora_run):
    _, instance, store = corpora_run
    agronomy = store.read("raw_records", "cmmlu/test/agronomy.csv")
    assert set(agronomy["kind"]) == {"multiple_choice"}
    assert set(agronomy["category"]) == {"agronomy"}
    assert agronomy["options"].list.len().min() == 4
    damaged = "alpaca_zh/alpaca_data-9407-12345.json"
    records = store.read("raw_records", damaged)
    assert records.height + store.read("quarantined_records", damaged).height == 2_801
    assert "trailing comma" in _metadata(instance, damaged)["notes"].value


def test_catalog_has_a_view_per_asset(corpora_run):
    import duckdb

    defs, _, _ = corpora_run
    con = duckdb.connect(defs.resources["warehouse"].catalog_path, read_only=True)
    kinds = dict(con.execute("SELECT kind, count(*) FROM raw_records GROUP BY kind").fetchall())
    # HH-RLHF's 2,312 pairs and alpaca_eval's 2,432 judged pairs less its 18 draws
    assert kinds["preference"] == 2_312 + 2_414 and kinds["multiple_choice"] > 11_000
    reasons = dict(con.execute("SELECT reason, count(*) FROM quarantined_records GROUP BY reason").fetchall())
    assert reasons["duplicate_in_file"] > 1_000 and reasons["preference_draw"] == 18


def _tick(sensor, instance, cursor, resources):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def test_sensor_follows_added_changed_and_deleted_files(tmp_path, corpora):
    raw = tmp_path / "raw"
    (raw / "nested").mkdir(parents=True)
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("raw_files_sensor")
    resources = {"raw_root": defs.resources["raw_root"], "warehouse": defs.resources["warehouse"]}
    job = defs.resolve_job_def("ingest_corpus")
    store = defs.resources["warehouse"].warehouse()

    target = raw / "nested" / "代码 问题 $(x).json"
    shutil.copy(corpora / "zh_categories" / "企业管理问题.json", target)
    first = _tick(sensor, instance, None, resources)
    key = "nested/代码 问题 $(x).json"
    assert [r.partition_key for r in first.run_requests] == [key]
    # the content hash becomes the data version of the file's raw_files partition
    assert [(e.partition, e.tags["dagster/data_version"]) for e in first.asset_events] == [(key, content_hash(target))]
    assert instance.get_dynamic_partitions("corpus") == [key]
    assert job.execute_in_process(partition_key=key, instance=instance).success
    assert store.read("raw_records", key).height == 13

    assert _tick(sensor, instance, first.cursor, resources).run_requests == []  # idempotent

    rows = json.loads(target.read_text(encoding="utf-8"))[:5]
    target.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    changed = _tick(sensor, instance, first.cursor, resources)
    assert [r.partition_key for r in changed.run_requests] == [key]
    assert [e.tags["dagster/data_version"] for e in changed.asset_events] == [content_hash(target)]
    assert job.execute_in_process(partition_key=key, instance=instance).success
    assert store.read("raw_records", key).height == 5

    target.unlink()
    deleted = _tick(sensor, instance, changed.cursor, resources)
    # a deletion leaves no event for the automation: the sensor starts the pool rebuild itself
    assert [(r.job_name, r.partition_key) for r in deleted.run_requests] == [("analyze_pool", None)]
    assert instance.get_dynamic_partitions("corpus") == []
    assert not store.exists("raw_records", key)


def test_sensor_refuses_links_outside_the_root(tmp_path, corpora):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "escape.json").symlink_to(corpora / "zh_categories" / "三国问题.json")
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    sensor = defs.resolve_sensor_def("raw_files_sensor")
    resources = {"raw_root": defs.resources["raw_root"], "warehouse": defs.resources["warehouse"]}
    result = _tick(sensor, dg.DagsterInstance.ephemeral(), None, resources)
    assert result.run_requests == []
    assert "escape.json" in defs.resources["raw_root"].scan().refused


def test_unreadable_file_fails_only_its_partition(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.jsonl").write_text('{"instruction": "Say hi", "output": "Hi"}\n', encoding="utf-8")
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", ["good.jsonl", "vanished.jsonl"])  # file gone after the scan
    job = defs.resolve_job_def("ingest_corpus")
    failed = job.execute_in_process(partition_key="vanished.jsonl", instance=instance, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "vanished.jsonl" in failure.step_failure_data.error.message
    assert job.execute_in_process(partition_key="good.jsonl", instance=instance).success
    store = defs.resources["warehouse"].warehouse()
    assert store.read("raw_records", "good.jsonl").height == 1
    assert not store.exists("raw_records", "vanished.jsonl")
