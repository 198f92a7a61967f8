"""Near dedup on real Chinese rows: the English MiniLM cannot tell them apart, so `auto` uses TF-IDF there."""

import json

import polars as pl
import pytest

from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.records import embedding_texts
from sft_assets.core.vectors import EmbeddingVectors
from sft_assets.defs.diversity import NearDedupConfig, near_duplicates
from sft_assets.defs.resources import WarehouseResource


@pytest.fixture(scope="module")
def zh_pool(read_corpus):
    records = read_corpus("alpaca_zh/alpaca_data-0-3252.json").records.filter(pl.col("lang") == "zh").head(400)
    pool = records.with_columns(text=pl.Series(embedding_texts(records)),
                                exact_duplicate_of=pl.lit(None, dtype=pl.String))
    vectors = embed_texts(load_sentence_model("default", "cpu"), pool["text"].to_list())
    return pool, EmbeddingVectors((pool["record_id"],), (vectors,))


def _near(config, pool, embeddings, warehouse):
    result = near_duplicates(config, candidate_pool=pool, embeddings=embeddings, warehouse=warehouse)
    return result.value, result.metadata["reused"].value


def _rate(config, pool, embeddings, tmp_path) -> float:
    warehouse = WarehouseResource(base_uri=str(tmp_path / "warehouse"), catalog_path=str(tmp_path / "catalog.duckdb"))
    return _near(config, pool, embeddings, warehouse)[0]["near_duplicate_of"].is_not_null().mean()


def test_auto_reads_chinese_by_characters(zh_pool, tmp_path):
    pool, embeddings = zh_pool
    assert set(pool["lang"]) == {"zh"}
    by_minilm = _rate(NearDedupConfig(method="embedding"), pool, embeddings, tmp_path)
    by_auto = _rate(NearDedupConfig(), pool, embeddings, tmp_path)
    assert by_minilm > 0.05  # unrelated Chinese instructions collapse in MiniLM's space (36% on all alpaca_zh)
    assert by_auto < by_minilm / 5


def test_tfidf_clusters_are_reused_only_for_the_same_texts_and_rule(zh_pool, tmp_path):
    """A new English file leaves the Chinese rows as they were: their TF-IDF clusters are read back, not
    recomputed. Other rows, another order or another threshold cluster anew."""
    pool, embeddings = zh_pool
    warehouse = WarehouseResource(base_uri=str(tmp_path / "warehouse"), catalog_path=str(tmp_path / "catalog.duckdb"))
    store = warehouse.warehouse()
    config = NearDedupConfig(threshold=0.3)  # low enough that these 400 rows have clusters to reuse
    first, reused = _near(config, pool, embeddings, warehouse)
    assert reused.startswith("nothing") and first["near_duplicate_of"].is_not_null().sum() > 5
    store.write(first, "near_duplicates")
    again, reused = _near(config, pool, embeddings, warehouse)
    assert reused == "tfidf" and again.equals(first)

    # the earlier table is really what is read: a planted pointer comes back
    planted = first.with_columns(similarity=pl.when(pl.int_range(pl.len()) == 0).then(0.25).otherwise("similarity"))
    store.write(planted, "near_duplicates")
    assert _near(config, pool, embeddings, warehouse)[0]["similarity"][0] == 0.25

    for changed, rows in ((NearDedupConfig(threshold=0.35), pool), (config, pool.reverse()), (config, pool.slice(1)),
                          (config, pool.with_columns(text=pl.col("text") + "!"))):
        fresh, _ = _near(changed, rows, embeddings, WarehouseResource(
            base_uri=str(tmp_path / "fresh"), catalog_path=str(tmp_path / "fresh.duckdb")))
        store.write(first, "near_duplicates")
        recomputed, reused = _near(changed, rows, embeddings, warehouse)
        assert reused.startswith("nothing") and recomputed.equals(fresh)


def test_auto_keeps_languages_apart():
    split = NearDedupConfig().methods(pl.Series(["en", "zh", "other", "zh"]))
    assert split["tfidf"].tolist() == [1, 3] and split["embedding"].tolist() == [0, 2]


