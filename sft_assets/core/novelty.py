"""Novelty: which candidates look unlike the data we already have.

The seed's adversarial-validation trick: label the curated reference set 1 and
the candidates 0, train a binary classifier on their embeddings with K-fold
cross-validation, and score every candidate with a model that never saw it
(out-of-fold). A candidate the classifier confidently puts in the candidate
class (probability near 0) is unlike anything in the reference: novel. The
same scores, read from the top, find more data like the seeds.

The cross-validated ROC AUC says whether the scores mean anything: near 0.5
the classifier cannot tell the two sets apart, so there is no novelty to
filter on. Every degenerate input (no reference, too few rows to fold, sets
that are the same) gives a NaN-free result and a ``message``, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

# Below this cross-validated AUC the two sets are treated as indistinguishable.
MIN_AUC = 0.6


@dataclass(frozen=True)
class NoveltyResult:
    """Out-of-fold probabilities of looking like the reference, and how far to trust them.

    ``probability[i]`` belongs to candidate ``i`` (0 = novel, 1 = like the
    reference); ``reference_probability`` is the same for the reference rows
    (low values there are reference outliers). ``separable`` is False when no
    novelty filtering is possible, and ``message`` then says why.
    """

    probability: np.ndarray
    reference_probability: np.ndarray
    auc: float | None
    separable: bool
    k_folds: int
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


def _unusable(n_ref: int, n_cand: int, message: str) -> NoveltyResult:
    """No classifier could be trained: every candidate counts as novel (probability 0)."""
    return NoveltyResult(
        probability=np.zeros(n_cand),
        reference_probability=np.zeros(n_ref),
        auc=None,
        separable=False,
        k_folds=0,
        message=message,
    )


# fit_predict(train_rows, test_rows, labels) -> P(reference) for test_rows; rows index reference then candidates.
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def novelty_scores(
    reference_emb: np.ndarray,
    candidate_emb: np.ndarray,
    k_folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    min_auc: float = MIN_AUC,
) -> NoveltyResult:
    """Score candidates by how much they look like the reference, out of fold.

    Logistic regression on embeddings with balanced class weights (the
    reference is usually far smaller than the pool)."""
    ref = _as_matrix(reference_emb, "reference_emb")
    cand = _as_matrix(candidate_emb, "candidate_emb")
    if len(ref) and len(cand) and ref.shape[1] != cand.shape[1]:
        raise ValueError(f"embedding dimensions differ: reference {ref.shape[1]}, candidates {cand.shape[1]}")
    X = np.vstack([ref, cand]) if len(ref) and len(cand) else None

    def logistic(train: np.ndarray, test: np.ndarray, y: np.ndarray) -> np.ndarray:
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        model.fit(X[train], y[train])
        return model.predict_proba(X[test])[:, 1]

    return out_of_fold_novelty(len(ref), len(cand), logistic, k_folds=k_folds, seed=seed, min_auc=min_auc)


def out_of_fold_novelty(n_ref: int, n_cand: int, fit_predict: FitPredict, k_folds: int = 5, seed: int = 0,
                        min_auc: float = MIN_AUC) -> NoveltyResult:
    """The K-fold adversarial loop for any classifier (embedding logistic regression, a fine-tuned
    transformer): stratified folds so every fold holds both sets; when one side has fewer rows than
    ``k_folds`` the folds are reduced to that count (at least 2) and the message says so."""
    if n_ref == 0:
        return _unusable(0, n_cand, "reference set is empty: nothing to compare with, so no novelty "
                                    "filtering is possible (every candidate counts as novel)")
    if n_cand == 0:
        return _unusable(n_ref, 0, "no candidates to score")
    folds = min(k_folds, n_ref, n_cand)
    if folds < 2:
        return _unusable(n_ref, n_cand, f"cross-validation needs at least 2 rows on each side "
                                        f"(reference {n_ref}, candidates {n_cand}): no novelty filtering possible")
    notes = [] if folds == k_folds else [f"folds reduced from {k_folds} to {folds} (reference {n_ref}, "
                                         f"candidates {n_cand} rows)"]
    y = np.r_[np.ones(n_ref, dtype=np.int8), np.zeros(n_cand, dtype=np.int8)]
    oof = np.empty(len(y))
    fold_aucs = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        oof[test] = fit_predict(train, test, y)
        fold_aucs.append(roc_auc_score(y[test], oof[test]))
    auc = float(np.mean(fold_aucs))
    separable = auc >= min_auc
    if not separable:
        notes.append(f"the classifier cannot tell the candidates from the reference (cross-validated AUC "
                     f"{auc:.3f} < {min_auc}): the candidates look like the reference, no novelty filtering "
                     f"possible")
    return NoveltyResult(
        probability=oof[n_ref:],
        reference_probability=oof[:n_ref],
        auc=auc,
        separable=separable,
        k_folds=folds,
        message="; ".join(notes) or None,
    )


def novel_mask(prob: np.ndarray, threshold: float | None = None, quantile: float | None = None) -> np.ndarray:
    """Boolean mask of novel candidates: probability at most ``threshold``, or the
    lowest ``quantile`` share of candidates (exactly ``round(quantile * n)`` rows,
    ties broken by position). Give exactly one of the two."""
    prob = np.asarray(prob, dtype=float)
    if (threshold is None) == (quantile is None):
        raise ValueError("give exactly one of threshold or quantile")
    if threshold is not None:
        return prob <= threshold
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    mask = np.zeros(len(prob), dtype=bool)
    mask[np.argsort(prob, kind="stable")[: round(quantile * len(prob))]] = True
    return mask


def most_like_reference(prob: np.ndarray, top_k: int) -> np.ndarray:
    """Indices of the ``top_k`` candidates most like the reference, most alike first
    (the reverse mode: find more data like the seeds)."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    return np.argsort(-np.asarray(prob, dtype=float), kind="stable")[:top_k]
