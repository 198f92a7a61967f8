"""Embedding vectors gathered by record id from per-partition .npy matrices equal the parquet column's."""

import uuid

import numpy as np
import polars as pl
import pytest
from upath import UPath

from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.embedding_cache import embeddings_frame, vectors_of
from sft_assets.core.records import embedding_texts
from sft_assets.core.storage import NPY, Warehouse
from sft_assets.core.vectors import EmbeddingVectors, MissingVectors, load_vectors, write_with_vectors

FILES = ("self_instruct/seed_tasks.jsonl", "cmmlu/dev/agronomy.csv", "zh_categories/glm问题数据.json")


@pytest.fixture(scope="module")
def tables(read_corpus) -> dict[str, pl.DataFrame]:
    """Real MiniLM embedding tables of three small corpus files, keyed by partition."""
    model = load_sentence_model("default", "cpu")
    out = {}
    for relpath in FILES:
        records = read_corpus(relpath).records
        out[relpath] = embeddings_frame(records["record_id"].to_list(),
                                        embed_texts(model, embedding_texts(records)), "default")
    return out


def _warehouse(base, tables) -> Warehouse:
    store = Warehouse(base)
    for key, frame in tables.items():
        write_with_vectors(store, frame, "embeddings", key)
    return store


def _expected(tables, ids: pl.Series) -> np.ndarray:
    """The old way: every partition concatenated, the first row of each id gathered from the parquet column."""
    whole = pl.concat([tables[k] for k in sorted(tables)]).unique("record_id", keep="first", maintain_order=True)
    return vectors_of(ids.rename("record_id").to_frame().join(whole, on="record_id", maintain_order="left"))


def _pool(tables, seed=0) -> pl.Series:
    """A shuffled subset of the ids of every partition: what a pool-wide step gathers."""
    ids = pl.concat([f["record_id"] for f in tables.values()]).unique(maintain_order=True)
    return ids.sample(fraction=0.6, shuffle=True, seed=seed)


def test_local_matrices_are_memory_mapped_and_gather_only_the_pool(tmp_path, tables):
    store = _warehouse(tmp_path / "warehouse", tables)
    key = FILES[0]
    assert store.partitions("embeddings") == sorted(FILES)  # the .npy is no partition and no DuckDB table
    assert np.array_equal(np.load(store.path("embeddings", key, NPY).path), vectors_of(tables[key]))
    loaded = load_vectors(store, "embeddings", store.partitions("embeddings"))
    assert all(type(m) is np.memmap for m in loaded.matrices)
    pool = _pool(tables)
    gathered = loaded.gather(pool)
    assert type(gathered) is np.ndarray and gathered.shape == (pool.len(), 384) and gathered.dtype == np.float32
    assert np.array_equal(gathered, _expected(tables, pool))


def test_a_partition_without_vectors_loads_from_its_parquet(tmp_path, tables):
    store = _warehouse(tmp_path / "warehouse", tables)
    old, cut_off = FILES[0], FILES[1]
    store.delete_vectors("embeddings", old)  # embedded before .npy files were written
    store.write_vectors(vectors_of(tables[cut_off])[:-1], "embeddings", cut_off)  # a matrix of other rows
    loaded = load_vectors(store, "embeddings", sorted(FILES))
    kinds = {key: type(m) for key, m in zip(sorted(FILES), loaded.matrices)}
    assert kinds == {old: np.ndarray, cut_off: np.ndarray, FILES[2]: np.memmap}
    pool = _pool(tables, seed=1)
    assert np.array_equal(loaded.gather(pool), _expected(tables, pool))


def test_object_storage_reads_the_matrices_whole(tables):
    base = UPath(f"memory://vectors-{uuid.uuid4().hex}")
    try:
        store = _warehouse(base / "warehouse", tables)
        loaded = load_vectors(store, "embeddings", sorted(FILES))
        assert all(type(m) is np.ndarray for m in loaded.matrices)
        pool = _pool(tables, seed=2)
        assert np.array_equal(loaded.gather(pool), _expected(tables, pool))
        assert store.delete_partition(FILES[0]) == ["embeddings"]
        assert not store.path("embeddings", FILES[0], NPY).exists()  # the matrix goes with its table
        assert not any(p.name.endswith(".tmp") for p in store.table_dir("embeddings").iterdir())
    finally:
        base.fs.rm(base.path, recursive=True)


def test_the_same_record_in_two_files_has_the_first_files_vector(tables):
    frame = tables[FILES[1]]
    vectors = vectors_of(frame)
    both = EmbeddingVectors((frame["record_id"], frame["record_id"]), (vectors, -vectors))
    assert np.array_equal(both.gather(frame["record_id"].reverse()), vectors[::-1])
    with pytest.raises(MissingVectors) as missing:
        both.gather(pl.Series(["not-a-record", frame["record_id"][0], "neither"]))
    assert missing.value.count == 2
    assert EmbeddingVectors((), ()).gather(pl.Series([], dtype=pl.String)).shape == (0, 0)