def test_embeddings_of_an_empty_partition_and_of_text_past_the_model_limit(tmp_path):
    import dagster as dg

    from sft_assets.definitions import build_defs
    from sft_assets.settings import Settings

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.json").write_text("", encoding="utf-8")
    (raw / "long.jsonl").write_text('{"instruction": "%s", "output": "ok"}\n' % ("word " * 600), encoding="utf-8")
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus", ["empty.json", "long.jsonl"])
    for key, rows, truncated in (("empty.json", 0, 0), ("long.jsonl", 1, 1)):
        assert defs.resolve_job_def("update_corpus").execute_in_process(partition_key=key, instance=instance).success
        meta = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("embeddings"), asset_partitions=[key]), limit=1
        ).records[0].asset_materialization.metadata
        assert meta["dagster/row_count"].value == rows and meta["truncated_rows"].value == truncated


def test_pool_steps_gather_embeddings_from_memory_mapped_npy(tmp_path, corpora):
    """update_corpus writes each file's vectors as .npy beside its parquet; pool-wide steps get them memory-mapped.
    The curated set lies inside the raw root, as in the README's example: its rows are no candidates."""
    import dataclasses
    import shutil

    import dagster as dg
    import numpy as np

    from sft_assets.core.embedding_cache import vectors_of
    from sft_assets.definitions import build_defs
    from sft_assets.defs import diversity, ingest, novelty
    from sft_assets.defs.partitions import corpus_partitions
    from sft_assets.settings import Settings

    files = sorted(["self_instruct/seed_tasks.jsonl", "cmmlu/dev/agronomy.csv", "alpaca_en/alpaca_data-0-3252.json"])
    raw = tmp_path / "raw"
    for relpath in files:
        (raw / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpora / relpath, raw / relpath)
    (raw / "alpaca_en/alpaca_data-0-3252.json").write_text(
        json.dumps(json.loads((corpora / "alpaca_en/alpaca_data-0-3252.json").read_text(encoding="utf-8"))[:40]),
        encoding="utf-8")
    settings = dataclasses.replace(Settings.under(tmp_path / "data", raw_root=raw), curated_root=str(raw / "self_instruct"))
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(corpus_partitions.name, files)
    for key in files:
        assert defs.resolve_job_def("update_corpus").execute_in_process(partition_key=key, instance=instance).success
    store = defs.resources["warehouse"].warehouse()
    for key in files:
        assert np.array_equal(store.read_vectors("embeddings", key), vectors_of(store.read("embeddings", key)))

    context = dg.build_input_context(asset_key="embeddings", asset_partitions_def=corpus_partitions, instance=instance,
                                     asset_partition_key_range=dg.PartitionKeyRange(files[0], files[-1]))
    loaded = defs.resources["embeddings_io_manager"].load_input(context)
    assert [type(m) for m in loaded.matrices] == [np.memmap] * len(files)
    result = dg.materialize([*ingest.assets, *diversity.assets, *novelty.assets],
                            selection=[novelty.curated_reference, diversity.candidate_pool, diversity.topic_clusters],
                            resources=defs.resources, instance=instance)
    pool = result.output_for_node("candidate_pool")
    assert result.success and result.output_for_node("topic_clusters")["record_id"].equals(pool["record_id"])
    seeds = store.read("raw_records", "self_instruct/seed_tasks.jsonl")
    assert seeds.height == 175 and store.read("curated_reference")["record_id"].sort().equals(seeds["record_id"].sort())
    assert set(pool["corpus"]) == {"cmmlu/dev/agronomy.csv", "alpaca_en/alpaca_data-0-3252.json"}
    assert pool.height == 5 + 40
    assert result.asset_materializations_for_node("candidate_pool")[0].metadata["in_curated_reference"].value == 175


