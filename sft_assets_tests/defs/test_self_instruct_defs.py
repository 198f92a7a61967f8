"""A Self-Instruct round through Dagster on real seeds and a real pool file, then ingested by the sensor as a corpus."""

import json
import shutil

import dagster as dg
import polars as pl
import pytest

from sft_assets.core.rawfiles import relpath_of
from sft_assets.definitions import build_defs
from sft_assets.defs import ingest, self_instruct
from sft_assets.settings import Settings
from sft_assets_tests.core.test_self_instruct import one_torch_thread  # noqa: F401 (a fixture)
from sft_assets_tests.defs.test_ingest import _tick

POOL_FILE = "alpaca_en/alpaca_data-0-3252.json"
ROUND_FILE = "generated/self_instruct-round-1.jsonl"
RESOURCES = ("io_manager", "raw_root", "curated_root", "language_model", "embedding_model")


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory, corpora):
    """A raw root holding one real Alpaca file, ingested; the Self-Instruct seeds as the curated root."""
    tmp = tmp_path_factory.mktemp("self_instruct")
    (tmp / "raw" / "alpaca_en").mkdir(parents=True)
    shutil.copy(corpora / POOL_FILE, tmp / "raw" / POOL_FILE)
    defs = build_defs(Settings.from_env({"SFT_ASSETS_DATA": str(tmp / "data"), "SFT_ASSETS_RAW_ROOT": str(tmp / "raw"),
                                         "SFT_ASSETS_CURATED_ROOT": str(corpora / "self_instruct")}))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", [POOL_FILE])
    assert defs.resolve_job_def("ingest_corpus").execute_in_process(partition_key=POOL_FILE, instance=instance).success
    return tmp, defs, instance


def test_pool_leaves_out_the_rounds_own_file(pool_run):
    _, defs, _ = pool_run
    records = defs.resources["warehouse"].warehouse().read("raw_records", POOL_FILE)
    own = records.head(5).with_columns(corpus=pl.lit(ROUND_FILE))
    pool = self_instruct.pool_instructions(pl.concat([records, own]), ROUND_FILE)
    assert pool.height == records["instruction"].n_unique() and ROUND_FILE not in pool["corpus"]
    assert pool["origin"][0] == f"{POOL_FILE}#0"
    assert self_instruct.pool_instructions(pl.DataFrame(), ROUND_FILE).is_empty()  # no partition yet


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_round_is_written_as_a_raw_file_and_ingested_as_a_corpus_with_lineage(pool_run):
    tmp, defs, instance = pool_run
    sensor = defs.resolve_sensor_def("raw_files_sensor")
    sensor_resources = {"raw_root": defs.resources["raw_root"], "warehouse": defs.resources["warehouse"]}
    before = _tick(sensor, instance, None, sensor_resources)
    assert before.run_requests == []  # the pool file is registered and ingested already

    instance.add_dynamic_partitions(self_instruct.round_partitions.name, ["1"])
    config = {"count": 6, "max_new_tokens": 64, "few_shot_tasks": 4, "few_shot_examples": 1}
    result = dg.materialize(
        [*ingest.assets, *self_instruct.assets], selection=self_instruct.assets, partition_key="1", instance=instance,
        resources={name: defs.resources[name] for name in RESOURCES},
        run_config={"ops": {"generated_instructions": {"config": config}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("generated_instructions")[0].metadata
    rows = defs.resources["warehouse"].warehouse().read("generated_instructions", "1")
    kept = rows.filter(pl.col("kept"))
    assert rows.height == 6 and meta["kept"].value == kept.height >= 1
    assert meta["kept"].value + meta["dropped"].value == 6
    assert rows.filter(~pl.col("kept"))["reason"].null_count() == 0
    assert "| outcome | rows |" in meta["outcomes"].value and meta["tokens_per_s"].value > 0
    assert meta["seed_tasks"].value == 175 and meta["pool_instructions"].value > 3000
    assert set(rows["run_id"]) == {result.run_id}

    path = tmp / "raw" / ROUND_FILE
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["instruction"] for line in lines] == kept["instruction"].to_list()
    assert {line["generation_run_id"] for line in lines} == {result.run_id}

    after = _tick(sensor, instance, before.cursor, sensor_resources)
    assert [relpath_of(r.partition_key) for r in after.run_requests] == [ROUND_FILE]
    assert ROUND_FILE in instance.get_dynamic_partitions("corpus")
    assert defs.resolve_job_def("ingest_corpus").execute_in_process(partition_key=ROUND_FILE, instance=instance).success
    corpus = defs.resources["warehouse"].warehouse().read("raw_records", ROUND_FILE)
    assert set(corpus["kind"]) == {"sft"} and corpus.height == kept.height
    lineage = corpus.join(rows, on=["corpus", "source_row"], suffix="_generated")
    assert lineage["record_id"].to_list() == lineage["record_id_generated"].to_list() == kept["record_id"].to_list()
    assert lineage["instruction_prompt"].str.starts_with("Come up with a series of tasks").all()
