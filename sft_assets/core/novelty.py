"""Novelty: which candidates look unlike the data we already have.

Four views score how much each candidate looks like the curated reference set:

- the seed's adversarial classifier: reference rows labelled 1, candidates 0,
  K-fold cross-validation, every row scored by a model that never saw it
  (out of fold);
- the mean cosine similarity to its nearest reference rows (kNN), which sees a
  small foreign minority that a classifier trained on every candidate
  averages away;
- the same classifier trained only on the ``focus`` share of candidates the kNN
  view finds least like the reference ("focused"): a 1 % minority is about a
  tenth of those, enough to teach the classifier its direction (planted gsm8k
  at 1 % of 2,000 alpaca_en rows: ranking AUC 0.72 trained on every candidate,
  0.91 focused; benchmarks/novelty.py). Rows outside the focus are scored by
  the mean of the fold models, none of which saw them. It does not replace the
  plain classifier: against a small reference (the tests' 400 rows, 80 held
  out) the plain one's excess over the held-out rows was the clearer.
- the share of reference rows among a row's nearest neighbours in the
  reference and the candidates together ("neighbours", the kNN two-sample
  reading of the density ratio): foreign rows that resemble each other find
  each other before they find the reference, so a small cluster shows even
  where every single row of it has some reference row close by (planted
  Chinese at 1 % of 2,000 alpaca_en rows: all 20 called novel, and the gate's
  excess p went from 0.40 with the three other views to below 0.01).

Which single view sees a minority best depends on the data and on the draw
of held-out rows, so the one with the strongest excess ranks a 1 % minority
unevenly from draw to draw. A fifth, the combined view, adds up the kNN,
neighbours and focused views' evidence (Fisher's sum of their log conformal
p-values); its only old rows are the held-out rows (the one set scored in all
three), so it ranks and cuts once enough of them lie beyond its cut, as with a
large curated set; with a small one the view with the strongest excess still
does (benchmarks/results/novelty.json: ``ranking``, ``reference_sizes``). The
gate tests the four single views in either case. Given the rows' text lengths,
the combined view also adds up a length view's evidence: how far a row's log
length lies from the reference's median, either way (``length_likeness``;
planted gsm8k at 1 % of 2,000 alpaca_en rows: the targets met in 10 of 10
draws, 2 without it; benchmarks/results/novelty.json, ``without_length``).
It is not one of the gate's views: a length alone is no proof that the
candidates hold another kind of data.

Neither raw score has a meaning on its own (balanced class weights put
same-distribution rows near 0.5, and similarity levels depend on the domain),
so a slice of the reference is held out and mixed into the candidates as
known-old rows: they go through exactly the same scoring, and their scores are
what an old row gets. The kNN views train nothing, so every reference row
they compare with is scored as well, against the others with itself left out
(as a candidate is against all of them), and those scores join the held-out
rows' as old rows' scores. A far-tail test is only as strong as the number of
old rows behind it: 20 foreign rows among 2,020 candidates, all beyond 800
held-out rows, are about as likely as 20 old candidates in a row at the top
(2,020/2,820 per draw), which the correction for several views and tails
brings to the edge of the gate; with the compared reference rows added the
same 20 rows are clear (benchmarks/novelty.py, draw seeds). A candidate's
``p_value`` is the share of old rows that look at most as much like the
reference as it does (conformal, with the usual +1), and
``p_value <= false_novel_rate`` calls it novel, so about that share of old
rows is wrongly called novel whatever the domain.

The gate asks the question that matters when most candidates are old: do
more candidates lie beyond the old rows' scores than old rows would put
there? Under "every candidate is old" the candidates and the old rows are
exchangeable, so the number of candidates below the j-th lowest old row's
score follows a negative hypergeometric law. The gate reads that count at
a ladder of old-row ranks from the far tail to the cut (1, 2, 4, ..., the
cut: a minority shows where it lies, not only where it is diluted by the
old candidates at the cut), takes the smallest of those tail chances, and
reads it against the law that smallest follows in simulated all-old pools
(a Bonferroni correction over the levels, which are nested and so move
together, would be timid: it calls all-old pools novel less often than its
level says).
The same scores, read from the top, find more data like the seeds
(``most_like_reference``).

Every degenerate input (no reference, too few rows to fold, too few held-out
rows for the rate) gives a NaN-free result, ``usable=False`` and a ``gate``
reason, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.special import gammaln
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from sft_assets.core.draws import key_draws, redraw, smallest_draws

FALSE_NOVEL_RATE = 0.05
GATE_SIGNIFICANCE = 0.01
HOLDOUT_FRACTION = 0.2
MAX_HOLDOUT = 2000
KNN_K = 10
# The kNN views compare with at most this many reference rows (a random sample), and the neighbours view
# with as many candidates besides: the cost stays candidates x this x dimensions, and the held-out null is
# measured against the same samples.
KNN_REFERENCE_ROWS = 5000
MAX_TRAIN_ROWS_PER_LABEL = 5000
# The classifier trains on this share of the candidates (and held-out rows), those least like the reference by
# kNN; at least FOCUS_MIN_ROWS of them.
FOCUS = 0.1
FOCUS_MIN_ROWS = 100
# The combined view adds up the evidence of these views: each sees a small minority its own way (a far row, a
# cluster, a direction); the plain classifier learns the majority's direction and only blurs a minority.
COMBINED_VIEWS = ("knn", "neighbours", "focused")
# The views the gate tests (the combined view is scored against the held-out rows alone and is never the gate's).
SINGLE_VIEWS = ("classifier", "focused", "knn", "neighbours")
# The combined view ranks and cuts once at least this many held-out rows lie beyond its cut (199 held-out rows at
# the default rate): its only old rows are the held-out rows, and with fewer its cut is little more than "beyond
# every held-out row", and calls far fewer planted foreign rows novel than the view with the strongest excess
# (benchmarks/results/novelty.json, ``reference_sizes``: 175, 500, 1,000 and 4,000 reference rows).
COMBINED_MIN_TAIL_ROWS = 10
# All-old pools simulated to read the gate's statistic against (its resolution: 1 / (this + 1)).
TAIL_DRAWS = 20_000

# fit_predict(train_rows, test_rows, labels) -> P(label 1) for test_rows; rows index reference then candidates.
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class NoveltyResult:
    """Per candidate: ``score`` (higher = more like the reference; for ranking) and ``p_value`` (the share of
    old rows at most as like the reference; novel when <= the false-novel rate).

    ``holdout_score`` are the old rows' scores in the view used (the null): the held-out reference rows', and in
    the kNN views also every compared reference row's against the others; ``views`` holds every view's
    (candidate scores, old rows' scores), the combined one included; ``view`` names the one that ranks and cuts,
    ``gate_view`` the one whose excess the gate tested. ``auc`` is the classifier's
    cross-validated AUC reference against candidates (a diagnostic: low when most candidates are old).
    ``usable`` is the gate's decision; when False, ``gate`` says why in a few words and ``message`` at length."""

    score: np.ndarray
    p_value: np.ndarray
    holdout_score: np.ndarray
    auc: float | None
    usable: bool
    gate: str | None
    view: str | None
    gate_view: str | None
    views: dict[str, tuple[np.ndarray, np.ndarray]]
    k_folds: int
    false_novel_rate: float
    novel_share: float
    gate_p: float | None
    message: str | None = None


def _as_matrix(emb, name: str) -> np.ndarray:
    arr = np.asarray(emb, dtype=np.float32)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (rows x dimensions), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _unusable(n_cand: int, gate: str, message: str, rate: float) -> NoveltyResult:
    """Nothing could be measured: no candidate is called novel (p-value 1), and the gate says why."""
    return NoveltyResult(score=np.zeros(n_cand), p_value=np.ones(n_cand), holdout_score=np.zeros(0), auc=None,
                         usable=False, gate=gate, view=None, gate_view=None, views={}, k_folds=0,
                         false_novel_rate=rate, novel_share=0.0, gate_p=None, message=message)


def row_draws(n_ref: int, n_cand: int, keys: Sequence[str] | None = None, seed: int = 0) -> np.ndarray:
    """One seeded draw per row (reference, then candidates) from its key (e.g. a record id; default its
    position): the held-out rows, folds and samples follow the draws, so adding candidates leaves every other
    row where it was, and only the new rows' share of the fits changes."""
    if keys is None:
        keys = [f"reference:{i}" for i in range(n_ref)] + [f"candidate:{i}" for i in range(n_cand)]
    if len(keys) != n_ref + n_cand:
        raise ValueError(f"one key per reference row and candidate is needed: {len(keys)} keys, "
                         f"{n_ref} + {n_cand} rows")
    return key_draws(keys, seed)


def holdout_mask(draws: np.ndarray, fraction: float = HOLDOUT_FRACTION, max_rows: int = MAX_HOLDOUT) -> np.ndarray:
    """Which reference rows (by their draws) are held out as known-old candidates: the smallest-drawing
    ``fraction`` of them, at most ``max_rows``."""
    mask = np.zeros(len(draws), dtype=bool)
    mask[smallest_draws(draws, min(max_rows, round(fraction * len(draws))))] = True
    return mask


def stable_folds(labels: np.ndarray, draws: np.ndarray, folds: int) -> np.ndarray:
    """Each row's fold from its draw alone, so a new row moves no other; a label too small to reach every
    fold that way is dealt round-robin in draw order instead (every fold then holds both labels)."""
    fold = (np.asarray(draws, dtype=np.uint64) % np.uint64(folds)).astype(np.int64)
    for label in (0, 1):
        rows = np.flatnonzero(labels == label)
        if len(np.unique(fold[rows])) < folds:
            fold[rows[smallest_draws(draws[rows], len(rows))]] = np.arange(len(rows)) % folds
    return fold


def out_of_fold(labels: np.ndarray, fit_predict: FitPredict, draws: np.ndarray, k_folds: int = 5,
                fitted: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """Every row's P(label 1) from models that never saw it, the mean per-fold AUC and the folds used.

    The ``fitted`` rows (default: all) are split into folds by their ``draws`` (``stable_folds``: every fold
    holds both labels; fewer folds when one label has fewer rows, at least 2), and each is scored by the model
    trained on the other folds; every other row is scored by the mean of the fold models."""
    y = np.asarray(labels, dtype=np.int8)
    fitted = np.arange(len(y)) if fitted is None else np.asarray(fitted)
    rest = np.setdiff1d(np.arange(len(y)), fitted)
    y_fit = y[fitted]
    folds = min(k_folds, int(y_fit.sum()), int((1 - y_fit).sum()))
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 rows of each label, got {np.bincount(y_fit, minlength=2)}")
    oof = np.full(len(y), np.nan)
    oof[rest] = 0.0
    aucs = []
    fold_of = stable_folds(y_fit, np.asarray(draws)[fitted], folds)
    for fold in range(folds):
        train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        prob = fit_predict(fitted[train], np.r_[fitted[test], rest], y)
        oof[fitted[test]] = prob[: len(test)]
        oof[rest] += prob[len(test):] / folds
        aucs.append(roc_auc_score(y_fit[test], oof[fitted[test]]))
    return oof, float(np.mean(aucs)), folds


def logistic_fit_predict(x: np.ndarray, draws: np.ndarray, C: float = 0.1,
                         max_rows_per_label: int = MAX_TRAIN_ROWS_PER_LABEL) -> FitPredict:
    """Logistic regression on embeddings, balanced class weights (the reference is usually far smaller),
    trained on at most ``max_rows_per_label`` rows of each label of the training folds, those with the
    smallest draws (the cost of a whole-corpora pool; every row is still scored by a model that never saw it).
    The sample is taken on a redraw: the held-out reference rows, labelled 0 with the candidates, are the
    reference's smallest draws and would otherwise all be trained on before any candidate."""
    sample_draws = redraw(draws, 2)

    def fit_predict(train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> np.ndarray:
        by_label = [train[labels[train] == label] for label in (0, 1)]
        train = np.concatenate([rows[smallest_draws(sample_draws[rows], max_rows_per_label)] for rows in by_label])
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        model.fit(x[train], labels[train])
        return model.predict_proba(x[test])[:, 1]

    return fit_predict


def neighbour_views(reference: np.ndarray, queries: np.ndarray, query_draws: np.ndarray, k: int = KNN_K,
                    pooled_rows: int = KNN_REFERENCE_ROWS, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per reference row (itself left out), then per query (unit vectors), from one product with the reference
    and at most ``pooled_rows`` queries (the smallest ``query_draws``): the mean cosine similarity to its ``k``
    nearest reference rows (the kNN view), and the share of reference rows among its ``k`` nearest neighbours
    in that pool, itself excluded (the neighbours view; low = its neighbourhood is mostly other queries).
    A reference row is compared with the others as a query is with all of them: an old row's score."""
    pick = np.sort(smallest_draws(query_draws, pooled_rows))
    n_ref = len(reference)
    # torch's top-k: numpy's argpartition over the pool was three quarters of the view's cost
    pool = torch.from_numpy(np.vstack([reference, queries[pick]]))
    pool_pos = np.full(n_ref + len(queries), -1)
    pool_pos[:n_ref] = np.arange(n_ref)
    pool_pos[n_ref + pick] = n_ref + np.arange(len(pick))
    k_reference, k_pool = min(k, n_ref - 1), min(k, len(pool) - 1)
    similarity, share = np.empty(len(pool_pos)), np.empty(len(pool_pos))
    for offset, rows in ((0, reference), (n_ref, queries)):
        for lo in range(offset, offset + len(rows), block):
            sims = torch.from_numpy(np.ascontiguousarray(rows[lo - offset: lo - offset + block])) @ pool.T
            span = slice(lo, lo + len(sims))
            own = np.flatnonzero(pool_pos[span] >= 0)
            sims[own, pool_pos[lo + own]] = -math.inf
            similarity[span] = sims[:, :n_ref].topk(k_reference, dim=1).values.mean(dim=1).numpy()
            share[span] = (sims.topk(k_pool, dim=1).indices < n_ref).double().mean(dim=1).numpy()
    return similarity, share


def conformal_p(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + old rows scoring at most as high) / (old rows + 1): small = unlike every old row."""
    return (1 + np.searchsorted(np.sort(null), scores, side="right")) / (len(null) + 1)


def tail_levels(n_old: int, rate: float) -> list[int]:
    """The old-row ranks the gate tests at: beyond every old row (1), then 2, 4, 8, ... up to the cut (j_cut).
    A minority that lies between the far tail and the cut shows at a level of its own, where far fewer old
    candidates fall than at the cut (benchmarks/results/novelty.json: ``gate_on`` against
    ``gate_on_far_tail_and_cut``, the gate with the far tail and the cut alone, on the same draws)."""
    j_cut = math.floor(rate * (n_old + 1) + 1e-9)
    return sorted({1, j_cut} | {2 ** i for i in range(max(j_cut, 1).bit_length()) if 2 ** i < j_cut})


@lru_cache(maxsize=32)
def beyond_level_chance(n_old: int, n_cand: int, level: int) -> np.ndarray:
    """For c = 0 .. n_cand: the chance that at least c of ``n_cand`` candidates lie beyond the ``level``-th
    old row when every candidate is old (exchangeable with the old rows, so the candidates before the j-th
    old row are negative hypergeometric), summed from the far end so that a small chance keeps its digits."""
    c = np.arange(n_cand + 1)
    n = n_old + n_cand
    log_pmf = (gammaln(c + level) - gammaln(c + 1) - gammaln(level) + gammaln(n - level - c + 1)
               - gammaln(n_cand - c + 1) - gammaln(n_old - level + 1)
               - gammaln(n + 1) + gammaln(n_cand + 1) + gammaln(n_old + 1))
    return np.minimum(1.0, np.cumsum(np.exp(log_pmf)[::-1])[::-1])


def level_p(counts: np.ndarray, n_old: int, n_cand: int, levels: Sequence[int]) -> np.ndarray:
    """``beyond_level_chance`` of each level's count (``counts[i]`` candidates beyond the ``levels[i]``-th old
    row; a 2-d ``counts`` holds one row per pool)."""
    counts = np.asarray(counts)
    return np.stack([beyond_level_chance(n_old, n_cand, int(level))[counts[..., i]]
                     for i, level in enumerate(levels)], axis=-1)


def all_old_counts(n_old: int, n_cand: int, levels: Sequence[int], draws: int, seed: int = 0) -> np.ndarray:
    """Per simulated all-old pool (``draws`` rows) and level: the candidates beyond that level's old row.
    Drawn level by level: of r candidates and o old rows still to come, the candidates before the next d old
    rows are beta-binomial(r, d, o - d + 1) (the negative hypergeometric law as a mixture)."""
    rng = np.random.default_rng(seed)
    counts, before, done = np.zeros((draws, len(levels)), dtype=np.int64), np.zeros(draws, dtype=np.int64), 0
    for i, level in enumerate(levels):
        step = level - done
        before += rng.binomial(n_cand - before, rng.beta(step, n_old - done - step + 1, draws))
        counts[:, i], done = before, level
    return counts


@lru_cache(maxsize=64)
def all_old_smallest_level_p(n_old: int, n_cand: int, levels: tuple[int, ...]) -> np.ndarray:
    """The smallest ``level_p`` over ``levels`` in ``TAIL_DRAWS`` simulated all-old pools, sorted: the law
    the gate's statistic follows when every candidate is old."""
    counts = all_old_counts(n_old, n_cand, levels, TAIL_DRAWS)
    return np.sort(level_p(counts, n_old, n_cand, levels).min(axis=1))


def chance_of_smallest(observed: np.ndarray, n_old: int, n_cand: int, levels: Sequence[int]) -> np.ndarray:
    """The chance that an all-old pool's smallest level p-value is at most ``observed``: simulated
    (``all_old_smallest_level_p``, +1 as a conformal p), or the Bonferroni bound over the levels where that is
    smaller (beyond what the simulated draws resolve; it never understates the chance)."""
    law = all_old_smallest_level_p(n_old, n_cand, tuple(levels))
    simulated = (1 + np.searchsorted(law, np.asarray(observed) * (1 + 1e-9), side="right")) / (len(law) + 1)
    return np.minimum(1.0, np.minimum(simulated, np.asarray(observed) * len(levels)))


def needed_at_cut(n_cand: int, n_old: int, rate: float, significance: float, views: int) -> int:
    """The fewest candidates beyond the cut (none further out) for which ``excess_test``, corrected for
    ``views`` as the gate corrects it, reaches ``significance``: what a refused gate would have needed."""
    levels = tail_levels(n_old, rate)
    chance = chance_of_smallest(beyond_level_chance(n_old, n_cand, levels[-1]), n_old, n_cand, levels) * views
    reached = np.flatnonzero(chance <= significance)
    return int(reached[0]) if len(reached) else n_cand + 1


def enough_to_prove(n_cand: int, n_old: int, rate: float, significance: float, views: int) -> str:
    """A refused gate's last words: how many candidates beyond the cut would have switched it on."""
    needed = needed_at_cut(n_cand, n_old, rate, significance, views)
    return (f"{needed} of them beyond the cut would have been enough" if needed <= n_cand
            else f"not even all {n_cand} beyond the cut would have been enough")


def tail_counts(p_value: np.ndarray, n_old: int, levels: Sequence[int]) -> np.ndarray:
    """Per level j: the candidates beyond the j-th of ``n_old`` old rows (conformal p <= j / (n_old + 1))."""
    return np.array([int((p_value <= j / (n_old + 1) + 1e-12).sum()) for j in levels])


def excess_test(p_value: np.ndarray, n_old: int, rate: float) -> tuple[float, int, float]:
    """One-sided p-value that more candidates lie beyond the ``n_old`` old rows than old rows would put
    there: the smallest ``level_p`` over ``tail_levels``, read against its law in all-old pools
    (``chance_of_smallest``). Also the number of candidates at the cut and the number an all-old pool would
    put there."""
    n = len(p_value)
    levels = tail_levels(n_old, rate)
    observed = float(level_p(tail_counts(p_value, n_old, levels), n_old, n, levels).min())
    at_cut = int((p_value <= rate + 1e-12).sum())
    return float(chance_of_smallest(observed, n_old, n, levels)), at_cut, n * levels[-1] / (n_old + 1)


def novelty_scores(
    reference_emb: np.ndarray,
    candidate_emb: np.ndarray,
    k_folds: int = 5,
    seed: int = 0,
    C: float = 0.1,
    false_novel_rate: float = FALSE_NOVEL_RATE,
    gate_significance: float = GATE_SIGNIFICANCE,
    holdout_fraction: float = HOLDOUT_FRACTION,
    knn_k: int = KNN_K,
    knn_reference_rows: int = KNN_REFERENCE_ROWS,
    focus: float = FOCUS,
    fit_predict: FitPredict | None = None,
    keys: Sequence[str] | None = None,
    reference_rows_as_old: bool = True,
    lengths: np.ndarray | None = None,
) -> NoveltyResult:
    """Score candidates against the reference (see the module docstring); ``fit_predict`` replaces the
    logistic classifier (e.g. a fine-tuned transformer; rows index the reference, then the candidates).
    ``keys``: one per reference row, then per candidate (record ids), for ``row_draws``.
    ``reference_rows_as_old``: the kNN views' compared reference rows, each scored against the others, join
    their old rows (False: the held-out rows alone, as the classifier views have).
    ``lengths``: the characters of each row's text, reference rows then candidates; given, the combined view also
    adds up the length view's evidence (``length_likeness``).

    Each single view is read as conformal p-values against its old rows; the gate tests the one with the
    strongest excess of candidates beyond them (a small foreign minority shows in the kNN and focused views, a
    larger one teaches the plain classifier its direction), Bonferroni-corrected for the choice. The combined
    view ranks and cuts when enough held-out rows lie beyond its cut (``COMBINED_MIN_TAIL_ROWS``); otherwise
    the gate's view does."""
    ref = _as_matrix(reference_emb, "reference_emb")
    cand = _as_matrix(candidate_emb, "candidate_emb")
    n_ref, n_cand = len(ref), len(cand)
    if n_ref and n_cand and ref.shape[1] != cand.shape[1]:
        raise ValueError(f"embedding dimensions differ: reference {ref.shape[1]}, candidates {cand.shape[1]}")
    if not 0.0 < false_novel_rate < 1.0:
        raise ValueError(f"false_novel_rate must be in (0, 1), got {false_novel_rate}")
    if lengths is not None and len(lengths) != n_ref + n_cand:
        raise ValueError(f"lengths: one per reference row then candidate ({n_ref + n_cand}), got {len(lengths)}")
    if n_cand == 0:
        return _unusable(0, "no candidates", "no candidates to score", false_novel_rate)
    if n_ref == 0:
        return _unusable(n_cand, "empty reference", "reference set is empty: nothing to compare with, so no "
                         "novelty filtering is possible", false_novel_rate)
    draws = row_draws(n_ref, n_cand, keys, seed)
    held = holdout_mask(draws[:n_ref], holdout_fraction)
    n_held = int(held.sum())
    needed = math.ceil(1 / false_novel_rate - 1)
    if n_held < needed or n_ref - n_held < 2:
        return _unusable(n_cand, f"{n_held} held-out rows<{needed}", f"reference of {n_ref} rows: {n_held} held "
                         f"out, but a false-novel rate of {false_novel_rate:g} needs at least {needed} held-out rows "
                         f"and 2 left to train on", false_novel_rate)
    x = np.vstack([ref, cand])
    labels = np.r_[(~held).astype(np.int8), np.zeros(n_cand, dtype=np.int8)]
    # Rows scored like candidates: the held-out reference rows first, then the candidates.
    queries = np.r_[np.flatnonzero(held), n_ref + np.arange(n_cand)]
    train_rows = np.flatnonzero(~held)
    train_ref = ref[np.sort(train_rows[smallest_draws(draws[train_rows], knn_reference_rows)])]
    # the held-out rows are the reference's smallest draws: the pool of candidates is sampled on a redraw
    knn_all, share_all = neighbour_views(train_ref, x[queries], redraw(draws[queries], 1), knn_k,
                                         knn_reference_rows)
    # ties of the share (a multiple of 1/k) broken by the kNN similarity, a term below one step
    neighbours_all = share_all + 1e-3 * knn_all
    compared = len(train_ref)
    knn = knn_all[compared:]  # the queries'
    fit_predict = fit_predict or logistic_fit_predict(x, draws, C)
    prob, auc, folds = out_of_fold(labels, fit_predict, draws, k_folds)
    focus_rows = min(len(queries), max(FOCUS_MIN_ROWS, math.ceil(focus * len(queries))))
    focused = np.sort(queries[np.argsort(knn, kind="stable")[:focus_rows]])
    focused_prob, _, _ = out_of_fold(labels, fit_predict, draws, k_folds, fitted=np.r_[train_rows, focused])
    left_out = compared if reference_rows_as_old else 0

    def old_and_new(values: np.ndarray, reference_rows: np.ndarray = np.zeros(0)) -> tuple[np.ndarray, np.ndarray]:
        """The old rows' scores (held out, then any reference rows scored against the others), the candidates'."""
        return np.r_[values[:n_held], reference_rows], values[n_held:]

    split = {"classifier": old_and_new(prob[queries]), "focused": old_and_new(focused_prob[queries]),
             **{name: old_and_new(values[compared:], values[:left_out])
                for name, values in (("knn", knn_all), ("neighbours", neighbours_all))}}
    combined_views = COMBINED_VIEWS
    if lengths is not None:
        likeness = length_likeness(lengths, train_rows)
        # the reference rows are old rows here too, as in the kNN views (the median is the one fitted value)
        split["length"] = old_and_new(likeness[queries], likeness[train_rows] if left_out else np.zeros(0))
        combined_views += ("length",)
    p_single = {name: conformal_p(new, old) for name, (old, new) in split.items()}
    tested = {name: excess_test(p_single[name], len(split[name][0]), false_novel_rate) for name in SINGLE_VIEWS}
    gate_view = min(tested, key=lambda name: (tested[name][0], -tested[name][1]))
    gate_p, at_cut, expected = tested[gate_view]
    gate_p = min(1.0, gate_p * len(SINGLE_VIEWS))
    usable = gate_p <= gate_significance
    gate = None if usable else f"{at_cut / n_cand:.1%} novel, {false_novel_rate:.0%} expected (p={gate_p:.2g})"
    gate_null = split[gate_view][0]
    views = split | {"combined": combined_view({name: split[name][0] for name in combined_views}, p_single, n_held)}
    view = ("combined" if tail_levels(n_held, false_novel_rate)[-1] >= COMBINED_MIN_TAIL_ROWS else gate_view)
    null, scores = views[view]
    p_cand = p_single[view] if view in p_single else conformal_p(scores, null)
    share = float(novel_mask(p_cand, false_novel_rate).mean())
    message = (
        f"gate view: {gate_view} ({', '.join(f'{n} {tested[n][1]}' for n in SINGLE_VIEWS)} of {n_cand} candidates less "
        f"like the reference than {1 - false_novel_rate:.0%} of {len(gate_null)} old rows ({n_held} held-out "
        f"reference rows{'' if len(gate_null) == n_held else ' and each compared reference row against the others'}"
        f"); old rows alone would put about {expected:.0f} there; excess p={gate_p:.2g}"
        + ("" if usable else f" > {gate_significance:g}: the candidates look like the reference, no novelty "
                             f"filtering; " + enough_to_prove(n_cand, len(gate_null), false_novel_rate,
                                                              gate_significance, len(SINGLE_VIEWS))) + ")"
        + ("" if view == gate_view else f"; {'ranked and cut' if usable else 'it would be ranked and cut'} by the "
                                        f"combined view ({' + '.join(combined_views)}, against the {n_held} "
                                        f"held-out rows): {share:.1%} novel"))
    return NoveltyResult(score=scores, p_value=p_cand, holdout_score=null, auc=auc, usable=usable, gate=gate,
                         view=view, gate_view=gate_view, views={n: (c, h) for n, (h, c) in views.items()},
                         k_folds=folds, false_novel_rate=false_novel_rate, novel_share=share, gate_p=gate_p,
                         message=message)


def combined_view(nulls: dict[str, np.ndarray], p_values: dict[str, np.ndarray], n_held: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fisher's sum of log conformal p-values over the views in ``nulls`` (name -> old rows' scores; ``p_values``:
    name -> the candidates' conformal p-values against them): low = unlike the reference in every view at once.
    Only the ``n_held`` held-out rows are scored in every view, so they are the old rows here, each read against
    its view's other old rows as a candidate is against all of them."""
    old, new = np.zeros(n_held), 0.0
    for name, null in nulls.items():
        old = old + np.log(np.searchsorted(np.sort(null), null[:n_held], side="right") / len(null))
        new = new + np.log(p_values[name])
    return old, new


def length_likeness(lengths: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Minus how far each row's log text length lies from the median of the reference rows trained on, either
    way (higher = more like the reference). Another source often writes longer or shorter prompts than the
    reference (gsm8k's word problems, AlpacaEval's requests; Chinese in fewer characters), a difference the
    embedding views see only in part; the median, not fitted on the held-out rows, leaves them old rows."""
    log_length = np.log1p(np.asarray(lengths, dtype=float))
    return -np.abs(log_length - np.median(log_length[train_rows]))


def novel_mask(p_value: np.ndarray, false_novel_rate: float = FALSE_NOVEL_RATE) -> np.ndarray:
    """Candidates less like the reference than ``1 - false_novel_rate`` of the old rows (``conformal_p``)."""
    return np.asarray(p_value, dtype=float) <= false_novel_rate + 1e-12


def most_like_reference(score: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the ``top_k`` candidates most like the reference, most alike first
    (the reverse mode: find more data like the seeds)."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    return np.argsort(-np.asarray(score, dtype=float), kind="stable")[:top_k]
