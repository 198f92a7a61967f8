"""Model resources: loaded once per process, never downloaded, any model by configuration."""

import functools

import dagster as dg

from sft_assets.core.cache import RowCache, namespace_for


@functools.lru_cache(maxsize=4)
def _sentence_model(model: str, device: str):
    from sft_assets.core.embed import load_sentence_model

    return load_sentence_model(model, device)


@functools.lru_cache(maxsize=2)
def _causal_lm(model: str, device: str, gguf_file: str | None):
    from sft_assets.core.perplexity import load_causal_lm

    return load_causal_lm(model, device, gguf_file)


class EmbeddingModel(dg.ConfigurableResource):
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2) and its row cache."""

    model: str = "default"
    device: str = "auto"
    batch_size: int = 128
    cache_uri: str

    def load(self):
        return _sentence_model(self.model, self.device)

    def cache(self, purpose: str = "prompt") -> RowCache:
        """Vectors keyed by record_id, in a namespace per (model, purpose)."""
        return RowCache(self.cache_uri, namespace_for(f"embeddings-{purpose}", self.model))


class LanguageModel(dg.ConfigurableResource):
    """A causal LM (default: the bundled SmolLM2-135M-Instruct GGUF); in real use, the model to fine-tune."""

    model: str = "default"
    gguf_file: str | None = None
    device: str = "auto"
    batch_size: int = 16
    max_tokens: int = 512
    cache_uri: str

    def load(self):
        return _causal_lm(self.model, self.device, self.gguf_file)

    def cache(self, purpose: str) -> RowCache:
        return RowCache(self.cache_uri, namespace_for(purpose, self.model, str(self.gguf_file), str(self.max_tokens)))
