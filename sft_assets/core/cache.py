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

    def _read_shards(self, shards: list[str] | None = None) -> dict[str, pl.DataFrame]:
        """Every shard still there, by name: another writer's compaction may delete one after it was
        listed, and a shard goes only once the merged file holding its rows is in place, so skipping it
        loses nothing."""
        frames = {}
        for shard in self._shards() if shards is None else shards:
            try:
                frames[shard] = self.store.read(self.namespace, shard)
            except FileNotFoundError:
                continue
        return frames

    def get(self, record_ids: list[str] | pl.Series) -> pl.DataFrame | None:
        """Cached rows for these ids (any order), or None when nothing is cached.

        Each shard's id column is read first and the rest of the shard only when it holds a wanted id:
        a run over a few hundred files asks once per file, and a file new to the cache costs a look at
        the ids, not a read of every vector cached so far. Shards never change once written (a
        compaction writes a new one), so the two reads see the same rows. The folder is listed until a
        listing shows nothing new: a listing taken while another writer compacts may miss both the shard
        it deletes and the merged one it adds."""
        wanted = pl.Series(KEY, list(record_ids), dtype=pl.String).implode()
        frames: dict[str, pl.DataFrame | None] = {}
        while True:
            unseen = [shard for shard in self._shards() if shard not in frames]
            if not unseen:
                break
            for shard in unseen:
                try:
                    if self.store.read(self.namespace, shard, columns=[KEY])[KEY].is_in(wanted).any():
                        frames[shard] = self.store.read(self.namespace, shard).filter(pl.col(KEY).is_in(wanted))
                    else:
                        frames[shard] = None
                except FileNotFoundError:
                    # another writer's compaction deleted it after the listing; it wrote the merged shard
                    # holding these rows first, so the next listing finds them
                    continue
        found = [frame for frame in frames.values() if frame is not None and frame.height]
        if not found:
            return None
        return pl.concat(found, how="vertical_relaxed").unique(KEY, keep="first", maintain_order=True)

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
        merged = pl.concat(frames.values(), how="vertical_relaxed")
        merged = merged.unique(KEY, keep="first", maintain_order=True)
        # named after the shards actually read: two writers compacting the same listing, one of which
        # found a shard already gone, must not write different rows under one name
        name = "compact-" + hashlib.sha256("".join(frames).encode()).hexdigest()[:16]
        self.store.write(merged, self.namespace, name)
        for shard in shards:
            if shard != name:
                self.store.delete(self.namespace, shard)

    def size(self) -> int:
        return sum(frame.height for frame in self._read_shards().values())
