"""Embeddings on real instructions: unit vectors in input order, odd texts, the row cache, offline errors."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from sft_assets.core.cache import RowCache, namespace_for
from sft_assets.core.embed import (
    count_truncated,
    embed_texts,
    load_sentence_model,
    resolve_device,
    resolve_precision,
    token_counts,
)
from sft_assets.core.embedding_cache import EMBEDDING_COLUMN, embed_with_cache
from sft_assets.core.records import embedding_texts

SLICE = "alpaca_en/alpaca_data-0-3252.json"


@pytest.fixture(scope="module")
def model():
    """float32: the ordering and cache tests compare vectors to 1e-4, finer than bfloat16 rounding."""
    return load_sentence_model("default", device="cpu", precision="float32")


@pytest.fixture(scope="module")
def rows(read_corpus):
    records = read_corpus(SLICE).records.head(64)
    return records["record_id"].to_list(), embedding_texts(records)


class CountingModel:
    """The real model, counting what reaches ``encode``."""

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.rows = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        self.rows += len(texts)
        return self.model.encode(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_precision_auto_is_bfloat16_only_where_the_hardware_runs_it():
    import torch

    assert resolve_precision("float32", "cpu") == "float32" and resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("auto", "cpu") == ("bfloat16" if torch._C._cpu._init_amx() else "float32")
    assert resolve_precision("auto", "mps") == "float32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", "cpu")


def test_bfloat16_vectors_match_float32(model, rows):
    """bfloat16 runs about 3x faster on AMX CPUs; dedup thresholds (0.9 cosine) must not notice."""
    _, texts = rows
    exact, fast = embed_texts(model, texts), embed_texts(load_sentence_model("default", "cpu", "bfloat16"), texts)
    assert fast.dtype == np.float32
    assert (exact * fast).sum(axis=1).min() > 0.999


def test_unit_vectors_in_input_order(model, rows):
    _, texts = rows
    seen = []
    emb = embed_texts(model, texts, batch_size=32, progress=lambda done, total, rate: seen.append((done, total)))
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # batches are cut from length-sorted texts; every row still lands where its text was
    for i in (0, 7, len(texts) - 1):
        alone = model.encode([texts[i]], normalize_embeddings=True)[0]
        assert float(emb[i] @ alone) > 0.9999
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (len(texts), len(texts))


def test_empty_and_very_long_texts(model, rows):
    _, texts = rows
    long_text = "\n".join(texts)  # thousands of tokens
    emb = embed_texts(model, ["", "   ", long_text, texts[0]])
    assert np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert token_counts(model, [long_text])[0] > model.max_seq_length
    assert count_truncated(model, ["", long_text, texts[0]]) == 1
    # the model sees only the first max_seq_length tokens: a changed tail does not move the vector
    changed_tail = embed_texts(model, [long_text + " zebra" * 50])[0]
    assert float(emb[2] @ changed_tail) > 0.9999


def test_max_tokens_cuts_answers_for_one_call_only(model, rows):
    _, texts = rows
    long_text = "\n".join(texts[:12])
    full_length = model.max_seq_length
    head, tail_changed = embed_texts(model, [long_text, long_text + " zebra" * 200], max_tokens=64)
    assert float(head @ tail_changed) > 0.9999
    # the cut is the first 64 tokens: a change inside them moves the vector
    moved = embed_texts(model, ["zebra " * 20 + long_text], max_tokens=64)[0]
    assert float(head @ moved) < 0.99
    assert model.max_seq_length == full_length
    assert float(head @ embed_texts(model, [long_text])[0]) < 0.9999


def test_missing_model_path_names_the_setting(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match="embedding_model") as err:
        load_sentence_model(str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(ValueError, match="embedding_model.*nobody/not-a-cached-model"):
        load_sentence_model("nobody/not-a-cached-model")


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cache_hits_skip_the_model(model, rows, tmp_path):
    ids, texts = rows
    cache = RowCache(str(tmp_path), namespace_for("embeddings", "minilm"))
    counting = CountingModel(model)

    first, computed = embed_with_cache(ids, texts, counting, "minilm", cache, batch_size=64)
    assert computed == len(set(ids)) and counting.rows == len(set(ids))
    stored = cache.get(ids)
    assert stored.schema[EMBEDDING_COLUMN] == pl.Array(pl.Float32, 384)

    calls = counting.calls
    again, computed = embed_with_cache(ids, texts, counting, "minilm", cache)
    assert computed == 0 and counting.calls == calls
    assert np.array_equal(again, first)

    # a partly new batch embeds only the new rows, and returns rows in the order asked
    extra_ids, extra_texts = ["new-1", "new-2"], ["What is a prime number?", ""]
    mixed, computed = embed_with_cache(
        extra_ids + ids[::-1], extra_texts + texts[::-1], counting, "minilm", cache
    )
    assert computed == 2 and counting.rows == len(set(ids)) + 2
    assert np.array_equal(mixed[2:], first[::-1])

    # a text repeated under new ids is embedded once and each id gets its vector
    before = counting.rows
    twins, computed = embed_with_cache(["twin-1", "twin-2", "twin-3"], [texts[1], texts[1], texts[2]],
                                       counting, "minilm", cache)
    assert computed == 3 and counting.rows == before + 2
    assert np.allclose(twins, first[[1, 1, 2]], atol=1e-5)

    # vectors of another model under the same namespace are not handed out
    _, computed = embed_with_cache(ids[:5], texts[:5], counting, "other-model", cache)
    assert computed == 5


def test_embed_module_imports_neither_polars_nor_dagster():
    code = (
        "import sys, sft_assets.core.embed, sft_assets.core.kcenter; "
        "print(sorted({'polars', 'dagster'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
