"""K-Center-Greedy on real embeddings: farthest-first picks, a covering radius that never grows, caps."""

from collections import Counter

import numpy as np
import pytest

from sft_assets.core import kcenter
from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.kcenter import (
    balanced_caps, covering_radius, extend_k_center, k_center_greedy, random_radius,
)
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


def assert_farthest_first(x, order, radius, eligible=None, tol=1e-5, start=1):
    """Each pick from ``start`` on is (to float rounding) the farthest still-eligible row; radius is the farthest
    distance after it."""
    eligible = np.ones(len(x), bool) if eligible is None else eligible.copy()
    eligible[order[: start - 1]] = False
    for i in range(start, len(order)):
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


def test_shares_weigh_the_caps():
    pool = ["cmmlu"] * 500 + ["alpaca_en"] * 300 + ["gsm8k"] * 20
    assert balanced_caps(pool, 100) == {"cmmlu": 40, "alpaca_en": 40, "gsm8k": 20}
    caps = balanced_caps(pool, 100, shares={"cmmlu": 1, "alpaca_en": 3})
    assert caps == {"cmmlu": 20, "alpaca_en": 60, "gsm8k": 20}  # gsm8k under its fifth: 80 left, shared 1:3
    assert balanced_caps(pool, 100, shares={"cmmlu": 0})["cmmlu"] == 0
    with pytest.raises(ValueError, match="shares"):
        balanced_caps(pool, 100, shares={"cmmlu": -1})


def test_covering_radius_is_the_worst_covered_row_over_every_row(pool):
    emb, categories = pool
    order, radius = k_center_greedy(emb, 30)
    assert covering_radius(emb, order) == pytest.approx(min_distances(emb, order).max(), abs=1e-6)
    assert covering_radius(emb, order) == pytest.approx(radius[-1], abs=1e-5)  # no caps: the same rows
    caps = balanced_caps(categories, 30)
    capped, capped_radius = k_center_greedy(emb, 30, categories, caps)
    # under caps the per-pick radius only looks at rows still open; the covering radius looks at all
    assert covering_radius(emb, capped) == pytest.approx(min_distances(emb, capped).max(), abs=1e-6)
    assert covering_radius(emb, capped) > capped_radius[-1]
    rng = np.random.default_rng(0)
    expected = np.mean([min_distances(emb, rng.choice(len(emb), 30, replace=False)).max() for _ in range(5)])
    assert random_radius(emb, 30, repeats=5, seed=0) == pytest.approx(expected, abs=1e-6)
    assert covering_radius(emb, order) < random_radius(emb, 30)


def test_a_floor_makes_every_group_present_then_farthest_first(pool):
    emb, categories = pool
    budget = 12
    plain = Counter(categories[i] for i in k_center_greedy(emb, budget)[0])
    assert set(plain) < set(categories)  # farthest-first alone leaves some categories out
    order, radius = k_center_greedy(emb, budget, groups=categories, floor=1)
    assert set(categories[i] for i in order[: len(set(categories))]) == set(categories)
    assert len(order) == budget and (np.diff(radius) <= 0).all()
    assert radius[-1] == pytest.approx(covering_radius(emb, order), abs=1e-5)
    assert_farthest_first(emb, order, radius, start=len(set(categories)) + 1)
    # the floor within the caps: a capped group gets no more than its cap
    caps = {"alpaca_en": 0}
    capped, _ = k_center_greedy(emb, budget, categories, caps, groups=categories, floor=2)
    picked = Counter(categories[i] for i in capped)
    assert "alpaca_en" not in picked and all(picked[c] >= min(2, n) for c, n in Counter(categories).items()
                                             if c != "alpaca_en")


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


# Stable incremental K-Center: the pool above (A), grown by rows of another corpus (B).
OLD_BUDGET = 60


@pytest.fixture(scope="module")
def grown(pool, read_corpus):
    """A's vectors and categories followed by 80 gsm8k word problems (B), and A's greedy picks and radius."""
    emb, categories = pool
    texts = embedding_texts(read_corpus("gsm8k/gsm8k_train.tsv").records.head(80))
    new = embed_texts(load_sentence_model("default", device="cpu"), texts)
    previous, radius = k_center_greedy(emb, OLD_BUDGET)
    return np.vstack([emb, new]), categories + ["gsm8k"] * len(texts), previous, float(radius[-1])


def test_extension_keeps_every_previous_pick_when_the_budget_allows(grown):
    x, _, previous, old_radius = grown
    order, radius = extend_k_center(x, OLD_BUDGET + 40, previous, old_radius)
    assert len(order) == OLD_BUDGET + 40 and len(set(order.tolist())) == len(order)
    assert np.array_equal(order[:OLD_BUDGET], previous)
    assert (np.diff(radius) <= 0).all() and radius[-1] < old_radius
    assert min_distances(x, order).max() <= radius[-1] + 1e-5  # every row of A and B is covered
    assert_farthest_first(x, order, radius, start=OLD_BUDGET)  # then greedy, from the previous picks on


