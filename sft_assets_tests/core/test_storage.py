"""Warehouse writes are atomic, work on non-local fsspec filesystems, and the catalog never locks readers."""

import duckdb
import polars as pl

from sft_assets.core.cache import RowCache, namespace_for
from sft_assets.core.rawfiles import diff_scan, partition_key, relpath_of, resolve_in_root, scan_root
from sft_assets.core.storage import Warehouse, refresh_catalog


def test_partition_keys_round_trip_odd_names():
    for rel in ["zh/代码 问题.json", "a...b/c%41.csv", "tab\there.json", "semi;colon $(x)&.jsonl"]:
        key = partition_key(rel)
        assert "..." not in key and "\t" not in key
        assert relpath_of(key) == rel


def test_memory_filesystem_warehouse():
    store = Warehouse("memory://warehouse-test")
    frame = pl.DataFrame({"record_id": ["a", "b"], "x": [1, 2]})
    store.write(frame, "raw_records", "dir/file.json")
    store.write(frame.head(1), "raw_records", "other.json")
    assert store.partitions("raw_records") == ["dir/file.json", "other.json"]
    assert store.read_partitions("raw_records").height == 3
    assert store.delete_partition("dir/file.json") == ["raw_records"]
    assert store.partitions("raw_records") == ["other.json"]
    assert not any(p.name.endswith(".tmp") for p in store.table_dir("raw_records").iterdir())


def test_catalog_is_swapped_while_a_reader_holds_it(tmp_path):
    store = Warehouse(tmp_path / "warehouse")
    store.write(pl.DataFrame({"record_id": ["a"]}), "raw_records", "one.json")
    catalog = tmp_path / "catalog.duckdb"
    refresh_catalog(store, catalog)
    reader = duckdb.connect(str(catalog), read_only=True)
    store.write(pl.DataFrame({"record_id": ["b"]}), "raw_records", "two.json")
    store.write(pl.DataFrame({"n": [1]}), "pool")
    assert refresh_catalog(store, catalog) == ["pool", "raw_records"]  # no "database is locked"
    assert reader.execute("SELECT count(*) FROM raw_records").fetchone()[0] == 2  # views read the globs
    reader.close()  # duckdb shares one open database per path inside a process
    fresh = duckdb.connect(str(catalog), read_only=True)
    assert fresh.execute("SELECT n FROM pool").fetchone()[0] == 1


def test_row_cache_keeps_whole_shards(tmp_path):
    cache = RowCache(str(tmp_path), namespace_for("embeddings", "all-MiniLM-L6-v2", "384"))
    assert cache.get(["a"]) is None
    cache.put(pl.DataFrame({"record_id": ["a", "b"], "v": [1.0, 2.0]}))
    cache.put(pl.DataFrame({"record_id": ["c"], "v": [3.0]}))
    assert sorted(cache.get(["a", "c", "z"])["record_id"]) == ["a", "c"]
    cache.compact()
    assert cache.size() == 3 and len(cache._shards()) == 1


def test_scan_confines_links_and_diff_detects_content_changes(tmp_path):
    root = tmp_path / "raw"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.json").write_text("[]")
    (root / "LICENSE").write_text("not data")
    outside = tmp_path / "secret.json"
    outside.write_text("[]")
    (root / "link.json").symlink_to(outside)
    scan = scan_root(root)
    assert list(scan.files) == ["sub/a.json"] and "link.json" in scan.refused
    first = diff_scan({}, scan)
    assert first.added == ["sub/a.json"]
    (root / "sub" / "a.json").touch()
    assert diff_scan(first.state, scan_root(root)).changed == []  # touched, same content
    (root / "sub" / "a.json").write_text("[1]")
    assert diff_scan(first.state, scan_root(root)).changed == ["sub/a.json"]
    try:
        resolve_in_root(root, "../secret.json")
    except PermissionError:
        pass
    else:
        raise AssertionError("a key outside the root resolved")
