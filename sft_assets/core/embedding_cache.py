"""Embeddings through the row cache: a row is embedded once per model.

Kept apart from ``embed`` so that module stays free of polars. Cache rows are
``record_id``, ``model_id`` and ``embedding`` (a fixed-size float32 array,
``pl.Array(pl.Float32, d)``). ``model_id`` is stored and checked on read, so a
cache opened under the wrong namespace never hands out another model's vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from sft_assets.core.embed import Progress, embed_texts

EMBEDDING_COLUMN = "embedding"


def embeddings_frame(record_ids: Sequence[str], vectors: np.ndarray, model_id: str) -> pl.DataFrame:
    """One row per record: the layout of cache rows (and of embedding tables)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return pl.DataFrame(
        {
            "record_id": pl.Series(list(record_ids), dtype=pl.String),
            "model_id": pl.Series([model_id] * len(record_ids), dtype=pl.String),
            EMBEDDING_COLUMN: pl.Series(vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])),
        }
    )


def vectors_of(frame: pl.DataFrame) -> np.ndarray:
    """The ``embedding`` column as an (n, d) float32 array."""
    return np.ascontiguousarray(frame[EMBEDDING_COLUMN].to_numpy(), dtype=np.float32)


def embed_with_cache(
    record_ids: Sequence[str],
    texts: Sequence[str],
    model,
    model_id: str,
    cache,
    batch_size: int = 128,
    progress: Progress | None = None,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for all rows in input order, and how many rows had to be embedded.

    Only ids the cache (anything with ``get(ids) -> frame | None`` and
    ``put(frame)``, e.g. ``RowCache``) lacks for this ``model_id`` are
    embedded, each distinct text once (corpora repeat instructions under
    different ids), and the new rows are put back."""
    ids = list(record_ids)
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} record ids for {len(texts)} texts")
    row_of: dict[str, int] = {}
    blocks: list[np.ndarray] = []
    cached = cache.get(ids) if ids else None
    if cached is not None:
        cached = cached.filter(pl.col("model_id") == model_id)
        row_of = {rid: j for j, rid in enumerate(cached["record_id"].to_list())}
        blocks.append(vectors_of(cached))
    missing: dict[str, str] = {}
    for rid, text in zip(ids, texts):
        if rid not in row_of:
            missing.setdefault(rid, text)
    if missing:
        distinct = list(dict.fromkeys(missing.values()))
        position = {text: j for j, text in enumerate(distinct)}
        fresh = embed_texts(model, distinct, batch_size, progress, max_tokens)
        fresh = fresh[[position[text] for text in missing.values()]]
        cache.put(embeddings_frame(list(missing), fresh, model_id))
        offset = sum(b.shape[0] for b in blocks)
        row_of.update((rid, offset + j) for j, rid in enumerate(missing))
        blocks.append(fresh)
    if not ids:
        return np.empty((0, model.get_embedding_dimension()), dtype=np.float32), 0
    return np.concatenate(blocks)[[row_of[rid] for rid in ids]], len(missing)
