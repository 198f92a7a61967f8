"""Near dedup on real Chinese rows: the English MiniLM cannot tell them apart, so `auto` uses TF-IDF there."""

import polars as pl
import pytest

from sft_assets.core.embedding_cache import embeddings_frame
from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.records import embedding_texts
from sft_assets.defs.diversity import NearDedupConfig, near_duplicates


@pytest.fixture(scope="module")
def zh_pool(read_corpus):
    records = read_corpus("alpaca_zh/alpaca_data-0-3252.json").records.filter(pl.col("lang") == "zh").head(400)
    pool = records.with_columns(text=pl.Series(embedding_texts(records)),
                                exact_duplicate_of=pl.lit(None, dtype=pl.String))
    vectors = embed_texts(load_sentence_model("default", "cpu"), pool["text"].to_list())
    return pool, embeddings_frame(pool["record_id"].to_list(), vectors, "default")


def _rate(config, pool, embeddings) -> float:
    frame = near_duplicates(config, candidate_pool=pool, embeddings=embeddings).value
    return frame["near_duplicate_of"].is_not_null().mean()


def test_auto_reads_chinese_by_characters(zh_pool):
    pool, embeddings = zh_pool
    assert set(pool["lang"]) == {"zh"}
    by_minilm = _rate(NearDedupConfig(method="embedding"), pool, embeddings)
    by_auto = _rate(NearDedupConfig(), pool, embeddings)
    assert by_minilm > 0.05  # unrelated Chinese instructions collapse in MiniLM's space (36% on all alpaca_zh)
    assert by_auto < by_minilm / 5


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
