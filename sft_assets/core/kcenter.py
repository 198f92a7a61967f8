"""K-Center-Greedy: the smallest set of rows that still covers the pool.

Farthest-first traversal over cosine distance (1 - cos) of unit vectors: each
pick is the row farthest from everything picked so far (and from the already
curated rows given as ``initial``), so the covering radius, the distance from
the worst-covered row to its nearest pick, shrinks as fast as greedy allows
(a 2-approximation of the optimal K-Center).

Balancing has two parts. ``caps`` bound a category's picks (the pipeline caps
each corpus at its share of the budget, ``balanced_caps``), so one large
corpus cannot take the whole budget. ``floor`` makes every group (the
pipeline: each category within a corpus) present: first, farthest-first
among the groups still below ``floor`` picks; then plain farthest-first.
Per-topic caps were dropped: on 20,000 alpaca_en rows in 64 topics (2,000
picks) they held the covering radius at 0.917x that of random subsets of the
same size, against 0.800x without them; a floor of 3 gives 0.800x with every
topic holding at least 3 picks (``benchmarks/results/kcenter_balance.json``).

On CPU the exact farthest row is found without a pass over the pool per
pick: distances are brought up to date with a batch of picks at a time (one
matrix product, compute bound instead of memory bound), and between two
such updates only a frontier of the rows that were farthest is kept exact.
A row outside the frontier can be no farther than its last exact distance,
so while the frontier's best beats the best of the rest, it is the true
farthest row; when it does not, the batch is applied early. On a GPU
(``device="cuda"``, torch) one pass per pick is cheap and is what is done.

``extend_k_center`` starts from an earlier selection instead of from nothing,
so a grown pool changes the picks only where the new rows are not covered.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

PICKS_PER_UPDATE = 128  # picks applied to the whole pool in one matrix product
FRONTIER = 2048  # rows kept exact between two whole-pool updates
_ROW_CHUNK = 16384  # pool rows per matrix product, to bound memory
# Distances to the same centers differ in the last float32 bits between product shapes: a row at the earlier
# radius, measured again, must not count as uncovered.
RADIUS_TOLERANCE = 1e-5


def balanced_caps(categories: Sequence[Hashable], budget: int,
                  shares: Mapping[Hashable, float] | None = None) -> dict[Hashable, int]:
    """At most ~budget * share picks per category (equal shares unless ``shares`` weighs them; a category
    not named weighs 1), what small categories cannot use going to the others.

    Water filling: a category smaller than its fair share keeps all its rows
    and the rest of the budget is shared again among the larger ones, by
    weight. The caps add up to at least min(budget, rows) when every weight is
    positive, so they never make the budget unreachable; a weight of 0 caps a
    category at 0."""
    sizes = Counter(categories)
    weight = {cat: float((shares or {}).get(cat, 1.0)) for cat in sizes}
    if any(w < 0 or not math.isfinite(w) for w in weight.values()):
        raise ValueError("shares must be finite and >= 0")
    remaining = min(budget, sum(sizes.values()))
    caps: dict[Hashable, int] = {}
    open_ = {cat for cat in sizes if weight[cat] > 0}
    while open_:
        total = sum(weight[cat] for cat in open_)
        full = {cat for cat in open_ if sizes[cat] <= remaining * weight[cat] / total}
        if not full:
            break
        for cat in full:
            caps[cat] = sizes[cat]
            remaining -= sizes[cat]
        open_ -= full
    total = sum(weight[cat] for cat in open_)
    for cat in open_:
        caps[cat] = min(sizes[cat], math.ceil(remaining * weight[cat] / total - 1e-9))
    return {cat: caps.get(cat, 0) for cat in sizes}


def covering_radius(emb: np.ndarray, centers: Sequence[int]) -> float:
    """The largest cosine distance from a row of ``emb`` to its nearest center (rows of ``emb``):
    the quantity K-Center minimizes, measured over every row, capped or not."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    c = x[np.asarray(centers, dtype=np.int64)]
    if not len(x):
        return 0.0
    if not len(c):
        return math.inf
    worst = 0.0
    for lo in range(0, x.shape[0], _ROW_CHUNK):
        worst = max(worst, float((1.0 - (x[lo : lo + _ROW_CHUNK] @ c.T).max(axis=1)).max()))
    return max(worst, 0.0)


