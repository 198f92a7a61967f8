"""Resources: where raw files are, where tables go. Models live beside their stage."""

from pathlib import Path

import dagster as dg
import polars as pl

from sft_assets.core.rawfiles import DEFAULT_IGNORE, Scan, confine, resolve_in_root, scan_root
from sft_assets.core.readers import DEFAULT_CATEGORY_GLOBS, ReaderOptions, read_file
from sft_assets.core.records import empty_records
from sft_assets.core.storage import Warehouse, refresh_catalog
from sft_assets.core.vectors import EmbeddingVectors, load_vectors, write_with_vectors


class RawRoot(dg.ConfigurableResource):
    """The folder whose files are the corpus partitions."""

    root: str
    category_globs: list[str] = list(DEFAULT_CATEGORY_GLOBS)
    ignore: list[str] = list(DEFAULT_IGNORE)
    max_decompressed_bytes: int = 1 << 30
    max_record_chars: int = 1 << 20
    column_mapping: dict[str, dict[str, str]] = {}
    """Relative glob -> {field in the file: field the reader knows}, for files that name their fields otherwise,
    e.g. {"my_qa/*": {"q": "instruction", "a": "output"}}; the first glob matching a file applies."""

    def scan(self) -> Scan:
        return scan_root(self.root, tuple(self.ignore))

    def path_for(self, key: str):
        return resolve_in_root(self.root, key)

    def confine(self, path: str) -> tuple[Path, str]:
        """A path from config, resolved inside the root (and its path under it); PermissionError outside."""
        return confine(self.root, path)

    def read_all(self) -> tuple[pl.DataFrame, int]:
        """The records of every file under the root (none when the folder is missing), and how many files."""
        files = self.scan().files if Path(self.root).is_dir() else {}
        frames = [read_file(f.path, key, self.reader_options()).records for key, f in sorted(files.items())]
        return (pl.concat(frames, how="vertical_relaxed") if frames else empty_records()), len(files)

    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(
            max_decompressed_bytes=self.max_decompressed_bytes,
            max_record_chars=self.max_record_chars,
            category_globs=tuple(self.category_globs),
            column_mapping=dict(self.column_mapping),
        )


class WarehouseResource(dg.ConfigurableResource):
    """Parquet tables under ``base_uri`` (any fsspec URI) and their DuckDB catalog."""

    base_uri: str
    catalog_path: str

    def warehouse(self) -> Warehouse:
        return Warehouse(self.base_uri)

    def refresh_catalog(self) -> list[str]:
        return refresh_catalog(self.warehouse(), self.catalog_path)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Polars frames in and out of the warehouse, one file per asset and partition.

    A small IO manager of our own rather than dagster-polars: that package
    pins polars < 2, and this one needs atomic writes and a catalog refresh
    anyway. Unpartitioned assets that read a partitioned one get every
    materialized partition concatenated; a partition that never
    materialized (its file failed to read) is skipped and logged."""

    warehouse: WarehouseResource

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | dict[str, pl.DataFrame]) -> None:
        """A frame is the table of the run's one partition (or of an unpartitioned asset); a dict, one
        table per partition key, is what a step over several partitions returns (a single-run backfill)."""
        if obj is None:
            return
        store, asset = self.warehouse.warehouse(), context.asset_key.path[-1]
        if isinstance(obj, dict):
            expected = set(context.asset_partition_keys)
            if set(obj) != expected:
                raise ValueError(f"{asset}: the step returned tables for {sorted(set(obj))[:5]}, "
                                 f"not for its partitions {sorted(expected)[:5]}")
            tables = obj
        else:
            tables = {context.partition_key if context.has_partition_key else None: obj}
        new_table = not (store.partitions(asset) if None not in tables else store.exists(asset))
        for partition, frame in tables.items():
            self.write_table(store, frame, asset, partition)
        if new_table or not Path(self.warehouse.catalog_path).exists():
            self.warehouse.refresh_catalog()  # views read globs: only a new table needs a new view

    def write_table(self, store: Warehouse, frame: pl.DataFrame, asset: str, partition: str | None) -> None:
        store.write(frame, asset, partition)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        store = self.warehouse.warehouse()
        asset = context.asset_key.path[-1]
        if not context.has_asset_partitions:
            return store.read(asset)
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and context.has_partition_key:
            return store.read(asset, keys[0])
        frame = store.read_partitions(asset, materialized(context, store, asset))
        return frame if frame is not None else pl.DataFrame()


class EmbeddingsIOManager(ParquetIOManager):
    """Embedding tables: the parquet as any table (DuckDB and the data contract read it) plus its
    vectors as a float32 ``.npy`` beside it. Steps get ``EmbeddingVectors``, memory-mapped on a local
    warehouse, so a pool-wide step holds the ids and the rows it gathers, never the whole table twice.
    Partitions embedded before the ``.npy`` existed load from their parquet column."""

    def write_table(self, store: Warehouse, frame: pl.DataFrame, asset: str, partition: str | None) -> None:
        write_with_vectors(store, frame, asset, partition)

    def load_input(self, context: dg.InputContext) -> EmbeddingVectors:
        store = self.warehouse.warehouse()
        asset = context.asset_key.path[-1]
        return load_vectors(store, asset, materialized(context, store, asset))


def missing_partitions(store: Warehouse, asset: str, keys: list[str]) -> list[str]:
    """The partition keys with no table for ``asset``: a file that failed to read, or a failed scoring run."""
    return sorted(k for k in keys if not store.exists(asset, k))


def materialized(context: dg.InputContext, store: Warehouse, asset: str) -> list[str]:
    """The input's partitions that have a table; the others are logged (selection_decisions' check
    every_file_loaded lists them, and selection drops the rows whose signals they lack)."""
    keys = list(context.asset_partition_keys)
    missing = missing_partitions(store, asset, keys)
    if missing:
        context.log.warning(f"{asset}: {len(missing)} partitions not materialized, skipped: {missing[:5]}")
    return [k for k in keys if k not in set(missing)]
