"""Exact and near deduplication of records by the text that stands for them.

Exact: a hash of a normalized form, so copies that differ only in case,
punctuation or spacing collide. Near: one-pass (leader) clustering, the
seed document's "filter with one-pass clustering". Rows are taken in order;
a row becomes a leader unless an earlier leader has cosine >= threshold, in
which case it joins the most similar such leader. Only leaders are kept.

The near pass is exact for the threshold: every pair is either ruled out by a
proven upper bound or compared at full precision, so no match is missed the
way an approximate neighbour index can miss one. The bound (dense vectors):
project on the top principal directions and append the residual norm as one
more coordinate; by Cauchy-Schwarz the dot product of two such sketches is >=
the true cosine, so a cheap low-dimensional product discards almost all pairs
and only the survivors are compared in full.

Relation to ``semhash`` 0.5 ``self_deduplicate`` (read from its source): it
first groups rows whose text is byte-identical and indexes one vector per
group; then, in input order, a group is dropped when one of the selected
groups reached through its approximate neighbours (usearch HNSW, top 100,
re-asked for 1000 when full; vectors stored as bf16 where the CPU supports
it; kept if distance < 1 - threshold) has exact float32 cosine >= threshold,
and it points at the most similar of them. That is this leader rule, so the
kept sets are equal whenever the index returns every earlier leader within
the threshold: on alpaca_en at 0.9 both keep the same 29,406 rows. Where
the index misses one (recall, bf16 rounding at the threshold), semhash keeps
a row the exact rule drops, and that row can then absorb a later row the
exact rule keeps. Byte-identical copies are dropped by semhash without a
comparison and point at their first copy's leader; here they are compared
like any row (cosine 1) and may point at a more similar leader that came
after the first copy:
same kept set, possibly another pointer.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

METHODS = ("embedding", "tfidf")
TEXT_ONLY_METHODS = ("tfidf",)  # clusters that follow from the texts alone (embeddings depend on a model)
SKETCH_DIMS = 48  # principal directions in the pruning sketch (plus one residual coordinate)
_BOUND_SLACK = 1e-4  # covers float32 rounding in the sketch products
_DENSE_FALLBACK = 16  # confirm by a full product when over 1/16 of the pairs survive the bound
_COLUMN_CHUNK = 2048  # leaders per product: a block x chunk tile stays in cache
_ROW_CHUNK = 16384  # rows per step when sketching, to bound memory
_BASIS_SAMPLE = 8192  # rows the principal directions are estimated from

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def normalize_for_exact(text: str) -> str:
    """NFKC, casefolded, punctuation turned into spaces, white space collapsed.

    Punctuation becomes a space rather than nothing, so "a,b" and "a, b" agree;
    the price is that "don't" and "dont" do not."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation_to_space())
    return " ".join(folded.split())


def exact_key(text: str) -> str:
    """Hash of ``normalize_for_exact``: re-cased and re-punctuated copies get the same key."""
    return hashlib.blake2b(normalize_for_exact(text).encode("utf-8"), digest_size=16).hexdigest()


def exact_duplicate_of(ids: Sequence[str], texts: Sequence[str]) -> list[str | None]:
    """For each row, the id of the first row with the same ``exact_key``, or None for that first row."""
    first: dict[str, str] = {}
    out: list[str | None] = []
    for rid, text in zip(ids, texts, strict=True):
        key = exact_key(text)
        out.append(first.get(key))
        first.setdefault(key, rid)
    return out


