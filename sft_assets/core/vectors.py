"""Embedding vectors by record id, gathered from per-partition matrices rather than one big table.

A pool-wide step needs the vectors of some rows (the pool, its leaders) out
of every corpus file's embeddings. Concatenating every partition into one
frame and then gathering from it holds the whole table twice. Here each
partition is its record ids plus the float32 ``.npy`` matrix the warehouse
keeps beside its parquet, memory-mapped on a local warehouse: the ids are
in memory (tens of MB at millions of rows), the vectors only once gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from sft_assets.core.embedding_cache import EMBEDDING_COLUMN, vectors_of
from sft_assets.core.storage import Warehouse


class MissingVectors(LookupError):
    """Some requested record ids have no vector (their partition is not embedded yet)."""

    def __init__(self, count: int):
        super().__init__(f"{count} record ids have no vector")
        self.count = count


@dataclass(frozen=True)
class EmbeddingVectors:
    """One (record ids, (n, d) float32 matrix) block per partition; a matrix may be an ``np.memmap``.

    An id in several blocks (the same record in two files) has the vector of the first block."""

    ids: tuple[pl.Series, ...]
    matrices: tuple[np.ndarray, ...]

    def __post_init__(self):
        if [s.len() for s in self.ids] != [m.shape[0] for m in self.matrices]:
            raise ValueError("every block needs one vector per record id")
        if len({m.shape[1] for m in self.matrices}) > 1:
            raise ValueError(f"blocks of different dimensions {sorted({m.shape[1] for m in self.matrices})}: "
                             "embeddings from more than one model")

    @property
    def dim(self) -> int:
        return self.matrices[0].shape[1] if self.matrices else 0

    def gather(self, record_ids: pl.Series) -> np.ndarray:
        """The vectors of ``record_ids``, in their order, as one in-memory (n, d) float32 array.

        Only these rows are read from the matrices; ``MissingVectors`` if any id has none."""
        found = record_ids.rename("record_id").to_frame().join(
            self._locations(), on="record_id", how="left", maintain_order="left")
        if missing := found["block"].null_count():
            raise MissingVectors(missing)
        block, row = found["block"].to_numpy(), found["row"].to_numpy()
        out = np.empty((found.height, self.dim), dtype=np.float32)
        for b in np.unique(block):
            at = np.flatnonzero(block == b)
            at = at[np.argsort(row[at], kind="stable")]  # ascending rows: a cold memmap reads sequentially
            out[at] = self.matrices[b][row[at]]
        return out

    def _locations(self) -> pl.DataFrame:
        """(record_id, block, row) for the first occurrence of every id."""
        frames = [ids.rename("record_id").to_frame().with_columns(block=pl.lit(b, pl.UInt32)).with_row_index("row")
                  for b, ids in enumerate(self.ids)]
        if not frames:
            return pl.DataFrame(schema={"row": pl.UInt32, "record_id": pl.String, "block": pl.UInt32})
        return pl.concat(frames).unique("record_id", keep="first", maintain_order=True)


def write_with_vectors(store: Warehouse, frame: pl.DataFrame, asset: str, partition: str | None) -> None:
    """The table as parquet, then its embedding column as the matrix beside it. The old matrix goes
    first: a crash between the writes leaves a table without one (read from the parquet), never a
    matrix of other rows."""
    store.delete_vectors(asset, partition)
    store.write(frame, asset, partition)
    store.write_vectors(vectors_of(frame), asset, partition)


def load_vectors(store: Warehouse, asset: str, partitions: Sequence[str]) -> EmbeddingVectors:
    """Each partition's record ids (that parquet column only) and its matrix, in sorted partition order.

    A partition without a matrix that fits its table (written before matrices were, or cut off between
    the two writes) gives its parquet embedding column instead: no re-embedding after an upgrade."""
    ids, matrices = [], []
    for key in sorted(partitions):
        record_ids = store.read(asset, key, columns=["record_id"])["record_id"]
        matrix = store.read_vectors(asset, key)
        if matrix is None or matrix.shape[0] != record_ids.len():
            matrix = vectors_of(store.read(asset, key, columns=[EMBEDDING_COLUMN]))
        ids.append(record_ids)
        matrices.append(matrix)
    return EmbeddingVectors(tuple(ids), tuple(matrices))