def random_radius(emb: np.ndarray, size: int, repeats: int = 5, seed: int = 0) -> float:
    """The mean covering radius of ``repeats`` uniformly random subsets of ``size`` rows: the baseline a
    diverse subset has to beat."""
    n = emb.shape[0]
    rng = np.random.default_rng(seed)
    return float(np.mean([covering_radius(emb, rng.choice(n, size=min(size, n), replace=False))
                          for _ in range(repeats)]))


def k_center_greedy(
    emb: np.ndarray,
    budget: int,
    categories: Sequence[Hashable] | None = None,
    caps: Mapping[Hashable, int] | None = None,
    initial: np.ndarray | None = None,
    device: str = "cpu",
    groups: Sequence[Hashable] | None = None,
    floor: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick up to ``budget`` rows of ``emb`` (unit rows) farthest-first.

    ``initial``: vectors already covered (e.g. the curated set); without them
    the first pick is the row farthest from the mean. ``caps``: most picks per
    category (categories not named are not capped); a category at its cap
    takes no more picks. ``groups`` and ``floor``: the first picks go
    farthest-first among the groups with fewer than ``floor`` picks (as far
    as the caps and the budget allow), so every group is present. Returns
    ``order`` (row indices in pick order) and ``radius``: after each pick, the
    largest distance from a row that could still be picked to its nearest
    center. It never increases.

    BLAS runs on one thread: thousands of small products per run, and
    OpenBLAS threads spin-waiting on shared cores made this 2-3x slower."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    with _one_blas_thread():
        floors = _floor_picks(x, [], budget, categories, caps, device, groups, floor, initial)
        picker = _Picker(x, categories, caps, device)  # the floor picks again, with their true radii
        if initial is not None and len(initial):
            picker.cover(np.asarray(initial, dtype=np.float32))
        for row in floors:
            picker.take(row)
        picker.greedy(budget)
        return picker.result()


def _floor_picks(x, start, until, categories, caps, device, groups, floor, initial=None) -> list[int]:
    """``start`` (rows, taken first) then farthest-first picks among the groups below ``floor`` picks,
    up to ``until`` picks in all. One round per level, so where the caps or the budget run out before every
    group has ``floor`` picks, each still has as many as the others, within one."""
    order = list(start)
    for level in range(1, floor + 1 if groups is not None else 1):
        picker = _Picker(x, categories, caps, device, floor=(groups, level))
        if initial is not None and len(initial):
            picker.cover(np.asarray(initial, dtype=np.float32))
        for row in order:
            picker.take(row)
        picker.greedy(until)
        order = picker.order
    return order


def extend_k_center(
    emb: np.ndarray,
    budget: int,
    previous: Sequence[int],
    previous_radius: float,
    categories: Sequence[Hashable] | None = None,
    caps: Mapping[Hashable, int] | None = None,
    device: str = "cpu",
    groups: Sequence[Hashable] | None = None,
    floor: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """K-Center that keeps an earlier selection and adds only what the pool now lacks.

    A full rerun after a pool grows reshuffles most picks, and every new pick
    costs the scores computed only for picked rows. Here ``previous`` (row
    indices of the earlier picks still in the pool, in their pick order) stay
    centers, in order, while their category has room under ``caps``. Then
    groups below ``floor`` get their picks (as in ``k_center_greedy``), and
    farthest-first picks follow while the farthest row is farther than
    ``previous_radius`` (the earlier final radius): the rows the earlier picks
    leave uncovered, mostly new ones. Below ``budget``, greedy goes on to it;
    above, the last earlier picks (they cover least) are dropped, never a new
    one; when new picks alone pass the budget, the first ``budget`` of them stay.

    Returns ``order`` and ``radius`` as ``k_center_greedy`` does, measured on
    this pool: the radius after an earlier pick is the farthest open row once
    it and the picks before it in ``order`` are centers. It never increases."""
    previous = np.asarray(previous, dtype=np.int64)
    if np.unique(previous).size != previous.size:
        raise ValueError("previous picks repeat a row")
    x = np.ascontiguousarray(emb, dtype=np.float32)  # one copy for both pickers
    with _one_blas_thread():
        picker = _Picker(x, categories, caps, device)
        for row in previous.tolist():
            if picker.is_open(row):
                picker.take(row)
        kept = len(picker.order)
        floors = _floor_picks(x, picker.order, kept + budget, categories, caps, device, groups, floor)
        for row in floors[kept:]:
            picker.take(row)
        picker.greedy(kept + budget, beyond=previous_radius + RADIUS_TOLERANCE)
        picker.greedy(budget)
        if len(picker.order) <= budget:
            return picker.result()
        old, new = picker.order[:kept], picker.order[kept:]
        old = _trim_keeping_floors(old, len(picker.order) - budget, groups, floor, also=new)
        final = old[: max(budget - len(new), 0)] + new[:budget]
        replay = _Picker(x, categories, caps, device)  # the radii without the dropped centers
        for row in final:
            replay.take(row)
        return replay.result()


def _trim_keeping_floors(old: list[int], excess: int, groups, floor: int, also: list[int]) -> list[int]:
    """``old`` without its last ``excess`` picks, skipping a pick its group needs to stay at ``floor``
    among ``old`` and ``also`` (what is left over is cut from the end by the caller)."""
    counts = Counter(groups[r] for r in [*old, *also]) if groups is not None and floor > 0 else None
    dropped: set[int] = set()
    for row in reversed(old):
        if len(dropped) == excess:
            break
        if counts is None or counts[groups[row]] > floor:
            dropped.add(row)
            if counts is not None:
                counts[groups[row]] -= 1
    return [r for r in old if r not in dropped]


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class _Picker:
    """Centers taken one at a time under the caps, each with the radius it leaves."""

    def __init__(self, emb, categories, caps, device, floor=None):
        x = np.ascontiguousarray(emb, dtype=np.float32)
        self.codes, self.cap_of_code = _category_codes(x.shape[0], categories, caps)
        eligible = self.cap_of_code[self.codes] > 0
        self.floor = None  # (group code per row, picks still owed per group) while picking floors
        if floor is not None:
            groups, count = floor
            codes, _ = _category_codes(x.shape[0], groups, None)
            self.floor = (codes, np.full(codes.max(initial=-1) + 1, count, dtype=np.int64))
            eligible &= self.floor[1][codes] > 0
        self.tracker = _tracker(x, eligible, device)
        self.picked_per_code = np.zeros(self.cap_of_code.size, dtype=np.int64)
        self.order: list[int] = []
        self.radius: list[float] = []
        self.next, self.next_distance = _farthest_from_mean(x, eligible), math.inf  # no center yet

    def cover(self, centers: np.ndarray) -> None:
        """Rows near ``centers`` (vectors, not rows) count as covered."""
        self.tracker.add_vectors(centers)
        self.next, self.next_distance = self.tracker.farthest()

    def is_open(self, row: int) -> bool:
        """Whether the row's category has room (a row already taken is the caller's to avoid)."""
        code = self.codes[row]
        return bool(self.picked_per_code[code] < self.cap_of_code[code])

    def take(self, row: int) -> None:
        self.order.append(row)
        self.tracker.add(row)
        code = self.codes[row]
        self.picked_per_code[code] += 1
        closed = np.flatnonzero(self.codes == code) if self.picked_per_code[code] >= self.cap_of_code[code] else [row]
        self.tracker.exclude(np.asarray(closed))
        if self.floor is not None:
            groups, owed = self.floor
            owed[groups[row]] -= 1
            if owed[groups[row]] <= 0:
                self.tracker.exclude(np.flatnonzero(groups == groups[row]))
        self.next, farthest = self.tracker.farthest()
        self.next_distance = max(farthest, 0.0)
        self.radius.append(self.next_distance)

    def greedy(self, until: int, beyond: float = -math.inf) -> None:
        """Farthest-first picks until ``until`` centers in all, or none farther than ``beyond`` is left."""
        while self.next >= 0 and len(self.order) < until and self.next_distance > beyond:
            self.take(self.next)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.order, dtype=np.int64), np.asarray(self.radius, dtype=np.float32)


def _category_codes(n, categories, caps) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per row and cap per code (uncapped: n)."""
    if categories is None:
        if caps:
            raise ValueError("caps need categories")
        return np.zeros(n, dtype=np.int64), np.array([n], dtype=np.int64)
    if len(categories) != n:
        raise ValueError(f"{len(categories)} categories for {n} rows")
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(c, len(index)) for c in categories), dtype=np.int64, count=n)
    caps = caps or {}
    return codes, np.array([caps.get(c, n) for c in index], dtype=np.int64)


def _farthest_from_mean(x: np.ndarray, eligible: np.ndarray) -> int:
    if not eligible.any():
        return -1
    closeness = x @ x.mean(axis=0)
    return int(np.argmin(np.where(eligible, closeness, np.inf)))


def _tracker(x: np.ndarray, eligible: np.ndarray, device: str):
    if device == "auto":
        from sft_assets.core.embed import resolve_device

        device = resolve_device(device)
    return _FrontierTracker(x, eligible) if device == "cpu" else _TorchTracker(x, eligible, device)


class _FrontierTracker:
    """Exact farthest eligible row, with whole-pool updates batched (see the module doc)."""

    def __init__(self, x: np.ndarray, eligible: np.ndarray):
        self.x = x
        self.eligible = eligible.copy()
        self.min_d = np.full(x.shape[0], np.inf, dtype=np.float32)
        self.pending: list[int] = []
        self._refresh()

    def add_vectors(self, centers: np.ndarray) -> None:
        self._apply(centers)
        self._refresh()

    def add(self, row: int) -> None:
        self.pending.append(row)
        np.minimum(self.front_d, 1.0 - self.front_x @ self.x[row], out=self.front_d)
        self.fresh = False
        if len(self.pending) >= PICKS_PER_UPDATE:
            self._refresh()

    def exclude(self, rows: np.ndarray) -> None:
        self.eligible[rows] = False

    def farthest(self) -> tuple[int, float]:
        while True:
            d = np.where(self.eligible[self.front], self.front_d, -np.inf)
            best = int(np.argmax(d)) if d.size else 0
            if d.size and d[best] > -np.inf and (self.fresh or d[best] > self.rest_max):
                return int(self.front[best]), float(d[best])
            if not self.eligible.any():
                return -1, 0.0
            self._refresh()

    def _apply(self, centers: np.ndarray) -> None:
        for lo in range(0, self.x.shape[0], _ROW_CHUNK):
            closest = (self.x[lo : lo + _ROW_CHUNK] @ centers.T).max(axis=1)
            np.minimum(self.min_d[lo : lo + _ROW_CHUNK], 1.0 - closest, out=self.min_d[lo : lo + _ROW_CHUNK])

    def _refresh(self) -> None:
        """Apply pending picks to every row, then take the farthest eligible rows as the new frontier."""
        if self.pending:
            self.min_d[self.front] = np.minimum(self.min_d[self.front], self.front_d)
            self._apply(self.x[self.pending])
            self.pending = []
        candidates = np.flatnonzero(self.eligible)
        size = min(FRONTIER, candidates.size)
        if size < candidates.size:
            part = np.argpartition(self.min_d[candidates], candidates.size - size - 1)
            self.rest_max = float(self.min_d[candidates[part[candidates.size - size - 1]]])
            candidates = np.sort(candidates[part[candidates.size - size :]])
        else:
            self.rest_max = -np.inf
        self.front = candidates
        self.front_x = self.x[candidates]
        self.front_d = self.min_d[candidates].copy()
        self.fresh = True


class _TorchTracker:
    """One pass over the pool per pick, on a torch device: cheap where memory bandwidth is high."""

    def __init__(self, x: np.ndarray, eligible: np.ndarray, device: str):
        import torch

        self.torch = torch
        self.x = torch.as_tensor(x, device=device)
        self.eligible = torch.as_tensor(eligible, device=device).clone()
        self.min_d = torch.full((x.shape[0],), float("inf"), device=device)

    def add_vectors(self, centers: np.ndarray) -> None:
        c = self.torch.as_tensor(centers, device=self.x.device)
        for lo in range(0, self.x.shape[0], _ROW_CHUNK):
            closest = (self.x[lo : lo + _ROW_CHUNK] @ c.T).amax(dim=1)
            self.min_d[lo : lo + _ROW_CHUNK] = self.torch.minimum(self.min_d[lo : lo + _ROW_CHUNK], 1.0 - closest)

    def add(self, row: int) -> None:
        self.torch.minimum(self.min_d, 1.0 - self.x @ self.x[row], out=self.min_d)

    def exclude(self, rows: np.ndarray) -> None:
        self.eligible[self.torch.as_tensor(rows, device=self.x.device)] = False

    def farthest(self) -> tuple[int, float]:
        d = self.torch.where(self.eligible, self.min_d, float("-inf"))
        if d.numel() == 0:
            return -1, 0.0
        best = int(self.torch.argmax(d))
        value = float(d[best])
        return (best, value) if value > float("-inf") else (-1, 0.0)