def tfidf_vectors(texts: Sequence[str]) -> sp.csr_matrix:
    """L2-normalized TF-IDF over character 2-4-grams: word-free, so Chinese works as well as English."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, dtype=np.float32)
    return vectorizer.fit_transform(texts).tocsr()


def leader_clusters(vectors, threshold: float = 0.9, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One-pass leader clustering of L2-normalized rows (dense array or scipy sparse matrix).

    Returns ``leader_index`` (a leader points at itself) and ``similarity``
    (cosine to the leader; 1.0 for leaders). Rows are compared a block at a
    time against all leaders so far, then resolved in order inside the block.

    BLAS runs on one thread: the work is hundreds of mid-sized products, and
    OpenBLAS threads spin-wait on each other, which on shared cores (parallel
    Dagster steps, other processes) made this 4-6x slower than one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _leader_clusters(vectors, threshold, block)


def _leader_clusters(vectors, threshold: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    n = vectors.shape[0]
    find = _sparse_pairs(vectors, threshold) if sp.issparse(vectors) else _dense_pairs(vectors, threshold)
    leader_index = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, dtype=np.float32)
    leaders = np.empty(n, dtype=np.int64)
    n_leaders = 0
    for lo in range(0, n, block):
        rows = np.arange(lo, min(lo + block, n))
        prev_r, prev_c, prev_s = find(rows, leaders[:n_leaders])
        in_r, in_c, in_s = find(rows, rows)
        earlier = in_c < in_r
        cand_r = np.concatenate([prev_r, in_r[earlier]])
        cand_c = np.concatenate([leaders[prev_c], rows[in_c[earlier]]])
        cand_s = np.concatenate([prev_s, in_s[earlier]])
        _resolve_block(lo, cand_r, cand_c, cand_s, leader_index, similarity)
        new = rows[leader_index[rows] == rows]
        leaders[n_leaders : n_leaders + new.size] = new
        n_leaders += new.size
    return leader_index, similarity


def near_duplicate_clusters(
    method: str = "embedding",
    *,
    embeddings: np.ndarray | None = None,
    texts: Sequence[str] | None = None,
    threshold: float = 0.9,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """``leader_clusters`` on sentence embeddings (``embedding``) or character TF-IDF of the texts (``tfidf``)."""
    if method == "embedding":
        if embeddings is None:
            raise ValueError("method 'embedding' needs embeddings")
        return leader_clusters(embeddings, threshold, block)
    if method == "tfidf":
        if texts is None:
            raise ValueError("method 'tfidf' needs texts")
        return leader_clusters(tfidf_vectors(texts), threshold, block)
    raise ValueError(f"unknown near-dedup method {method!r}; expected one of {METHODS}")


def clustering_key(method: str, threshold: float, version: str, texts: Sequence[str]) -> str:
    """What a part's clusters follow from: the rule and a digest of its ordered texts."""
    digest = hashlib.blake2b("\x00".join(texts).encode(), digest_size=8).hexdigest()
    return f"{method}, cosine >= {threshold}, v{version}, texts {digest}"