def test_diverse_subset_extends_the_previous_one_when_a_file_is_added(tmp_path, read_corpus):
    """120 alpaca_en rows, then 40 gsm8k word problems as a new file: the old rows keep their topics, the
    subset keeps its picks and adds some of the new file's rows; `keep_previous_picks=False` or another
    embedding model starts from scratch, and topics are fitted anew once the pool outgrows `refit_growth`."""
    import dagster as dg

    from sft_assets.definitions import build_defs
    from sft_assets.defs import diversity, ingest, novelty
    from sft_assets.defs.diversity import DiverseSubsetConfig, TopicConfig
    from sft_assets.defs.models import EmbeddingModel
    from sft_assets.defs.partitions import corpus_partitions
    from sft_assets.settings import Settings

    raw = tmp_path / "raw"
    raw.mkdir()
    files = {"alpaca_en.json": read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(120),
             "gsm8k.json": read_corpus("gsm8k/gsm8k_train.tsv").records.head(40)}
    for name, rows in files.items():
        rows = rows.select("instruction", pl.col("input").fill_null(""), "output")
        (raw / name).write_text(json.dumps(rows.to_dicts()), encoding="utf-8")
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    store = defs.resources["warehouse"].warehouse()

    topic_runs = []

    def rebuild(new_file: str | None = None, resources=defs.resources, topics: TopicConfig = TopicConfig(),
                **config) -> dict:
        if new_file:
            instance.add_dynamic_partitions(corpus_partitions.name, [new_file])
            assert defs.resolve_job_def("update_corpus").execute_in_process(
                partition_key=new_file, instance=instance).success
        result = dg.materialize(
            [*ingest.assets, *diversity.assets, *novelty.assets], resources=resources, instance=instance,
            selection=[novelty.curated_reference, diversity.candidate_pool, diversity.near_duplicates,
                       diversity.topic_clusters, novelty.novelty_scores, diversity.diverse_subset],
            run_config=dg.RunConfig({"diverse_subset": DiverseSubsetConfig(**config), "topic_clusters": topics}))
        assert result.success
        topic_runs.append(result.asset_materializations_for_node("topic_clusters")[0].metadata["clusters"].value)
        meta = result.asset_materializations_for_node("diverse_subset")[0].metadata
        return {key: value.value for key, value in meta.items()}

    first = rebuild("alpaca_en.json")
    assert (first["mode"], first["mode_reason"], first["kept_previous"]) == ("full", "no previous subset", 0)
    previous, previous_topics = store.read("diverse_subset"), store.read("topic_clusters")

    second = rebuild("gsm8k.json", topics=TopicConfig(refit_growth=0.5))  # 120 -> 160 rows without a category
    subset, topics = store.read("diverse_subset"), store.read("topic_clusters")
    assert topic_runs == ["fitted anew (k-means)", "the previous topics, new rows joined the nearest"]
    assert topics["fitted_on_rows"].unique().to_list() == [120]
    stayed = previous_topics.join(topics, on="record_id").select(pl.col("cluster_id") == pl.col("cluster_id_right"))
    assert stayed.to_series().all()  # old rows keep their topic; only new rows join the nearest
    assert second["mode"] == "extended"
    assert second["kept_previous"] == previous.height - second["dropped_previous"] > 0
    assert second["kept_previous"] == subset["record_id"].is_in(previous["record_id"].implode()).sum()
    assert second["new_picks"] == subset.height - second["kept_previous"] > 0
    new_ids = subset.filter(~pl.col("record_id").is_in(previous["record_id"].implode()))["record_id"]
    assert new_ids.is_in(files["gsm8k.json"]["record_id"].implode()).any()  # the new file adds something new
    assert subset["embedding_model"].unique().to_list() == ["default"]

    assert rebuild(keep_previous_picks=False)["mode"] == "full"
    assert topic_runs[-1] == "fitted anew (k-means)"  # 160 rows > 120 * 1.2: the default refit_growth
    assert store.read("topic_clusters")["fitted_on_rows"].unique().to_list() == [160]
    other_model = {**defs.resources, "embedding_model": EmbeddingModel(
        model="another-model", cache_uri=defs.resources["embedding_model"].cache_uri)}
    changed = rebuild(resources=other_model)
    assert changed["mode"] == "full" and "another-model" in changed["mode_reason"]

    # fresh: a release build ignores what the warehouse holds; it is what an empty warehouse builds
    fresh = rebuild(fresh=True, topics=TopicConfig(fresh=True))
    assert fresh["mode"] == "full" and fresh["mode_reason"].startswith("fresh: true")
    assert topic_runs[-1] == "fitted anew (k-means)"
    release = store.read("diverse_subset"), store.read("topic_clusters")
    empty = build_defs(Settings.under(tmp_path / "elsewhere", raw_root=raw))
    other_instance = dg.DagsterInstance.ephemeral()
    other_instance.add_dynamic_partitions(corpus_partitions.name, list(files))
    for name in files:
        assert empty.resolve_job_def("update_corpus").execute_in_process(
            partition_key=name, instance=other_instance).success
    assert dg.materialize([*ingest.assets, *diversity.assets, *novelty.assets], resources=empty.resources,
                          instance=other_instance,
                          selection=[novelty.curated_reference, diversity.candidate_pool, diversity.near_duplicates,
                                     diversity.topic_clusters, novelty.novelty_scores, diversity.diverse_subset]
                          ).success
    from_scratch = empty.resources["warehouse"].warehouse()
    assert from_scratch.read("diverse_subset").equals(release[0])
    assert from_scratch.read("topic_clusters").equals(release[1])
    # incremental on an unchanged pool: the documented difference (new rows) is empty, so the build is the same
    again = rebuild()
    assert (again["mode"], again["new_picks"], again["dropped_previous"]) == ("extended", 0, 0)
    assert store.read("diverse_subset").equals(release[0]) and store.read("topic_clusters").equals(release[1])


