"""Shared fixtures: the real corpora beside the checkout, read with the project's readers."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SFT_ASSETS_CORPORA", REPO.parent / "shared" / "corpora"))


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.fail(f"real corpora not found at {CORPORA} (set SFT_ASSETS_CORPORA)")
    return CORPORA


@pytest.fixture(scope="session")
def read_corpus(corpora):
    """read_corpus('alpaca_en/alpaca_data-0-3252.json') -> ReadResult, cached per session."""
    from sft_assets.core.readers import read_file

    cache = {}

    def read(relpath: str):
        if relpath not in cache:
            cache[relpath] = read_file(corpora / relpath, relpath)
        return cache[relpath]

    return read


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory) -> Path:
    """Embeddings and model scores of the bundled sample, keyed by (model, record_id): every test that builds
    the sample shares them, so the language model scores it once per session."""
    return tmp_path_factory.mktemp("sample_cache")
