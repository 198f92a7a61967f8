"""A missing curated folder means an empty reference: novelty filtering off, said in metadata, no crash."""

import dagster as dg

from sft_assets.defs import novelty
from sft_assets.definitions import build_defs
from sft_assets.settings import Settings


def test_missing_curated_folder_gives_an_empty_reference(tmp_path):
    defs = build_defs(Settings.under(tmp_path))
    names = ("curated_root", "embedding_model", "io_manager")
    result = dg.materialize([novelty.curated_reference], resources={n: defs.resources[n] for n in names})
    assert result.success
    meta = result.asset_materializations_for_node("curated_reference")[0].metadata
    assert meta["dagster/row_count"].value == 0 and meta["files"].value == 0



def test_fine_tuned_classifier_option_finds_the_foreign_domain(read_corpus):
    """The seed's transformer judge, by config, in the same out-of-fold loop: gsm8k maths against the
    Self-Instruct seeds scores as less like the reference than other seed tasks do."""
    import polars as pl

    from sft_assets.core.records import embedding_texts
    from sft_assets.core.vectors import EmbeddingVectors

    seeds = read_corpus("self_instruct/seed_tasks.jsonl").records
    candidates = pl.concat([read_corpus("gsm8k/gsm8k_train.tsv").records.head(12), seeds.slice(100, 12)])
    pool = candidates.select("record_id", text=pl.Series(embedding_texts(candidates)))
    config = novelty.NoveltyConfig(method="fine_tuned_classifier", k_folds=2, fine_tune_steps=30)
    result = novelty.classify_novelty(config, pool, EmbeddingVectors((), ()), seeds.head(24))
    assert result.k_folds == 2 and result.auc is not None
    assert result.probability[:12].mean() < result.probability[12:].mean()