def test_new_rows_enter_only_where_the_previous_picks_do_not_cover_them(grown):
    x, _, previous, old_radius = grown
    n_old = len(x) - 80
    order, radius = extend_k_center(x, OLD_BUDGET, previous, old_radius)
    new = order[~np.isin(order, previous)]
    assert len(order) == OLD_BUDGET and 0 < len(new) < OLD_BUDGET
    assert (new >= n_old).all()  # A rows stay covered by the previous picks
    for i, row in enumerate(new):
        assert min_distances(x, np.r_[previous, new[:i]])[row] > old_radius
    assert min_distances(x, np.r_[previous, new]).max() <= old_radius + 1e-5  # B added only what it lacked
    # over the budget: the last previous picks make room, the new ones all stay
    assert np.array_equal(order, np.r_[previous[:OLD_BUDGET - len(new)], new])
    assert (np.diff(radius) <= 0).all() and min_distances(x, order).max() <= radius[-1] + 1e-5
    few, _ = extend_k_center(x, 3, previous, old_radius)
    assert np.array_equal(few, new[:3])  # new picks alone past the budget: the first of them


def test_copies_of_covered_rows_add_no_pick(grown, pool):
    emb, _ = pool
    _, _, previous, old_radius = grown
    copies = np.vstack([emb, emb[::3]])
    order, radius = extend_k_center(copies, OLD_BUDGET, previous, old_radius)
    assert np.array_equal(order, previous)
    assert radius[-1] == pytest.approx(old_radius, abs=1e-5)


def test_an_unchanged_pool_gives_the_same_subset_bit_for_bit(pool):
    emb, categories = pool
    caps = balanced_caps(categories, OLD_BUDGET)
    order, radius = k_center_greedy(emb, OLD_BUDGET, categories, caps)
    again, again_radius = extend_k_center(emb, OLD_BUDGET, order, float(radius[-1]), categories, caps)
    assert np.array_equal(again, order) and np.array_equal(again_radius, radius)


def test_extension_respects_caps_counting_previous_picks(grown):
    x, categories, _, _ = grown
    budget = 80
    old = categories[: len(x) - 80]
    previous, old_radius = k_center_greedy(x[: len(old)], budget, old, balanced_caps(old, budget))
    caps = balanced_caps(categories, budget)  # gsm8k takes a share: some old categories lose room
    order, _ = extend_k_center(x, budget, previous, float(old_radius[-1]), categories, caps)
    picked = Counter(categories[i] for i in order)
    assert len(order) == budget and all(picked[c] <= caps[c] for c in picked) and picked["gsm8k"] > 0
    kept = order[np.isin(order, previous)]
    assert len(kept) < len(previous) and np.array_equal(order[: len(kept)], kept)  # previous first, in order
    for category in set(old):  # a category over its new cap loses its last previous picks
        before = [i for i in previous if categories[i] == category]
        after = [i for i in kept if categories[i] == category]
        assert after == before[: len(after)]


def test_extension_gives_a_new_group_its_floor(grown):
    emb, categories, previous, radius = grown
    order, _ = extend_k_center(emb, OLD_BUDGET, previous, radius, groups=categories, floor=3)
    picked = Counter(categories[i] for i in order)
    assert all(picked[c] >= min(3, n) for c, n in Counter(categories).items())
    assert len(order) == OLD_BUDGET and len(set(order.tolist())) == OLD_BUDGET


def test_extension_is_the_same_on_every_tracker(grown, monkeypatch):
    x, categories, previous, old_radius = grown
    caps = balanced_caps(categories, OLD_BUDGET)
    expected = extend_k_center(x, OLD_BUDGET, previous, old_radius, categories, caps)
    monkeypatch.setattr(kcenter, "FRONTIER", 4)
    monkeypatch.setattr(kcenter, "PICKS_PER_UPDATE", 3)
    tiny = extend_k_center(x, OLD_BUDGET, previous, old_radius, categories, caps)
    monkeypatch.setattr(kcenter, "_tracker", lambda x, eligible, device: kcenter._TorchTracker(x, eligible, "cpu"))
    torch = extend_k_center(x, OLD_BUDGET, previous, old_radius, categories, caps)
    for order, radius in (tiny, torch):
        assert np.array_equal(order, expected[0])
        np.testing.assert_allclose(radius, expected[1], atol=1e-6)
    with pytest.raises(ValueError, match="repeat"):
        extend_k_center(x, 5, [1, 1], old_radius)