BAD_ANSWERS = ["", "N/A", "I'm sorry, but as an AI language model, I cannot answer that.", "<nooutput>",
               "Ã¤Â¸Â­Ã¦Â–Â‡ Ã¥Â­Â—Ã§Â¬Â¦ Ã¤Â¹Â±Ã§Â Â"]


def test_diverse_subset_shares_the_budget_by_corpus_and_skips_rule_failures(tmp_path, corpora, read_corpus):
    """100 alpaca_en rows plus 5 with a broken answer, and 16 CMMLU subject files of 6 items: the broken rows
    never compete, each corpus gets half the budget however many subject files it has, and every subject and
    topic is present."""
    import csv
    import json

    import dagster as dg

    from sft_assets.definitions import build_defs
    from sft_assets.defs import diversity, ingest, novelty
    from sft_assets.defs.diversity import DiverseSubsetConfig
    from sft_assets.defs.partitions import corpus_partitions
    from sft_assets.settings import Settings

    raw = tmp_path / "raw"
    (raw / "alpaca_en").mkdir(parents=True)
    (raw / "cmmlu").mkdir()
    rows = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(105).select(
        "instruction", pl.col("input").fill_null(""), "output").to_dicts()
    for row, bad in zip(rows[100:], BAD_ANSWERS):
        row["output"] = bad
    (raw / "alpaca_en" / "part.json").write_text(json.dumps(rows), encoding="utf-8")
    subjects = sorted(p.name for p in (corpora / "cmmlu" / "test").glob("*.csv"))[:16]
    for name in subjects:
        with open(corpora / "cmmlu" / "test" / name, encoding="utf-8", newline="") as src:
            items = list(csv.reader(src))[:7]
        with open(raw / "cmmlu" / name, "w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows(items)
    defs = build_defs(Settings.under(tmp_path / "data", raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    keys = ["alpaca_en/part.json", *(f"cmmlu/{name}" for name in subjects)]
    instance.add_dynamic_partitions(corpus_partitions.name, keys)
    for key in keys:
        assert defs.resolve_job_def("update_corpus").execute_in_process(partition_key=key, instance=instance).success
    result = dg.materialize(
        [*ingest.assets, *diversity.assets, *novelty.assets], resources=defs.resources, instance=instance,
        selection=[novelty.curated_reference, diversity.candidate_pool, diversity.near_duplicates,
                   diversity.topic_clusters, novelty.novelty_scores, diversity.diverse_subset],
        run_config=dg.RunConfig({"diverse_subset": DiverseSubsetConfig(budget=40)}))
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("diverse_subset")[0].metadata.items()}
    store = defs.resources["warehouse"].warehouse()
    pool, subset = store.read("candidate_pool"), store.read("diverse_subset")
    broken = pool.filter(pl.col("output").is_in(BAD_ANSWERS))["record_id"]
    assert broken.len() == 5 and meta["failed_quality_rule"] >= 5
    assert not subset["record_id"].is_in(broken.implode()).any()
    picked = subset.join(pool.select("record_id", corpus=pl.col("corpus").str.split("/").list.first()),
                         on="record_id")
    assert dict(picked.group_by("corpus").len().iter_rows()) == {"alpaca_en": 20, "cmmlu": 20}
    eligible_topics = store.read("topic_clusters").join(pool.filter(~pl.col("record_id").is_in(broken.implode())),
                                                        on="record_id", how="semi")
    assert set(picked["topic"]) == set(eligible_topics["topic"])  # every subject and every topic is present
    assert 0 < meta["covering_radius"] and meta["radius_vs_random"] < 1.0


def test_diverse_subset_draws_from_the_rows_the_novelty_cut_keeps(tmp_path, corpora, read_corpus):
    """Curated: the Self-Instruct seed tasks; pool: 120 alpaca_en rows (Alpaca grew from those seeds: few are
    novel) and 60 gsm8k problems (all novel). With the gate on, K-Center picks only rows the selection would
    keep as novel, so no picked row is later dropped as not novel; with after_novelty off it picks
    not-novel alpaca_en rows as before."""
    import json
    import shutil

    import dagster as dg

    from sft_assets.core.selection import not_wanted_by_novelty
    from sft_assets.definitions import build_defs
    from sft_assets.defs import diversity, ingest, novelty
    from sft_assets.defs.diversity import DiverseSubsetConfig
    from sft_assets.defs.partitions import corpus_partitions
    from sft_assets.settings import Settings

    raw, data = tmp_path / "raw", tmp_path / "data"
    (raw / "alpaca_en").mkdir(parents=True)
    (raw / "gsm8k").mkdir()
    (data / "curated").mkdir(parents=True)
    shutil.copy(corpora / "self_instruct" / "seed_tasks.jsonl", data / "curated" / "seed_tasks.jsonl")
    rows = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(120).select(
        "instruction", pl.col("input").fill_null(""), "output").to_dicts()
    (raw / "alpaca_en" / "part.json").write_text(json.dumps(rows), encoding="utf-8")
    (raw / "gsm8k" / "part.tsv").write_text(
        "".join((corpora / "gsm8k" / "gsm8k_train.tsv").read_text(encoding="utf-8").splitlines(True)[:61]),
        encoding="utf-8")
    defs = build_defs(Settings.under(data, raw_root=raw))
    instance = dg.DagsterInstance.ephemeral()
    keys = ["alpaca_en/part.json", "gsm8k/part.tsv"]
    instance.add_dynamic_partitions(corpus_partitions.name, keys)
    for key in keys:
        assert defs.resolve_job_def("update_corpus").execute_in_process(partition_key=key, instance=instance).success
    store = defs.resources["warehouse"].warehouse()

    def subset(after_novelty: bool) -> tuple[pl.DataFrame, dict]:
        result = dg.materialize(
            [*ingest.assets, *diversity.assets, *novelty.assets], resources=defs.resources, instance=instance,
            selection=[novelty.curated_reference, diversity.candidate_pool, diversity.near_duplicates,
                       diversity.topic_clusters, novelty.novelty_scores, diversity.diverse_subset],
            run_config=dg.RunConfig({"diverse_subset": DiverseSubsetConfig(budget=40, fresh=True,
                                                                           after_novelty=after_novelty)}))
        assert result.success
        meta = result.asset_materializations_for_node("diverse_subset")[0].metadata
        return store.read("diverse_subset"), {k: v.value for k, v in meta.items()}

    picked, meta = subset(after_novelty=True)
    scores = store.read("novelty_scores")
    unwanted = not_wanted_by_novelty(scores)
    assert scores["novelty_gate"].null_count() == scores.height  # the gate lets novelty through
    assert meta["novelty"].startswith("drew from rows called novel") and meta["not_wanted_by_novelty"] > 0
    assert picked.height == 40 and not picked["record_id"].is_in(unwanted.implode()).any()

    unfiltered, meta = subset(after_novelty=False)
    assert meta["novelty"] == "not used: after_novelty is off" and meta["not_wanted_by_novelty"] == 0
    assert unfiltered["record_id"].is_in(unwanted.implode()).sum() >= 10