def previous_clusters(previous: pl.DataFrame | None, key: str, ids: pl.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """The clusters an earlier near-dedup table holds for rows ``ids`` under ``key`` (``clustering_key``),
    as ``leader_clusters`` returns them; None when it holds none for exactly these rows in this order.
    The leader rule depends only on the rule and the ordered texts, so equal keys give equal clusters."""
    if previous is None or "clustered_by" not in previous.columns:
        return None
    before = previous.filter(pl.col("clustered_by") == key)
    if not before["record_id"].equals(ids):
        return None
    position = pl.DataFrame({"leader_id": ids, "leader": np.arange(ids.len())})
    leader = before.select("leader_id").join(position, on="leader_id", how="left", maintain_order="left")["leader"]
    return leader.to_numpy(), before["similarity"].to_numpy().astype(np.float32)


def _resolve_block(lo, cand_r, cand_c, cand_s, leader_index, similarity) -> None:
    """Walk the block's rows that have matches in order; each joins its most similar leader.

    Earlier rows of the same block are candidates only if they became
    leaders, which is known by the time a later row is reached."""
    order = np.lexsort((-cand_s, cand_r))
    decided = -1
    for r, c, s in zip(cand_r[order].tolist(), cand_c[order].tolist(), cand_s[order].tolist()):
        row = lo + r
        if row == decided or leader_index[c] != c:
            continue
        leader_index[row] = c
        similarity[row] = s
        decided = row


def _dense_pairs(x: np.ndarray, threshold: float) -> Callable[[np.ndarray, np.ndarray], Pairs]:
    """Pairs (row, column position, cosine) with cosine >= threshold, pruned by the sketch bound.

    Tiles are block x _COLUMN_CHUNK, small enough to stay in cache, written
    into one reused buffer."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    sketch = _sketch(x)
    probe, cutoff = (x, threshold) if sketch is None else (sketch, threshold - _BOUND_SLACK)
    scratch = np.empty(0, dtype=np.float32)

    def find(rows: np.ndarray, cols: np.ndarray) -> Pairs:
        nonlocal scratch
        parts = []
        for start in range(0, cols.size, _COLUMN_CHUNK):
            chunk = cols[start : start + _COLUMN_CHUNK]
            if scratch.size < rows.size * chunk.size:
                scratch = np.empty(rows.size * chunk.size, dtype=np.float32)
            tile = scratch[: rows.size * chunk.size].reshape(rows.size, chunk.size)
            np.matmul(probe[rows], probe[chunk].T, out=tile)
            flat = np.flatnonzero(tile >= cutoff)
            exact = sketch is None
            if not exact and flat.size * _DENSE_FALLBACK > tile.size:
                np.matmul(x[rows], x[chunk].T, out=tile)
                flat, exact = np.flatnonzero(tile >= threshold), True
            r, c = np.divmod(flat, chunk.size)
            s = tile.ravel()[flat] if exact else np.einsum("ij,ij->i", x[rows[r]], x[chunk[c]])
            keep = s >= threshold
            parts.append((r[keep], c[keep] + start, s[keep]))
        return _concat(parts)

    return find


def _sketch(x: np.ndarray) -> np.ndarray | None:
    """[projection on the top principal directions, residual norm]: sketch . sketch' >= x . x'.

    The directions come from a sample (they only decide how much is pruned,
    never whether the bound holds). None when the vectors are too short for a
    sketch to pay."""
    if x.shape[1] <= 2 * SKETCH_DIMS or x.shape[0] == 0:
        return None
    sample = x[:: max(1, x.shape[0] // _BASIS_SAMPLE)]
    _, basis = np.linalg.eigh(sample.T @ sample)
    basis = np.ascontiguousarray(basis[:, -SKETCH_DIMS:])
    out = np.empty((x.shape[0], SKETCH_DIMS + 1), dtype=np.float32)
    for lo in range(0, x.shape[0], _ROW_CHUNK):
        rows = x[lo : lo + _ROW_CHUNK]
        proj = rows @ basis
        out[lo : lo + _ROW_CHUNK, :SKETCH_DIMS] = proj
        out[lo : lo + _ROW_CHUNK, SKETCH_DIMS] = np.linalg.norm(rows - proj @ basis.T, axis=1)
    return out


def _sparse_pairs(x: sp.spmatrix, threshold: float) -> Callable[[np.ndarray, np.ndarray], Pairs]:
    x = sp.csr_matrix(x, dtype=np.float32)

    def find(rows: np.ndarray, cols: np.ndarray) -> Pairs:
        parts = []
        for start in range(0, cols.size, _COLUMN_CHUNK):
            chunk = cols[start : start + _COLUMN_CHUNK]
            prod = (x[rows] @ x[chunk].T).tocoo()
            keep = prod.data >= threshold
            parts.append((prod.row[keep].astype(np.int64), prod.col[keep].astype(np.int64) + start, prod.data[keep]))
        return _concat(parts)

    return find


def _over_threshold(sims: np.ndarray, threshold: float) -> Pairs:
    r, c = np.nonzero(sims >= threshold)
    return r, c, sims[r, c]


def _concat(parts: list[Pairs]) -> Pairs:
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return tuple(np.concatenate(p) for p in zip(*parts))
