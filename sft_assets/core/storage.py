"""The warehouse: one parquet file per asset and partition under a base URI.

The base is a local folder by default and any fsspec URI (``s3://``,
``gs://``, ``memory://``) by configuration. Writes go to a temporary name and
are renamed into place, so a reader sees a whole file or none. A table may
have a ``.npy`` matrix beside its parquet (``write_vectors``): the same rows,
memory-mapped on read where the base is local. The DuckDB
catalog is a file of views over the parquet globs; it is rebuilt into a new
file and swapped in, so it never holds a write lock that a reader could trip on.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import quote, unquote

import numpy as np
import polars as pl
from upath import UPath

PARQUET = ".parquet"
NPY = ".npy"


def encode_partition(key: str) -> str:
    """A partition key as one safe file name (keys are relative paths with '/')."""
    return quote(key, safe="")


def decode_partition(name: str) -> str:
    return unquote(name)


def atomic_write(target: str | os.PathLike, write: Callable[[BinaryIO], object]) -> UPath:
    """Write a file under a temporary name, then rename it into place: a reader sees all of it or none.
    Works on any fsspec URI (on object stores the final move is a single put)."""
    target = UPath(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
        if target.protocol in ("", "file", "local"):
            os.replace(tmp.path, target.path)
        else:
            tmp.fs.mv(tmp.path, target.path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return target


class Warehouse:
    """Parquet tables addressed by (asset name, optional partition key)."""

    def __init__(self, base: str | os.PathLike):
        self.base = UPath(base)

    @property
    def is_local(self) -> bool:
        return self.base.protocol in ("", "file", "local")

    def table_dir(self, asset: str) -> UPath:
        return self.base / asset

    def path(self, asset: str, partition: str | None = None, suffix: str = PARQUET) -> UPath:
        if partition is None:
            return self.base / f"{asset}{suffix}"
        return self.table_dir(asset) / f"{encode_partition(partition)}{suffix}"

    def write(self, frame: pl.DataFrame, asset: str, partition: str | None = None) -> UPath:
        return atomic_write(self.path(asset, partition),
                            lambda fh: frame.write_parquet(fh, compression="zstd", statistics=True))

    def exists(self, asset: str, partition: str | None = None) -> bool:
        return self.path(asset, partition).exists()

    def read(self, asset: str, partition: str | None = None, columns: list[str] | None = None) -> pl.DataFrame:
        """The table, or only ``columns`` of it. Read through one open handle, never by path: polars
        opens a path more than once and could mix two versions of a file replaced meanwhile."""
        with self.path(asset, partition).open("rb") as fh:
            return pl.read_parquet(fh, columns=columns)

    def write_vectors(self, vectors: np.ndarray, asset: str, partition: str | None = None) -> UPath:
        """A 2-d float32 matrix beside the table's parquet, in the parquet's row order."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        return atomic_write(self.path(asset, partition, NPY), lambda fh: np.save(fh, matrix, allow_pickle=False))

    def read_vectors(self, asset: str, partition: str | None = None) -> np.ndarray | None:
        """The matrix beside the table (None if there is none): an ``np.memmap`` on a local base, so only
        the rows a caller touches are read; an object store cannot be mapped, so there it is read whole."""
        target = self.path(asset, partition, NPY)
        if not target.exists():
            return None
        if self.is_local:
            return np.load(target.path, mmap_mode="r", allow_pickle=False)
        with target.open("rb") as fh:
            return np.load(fh, allow_pickle=False)

    def read_partitions(self, asset: str, partitions: list[str] | None = None) -> pl.DataFrame | None:
        """Concatenate the given partitions (all present ones when None); None if there are none."""
        keys = self.partitions(asset) if partitions is None else [p for p in partitions if self.exists(asset, p)]
        frames = [self.read(asset, key) for key in sorted(keys)]
        if not frames:
            return None
        return pl.concat(frames, how="diagonal_relaxed")

    def partitions(self, asset: str) -> list[str]:
        folder = self.table_dir(asset)
        if not folder.exists():
            return []
        return sorted(
            decode_partition(p.name[: -len(PARQUET)])
            for p in folder.iterdir()
            if p.name.endswith(PARQUET) and not p.name.startswith(".")
        )

    def delete(self, asset: str, partition: str | None = None) -> bool:
        """Remove the table and its vectors; True if the table was there."""
        self.delete_vectors(asset, partition)
        try:
            self.path(asset, partition).unlink()
        except FileNotFoundError:  # never there, or another writer removed it first
            return False
        return True

    def delete_vectors(self, asset: str, partition: str | None = None) -> None:
        self.path(asset, partition, NPY).unlink(missing_ok=True)

    def delete_partition(self, partition: str) -> list[str]:
        """Remove one partition from every partitioned table; returns the tables it was in."""
        return [asset for asset, partitioned in self.assets() if partitioned and self.delete(asset, partition)]

    def assets(self) -> list[tuple[str, bool]]:
        """(asset name, partitioned) for every table with data."""
        if not self.base.exists():
            return []
        found = []
        for entry in sorted(self.base.iterdir(), key=lambda p: p.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and any(p.name.endswith(PARQUET) for p in entry.iterdir()):
                found.append((entry.name, True))
            elif entry.name.endswith(PARQUET):
                found.append((entry.name[: -len(PARQUET)], False))
        return found


def refresh_catalog(warehouse: Warehouse, catalog_path: str | os.PathLike) -> list[str]:
    """Rebuild the DuckDB catalog: one view per asset over its parquet files.

    Built in a new file and renamed over the old one: a DuckDB shell that has
    the old catalog open keeps reading it and never blocks this. Returns the
    view names; a warehouse on object storage has no local catalog.
    """
    import duckdb

    if not warehouse.is_local:
        return []
    target = Path(catalog_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    views = []
    con = duckdb.connect(str(tmp))
    try:
        for asset, partitioned in warehouse.assets():
            pattern = (
                f"{warehouse.table_dir(asset).path}/*{PARQUET}" if partitioned else warehouse.path(asset).path
            )
            con.execute(
                f"CREATE VIEW \"{asset}\" AS SELECT * FROM read_parquet('{_sql_str(pattern)}', union_by_name=true)"
            )
            views.append(asset)
    finally:
        con.close()
    os.replace(tmp, target)
    return views


def _sql_str(text: str) -> str:
    return text.replace("'", "''")
