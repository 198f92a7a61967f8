"""K-Center-Greedy on real embeddings: farthest-first picks, a covering radius that never grows, caps."""

from collections import Counter

import numpy as np
import pytest

from sft_assets.core import kcenter
from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.kcenter import balanced_caps, k_center_greedy
from sft_assets.core.records import embedding_texts

# zh_categories: one category per file, strongly long-tailed
CATEGORY_FILES = {"代码问题.json": 100, "学术问题.json": 40, "传统诗词及文化常识问题.json": 31, "饮食问题.json": 9,
                  "计算机问题.json": 1}


@pytest.fixture(scope="module")
def pool(read_corpus):
    """A few hundred real rows: English instructions plus long-tailed Chinese categories."""
    texts = embedding_texts(read_corpus("alpaca_en/alpaca_data-3252-6382.json").records.head(100))
    categories = ["alpaca_en"] * len(texts)
    for name, count in CATEGORY_FILES.items():
        records = read_corpus(f"zh_categories/{name}").records.head(count)
        texts += embedding_texts(records)
        categories += records["category"].to_list()
    emb = embed_texts(load_sentence_model("default", device="cpu"), texts)
    return emb, categories


def min_distances(x, centers):
    return 1.0 - (x @ x[centers].T).max(axis=1) if len(centers) else np.full(len(x), np.inf)


def assert_farthest_first(x, order, radius, eligible=None, tol=1e-5):
    """Each pick is (to float rounding) the farthest still-eligible row; radius is the farthest distance after it."""
    eligible = np.ones(len(x), bool) if eligible is None else eligible.copy()
    for i in range(1, len(order)):
        eligible[order[i - 1]] = False
        d = np.where(eligible, min_distances(x, order[:i]), -np.inf)
        assert d[order[i]] >= d.max() - tol, f"pick {i} is not the farthest row"
        assert radius[i - 1] == pytest.approx(max(d.max(), 0.0), abs=tol)


def test_first_pick_is_farthest_from_the_mean(pool):
    emb, _ = pool
    order, _ = k_center_greedy(emb, 5)
    assert order[0] == int(np.argmin(emb @ emb.mean(axis=0)))


def test_picks_are_farthest_first_and_radius_never_grows(pool):
    emb, _ = pool
    order, radius = k_center_greedy(emb, 120)
    assert len(order) == 120 and len(set(order.tolist())) == 120
    assert radius.dtype == np.float32 and (np.diff(radius) <= 0).all()
    assert_farthest_first(emb, order, radius)
    covered = min_distances(emb, order)
    assert radius[-1] == pytest.approx(covered.max(), abs=1e-5)


def test_frontier_refreshes_stay_exact(pool, monkeypatch):
    """A tiny frontier and batch force every refresh path (batch full, frontier exhausted)."""
    emb, _ = pool
    monkeypatch.setattr(kcenter, "FRONTIER", 4)
    monkeypatch.setattr(kcenter, "PICKS_PER_UPDATE", 3)
    order, radius = k_center_greedy(emb, 60)
    assert (np.diff(radius) <= 0).all()
    assert_farthest_first(emb, order, radius)


@pytest.mark.parametrize("setting", ["plain", "caps", "initial"])
def test_torch_path_picks_the_same_centers(pool, monkeypatch, setting):
    """The one-pass-per-pick torch tracker (used on GPUs), run here on the CPU: the numpy picks, in order."""
    emb, categories = pool
    budget = 80
    kwargs = {"plain": {}, "caps": {"categories": categories, "caps": balanced_caps(categories, budget)},
              "initial": {"initial": emb[:30]}}[setting]
    expected, expected_radius = k_center_greedy(emb, budget, **kwargs)
    monkeypatch.setattr(kcenter, "_tracker", lambda x, eligible, device: kcenter._TorchTracker(x, eligible, "cpu"))
    order, radius = k_center_greedy(emb, budget, **kwargs)
    assert np.array_equal(order, expected)
    np.testing.assert_allclose(radius, expected_radius, atol=1e-6)
    if setting == "plain":
        assert_farthest_first(emb, order, radius)


def test_initial_centers_are_already_covered(pool):
    emb, _ = pool
    curated, candidates = emb[:30], emb[30:]
    order, radius = k_center_greedy(candidates, 10, initial=curated)
    before = 1.0 - (candidates @ curated.T).max(axis=1)
    assert order[0] == int(np.argmax(before))
    assert radius[0] <= before.max() and (np.diff(radius) <= 0).all()
    # rows identical to a curated one are covered and come last, if at all
    order, _ = k_center_greedy(emb, 20, initial=emb[:30])
    assert not set(order.tolist()) & set(range(30))


def test_caps_balance_the_long_tail(pool):
    emb, categories = pool
    budget = 80
    caps = balanced_caps(categories, budget)
    sizes = Counter(categories)
    assert caps["计算机问题"] == sizes["计算机问题"] == 1  # small categories keep every row
    assert caps["饮食问题"] == sizes["饮食问题"] < budget // len(sizes)
    large = {caps[c] for c in ("代码问题", "alpaca_en", "学术问题", "传统诗词及文化常识问题")}
    assert len(large) == 1 and large.pop() >= -(-budget // len(sizes))  # one shared level, above the fair share
    assert sum(caps.values()) >= budget and all(caps[c] <= sizes[c] for c in sizes)

    order, radius = k_center_greedy(emb, budget, categories, caps)
    picked = Counter(categories[i] for i in order)
    assert len(order) == budget and all(picked[c] <= caps[c] for c in picked)
    assert (np.diff(radius) <= 0).all()
    uncapped = Counter(categories[i] for i in k_center_greedy(emb, budget)[0])
    assert max(uncapped.values()) > max(picked.values())


def test_balanced_caps_edge_cases():
    assert balanced_caps([], 10) == {}
    assert balanced_caps(["a", "a", "b"], 0) == {"a": 0, "b": 0}
    assert balanced_caps(["a", "a", "b"], 10) == {"a": 2, "b": 1}
    assert balanced_caps(["a"] * 10 + ["b"] * 10 + ["c"] * 10, 10) == {"a": 4, "b": 4, "c": 4}


def test_budget_beyond_the_pool_and_zero_caps(pool):
    emb, categories = pool
    small = emb[:25]
    order, radius = k_center_greedy(small, 100)
    assert sorted(order.tolist()) == list(range(25)) and radius[-1] == 0.0
    caps = {c: 0 for c in set(categories)}
    order, radius = k_center_greedy(emb, 10, categories, caps)
    assert order.size == 0 and radius.size == 0
    with pytest.raises(ValueError, match="caps need categories"):
        k_center_greedy(emb, 10, caps={"a": 1})
