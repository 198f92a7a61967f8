"""Exact and near dedup on real instructions with planted copies, checked against a brute-force leader rule."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sft_assets.core import dedup
from sft_assets.core.dedup import (
    exact_duplicate_of,
    exact_key,
    leader_clusters,
    near_duplicate_clusters,
    tfidf_vectors,
)
from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.records import embedding_texts

EN = "alpaca_en/alpaca_data-0-3252.json"
ZH = "zh_categories/代码问题.json"

# (index of the original in the slice, planted copy, found by exact dedup)
PLANTED = [
    (1, "What are the three primary colors?", True),  # exact copy
    (0, "Give three tips, for staying healthy!!", True),  # re-punctuated
    (10, "HOW DID JULIUS CAESAR DIE?", True),  # re-cased
    (11, "What  is the capital of\tFrance？", True),  # spacing, full-width question mark
    (3, "What are some ways to reduce air pollution?", False),  # paraphrase
    (13, "Discuss what caused the Great Depression", False),  # paraphrase
]


def brute_force_leaders(x: np.ndarray, threshold: float) -> np.ndarray:
    """The rule itself, one row at a time: join the most similar earlier leader at or above threshold."""
    leader = np.arange(len(x))
    leaders: list[int] = []
    for i in range(len(x)):
        if leaders:
            sims = x[leaders] @ x[i]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                leader[i] = leaders[best]
                continue
        leaders.append(i)
    return leader


@pytest.fixture(scope="module")
def model():
    return load_sentence_model("default", device="cpu")


@pytest.fixture(scope="module")
def slice_texts(read_corpus):
    return embedding_texts(read_corpus(EN).records.head(200))


@pytest.fixture(scope="module")
def planted(slice_texts):
    """The real slice followed by the planted copies."""
    texts = slice_texts + [copy for _, copy, _ in PLANTED]
    ids = [f"r{i}" for i in range(len(texts))]
    return ids, texts


@pytest.fixture(scope="module")
def planted_emb(model, planted):
    return embed_texts(model, planted[1])


def test_exact_key_normalizes_case_punctuation_and_space():
    assert exact_key("What is AI?") == exact_key("what is ai") == exact_key("What  is\u3000AI ！")
    assert exact_key("a,b") == exact_key("a, b")
    assert exact_key("如何检测数字键是否按下？") == exact_key("如何检测数字键是否按下?")
    assert exact_key("What is AI?") != exact_key("What is ML?")


def test_exact_duplicates_point_at_the_first_copy(planted, slice_texts):
    ids, texts = planted
    dup_of = exact_duplicate_of(ids, texts)
    n = len(slice_texts)
    for k, (original, _, exact) in enumerate(PLANTED):
        assert dup_of[n + k] == (ids[original] if exact else None)
    for i, original in enumerate(dup_of[:n]):  # copies inside the real slice, if any, point backwards
        if original is not None:
            j = ids.index(original)
            assert j < i and exact_key(texts[j]) == exact_key(texts[i])


def test_near_dedup_finds_planted_paraphrases(planted, planted_emb, slice_texts):
    leader, similarity = leader_clusters(planted_emb, threshold=0.9)
    n = len(slice_texts)
    for k, (original, _, _) in enumerate(PLANTED):
        assert leader[n + k] == original, PLANTED[k][1]
        assert 0.9 <= similarity[n + k] <= 1.0 + 1e-5
    assert (similarity[leader == np.arange(len(leader))] == 1.0).all()


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
@pytest.mark.parametrize("block", [7, 64, 1024])
def test_leader_rule_matches_brute_force(planted_emb, threshold, block):
    leader, similarity = leader_clusters(planted_emb, threshold=threshold, block=block)
    assert np.array_equal(leader, brute_force_leaders(planted_emb, threshold))
    joined = leader != np.arange(len(leader))
    exact = np.einsum("ij,ij->i", planted_emb[joined], planted_emb[leader[joined]])
    assert np.allclose(similarity[joined], exact, atol=1e-5)


def test_sketch_bound_never_undercuts_the_cosine(planted_emb):
    with threadpool_limits(limits=1, user_api="blas"):  # as leader_clusters calls it
        sketch = dedup._sketch(planted_emb)
    assert sketch.shape == (len(planted_emb), dedup.SKETCH_DIMS + 1)
    assert (sketch @ sketch.T >= planted_emb @ planted_emb.T - dedup._BOUND_SLACK).all()


def test_tfidf_mode_on_chinese(read_corpus):
    texts = embedding_texts(read_corpus(ZH).records.head(300))
    texts += [texts[11][:-1] + "?", "请问" + texts[10]]  # half-width question mark; "may I ask" prefix
    leader, _ = near_duplicate_clusters("tfidf", texts=texts, threshold=0.85)
    dense = tfidf_vectors(texts).toarray()
    assert np.array_equal(leader, brute_force_leaders(dense, 0.85))
    assert leader[-2] == leader[11] and leader[-1] == leader[10]


def test_empty_and_zero_vectors_are_leaders():
    x = np.zeros((3, 4), dtype=np.float32)
    leader, similarity = leader_clusters(x, threshold=0.9)
    assert leader.tolist() == [0, 1, 2] and similarity.tolist() == [1.0, 1.0, 1.0]
    assert leader_clusters(np.zeros((0, 384), dtype=np.float32))[0].size == 0


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="minhash"):
        near_duplicate_clusters("minhash", texts=["a"])


def test_kept_set_equals_semhash(planted, planted_emb):
    """semhash 0.5 self-deduplication keeps the same rows (when its approximate index misses nothing)."""
    semhash = pytest.importorskip("semhash")

    class Precomputed:
        def encode(self, inputs, **kwargs):
            raise AssertionError("semhash must use the given embeddings")

    _, texts = planted
    result = semhash.SemHash.from_embeddings(planted_emb, texts, model=Precomputed()).self_deduplicate(0.9)
    leader, _ = leader_clusters(planted_emb, threshold=0.9)
    assert sorted(result.selected) == sorted(texts[i] for i in np.flatnonzero(leader == np.arange(len(texts))))
