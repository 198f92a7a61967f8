"""Topic categories for long-tail balancing.

Rows that come with a category (file name, subject) keep it. The rest are
clustered on their embeddings with MiniBatchKMeans, and each cluster is named
by its most distinctive terms: class-based TF-IDF, where a cluster's texts
form one document, so a term scores high when it is frequent in this cluster
and rare in the others. Terms are English words and Chinese character
bigrams, so labels read well for both languages.

When the pool grows a little, rows can instead join the nearest of the
previous clusters' centroids (``centroids_of``) without a refit: a refit,
even one started from those centroids, moved 13-20 % of the old rows to
another topic, and K-Center's per-category floors would then reshuffle picks the
new data does not touch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from sft_assets.core.embed import l2_normalize

MAX_TOPICS = 64  # beyond this, topics get too small to balance on and too many to read
LABEL_TERMS = 3
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def default_topic_count(n: int) -> int:
    """sqrt(n/2), the classic rule of thumb for k, clamped to [1, MAX_TOPICS] and to n."""
    return max(1, min(MAX_TOPICS, n, round(math.sqrt(n / 2))))


def topic_clusters(
    emb: np.ndarray,
    known_category: Sequence[str | None],
    texts: Sequence[str],
    k: int | None = None,
    seed: int = 0,
    centroids: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray, list[str | None]]:
    """Per row: ``category`` (the known one, else ``"topic <id>: <label>"``), ``cluster_id``
    (-1 where the category was known) and ``label`` (the cluster's top terms; None where known).

    ``centroids``: (k, d) centroids of earlier clusters; each row joins the nearest one (cosine on
    unit vectors) instead of a new k-means fit. Ignored unless it has as many rows as the k in force.
    Deterministic for a given ``seed``."""
    n = len(known_category)
    if not (emb.shape[0] == len(texts) == n):
        raise ValueError(f"{emb.shape[0]} embeddings, {len(texts)} texts, {n} categories")
    category = [c or "" for c in known_category]
    cluster_id = np.full(n, -1, dtype=np.int64)
    label: list[str | None] = [None] * n
    unknown = np.array([i for i, c in enumerate(category) if not c], dtype=np.int64)
    if unknown.size == 0:
        return category, cluster_id, label
    k = min(k or default_topic_count(unknown.size), unknown.size)
    vectors = np.asarray(emb, dtype=np.float32)[unknown]
    if centroids is not None and centroids.shape == (k, emb.shape[1]):
        cluster_id[unknown] = np.argmax(vectors @ l2_normalize(centroids).T, axis=1)
    else:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048)
        cluster_id[unknown] = model.fit_predict(vectors)
    names = cluster_labels([texts[i] for i in unknown], cluster_id[unknown], k)
    for i in unknown.tolist():
        label[i] = names[cluster_id[i]]
        category[i] = f"topic {cluster_id[i]}: {label[i]}" if label[i] else f"topic {cluster_id[i]}"
    return category, cluster_id, label


def centroids_of(emb: np.ndarray, cluster_id: np.ndarray) -> np.ndarray | None:
    """Mean vector of each cluster 0..k-1 (rows with id -1 ignored), or None if some cluster has no row."""
    cluster_id = np.asarray(cluster_id, dtype=np.int64)
    member = cluster_id >= 0
    if not member.any():
        return None
    counts = np.bincount(cluster_id[member])
    if (counts == 0).any():
        return None
    sums = np.zeros((counts.size, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, cluster_id[member], np.asarray(emb, dtype=np.float64)[member])
    return (sums / counts[:, None]).astype(np.float32)


def terms(text: str) -> list[str]:
    """English words (3+ letters, no stop words) and Chinese character bigrams."""
    lowered = text.lower()
    words = [w for w in _WORD.findall(lowered) if w not in ENGLISH_STOP_WORDS]
    bigrams = [run[i : i + 2] for run in _CJK_RUN.findall(lowered) for i in range(max(len(run) - 1, 1))]
    return words + bigrams


def cluster_labels(texts: Sequence[str], cluster_id: np.ndarray, k: int) -> list[str]:
    """Top class-based TF-IDF terms of each of the k clusters, joined by ", " ("" for a cluster without terms)."""
    docs = [[] for _ in range(k)]
    for text, cid in zip(texts, cluster_id.tolist(), strict=True):
        docs[cid].append(text)
    vectorizer = TfidfVectorizer(analyzer=terms, sublinear_tf=True)
    try:
        scores = vectorizer.fit_transform(["\n".join(d) for d in docs]).tocsr()
    except ValueError:  # no terms at all: digits, symbols or empty texts only
        return [""] * k
    vocab = vectorizer.get_feature_names_out()
    out = []
    for lo, hi in zip(scores.indptr[:-1], scores.indptr[1:]):
        best = np.argsort(-scores.data[lo:hi], kind="stable")[:LABEL_TERMS]
        out.append(", ".join(vocab[j] for j in scores.indices[lo:hi][best]))
    return out
