"""A row cache for expensive per-record results (embeddings, perplexities).

Keyed by ``record_id`` inside a namespace that names the model and settings,
so a different model never sees another's rows. Each ``put`` writes one new
shard (atomic rename), so a killed run leaves whole shards or none: the cache
never holds partial rows. ``compact`` merges shards when they pile up.
"""

from __future__ import annotations

import hashlib
import re

import polars as pl

from sft_assets.core.storage import Warehouse

KEY = "record_id"
MAX_SHARDS = 64


def namespace_for(kind: str, *parts: str) -> str:
    """A readable, file-safe namespace: ``embeddings-all-MiniLM-L6-v2-3f2a9c1d``."""
    text = "|".join(parts)
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", parts[0].rstrip("/").split("/")[-1])[:48] if parts else ""
    return f"{kind}-{label}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class RowCache:
    def __init__(self, base_uri: str, namespace: str):
        self.store = Warehouse(base_uri)
        self.namespace = namespace

    def _shards(self) -> list[str]:
        return self.store.partitions(self.namespace)

    def _read_shards(self, shards: list[str] | None = None) -> list[pl.DataFrame]:
        """Every shard still there: another writer's compaction may delete one after it was listed, and a
        shard goes only once the merged file holding its rows is in place, so skipping it loses nothing."""
        frames = []
        for shard in self._shards() if shards is None else shards:
            try:
                frames.append(self.store.read(self.namespace, shard))
            except FileNotFoundError:
                continue
        return frames

    def get(self, record_ids: list[str] | pl.Series) -> pl.DataFrame | None:
        """Cached rows for these ids (any order), or None when nothing is cached."""
        wanted = pl.Series(KEY, list(record_ids), dtype=pl.String)
        frames = [f.filter(pl.col(KEY).is_in(wanted.implode())) for f in self._read_shards()]
        frames = [f for f in frames if f.height]
        if not frames:
            return None
        return pl.concat(frames, how="vertical_relaxed").unique(KEY, keep="first", maintain_order=True)

    def put(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        ids = "".join(sorted(frame[KEY].to_list()))
        shard = hashlib.sha256(ids.encode()).hexdigest()[:16]
        self.store.write(frame, self.namespace, shard)
        if len(self._shards()) > MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one; the old shards go only after the merged one is in place."""
        shards = self._shards()
        if len(shards) <= 1:
            return
        frames = self._read_shards(shards)
        if not frames:
            return
        merged = pl.concat(frames, how="vertical_relaxed")
        merged = merged.unique(KEY, keep="first", maintain_order=True)
        name = "compact-" + hashlib.sha256("".join(shards).encode()).hexdigest()[:16]
        self.store.write(merged, self.namespace, name)
        for shard in shards:
            if shard != name:
                self.store.delete(self.namespace, shard)

    def size(self) -> int:
        return sum(frame.height for frame in self._read_shards())
