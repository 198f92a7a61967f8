"""Model resources: loaded once per process, never downloaded, any model by configuration."""

import functools

import dagster as dg

from sft_assets.core.cache import RowCache, namespace_for


@functools.lru_cache(maxsize=4)
def _sentence_model(model: str, device: str, precision: str, runtime: str, export_dir: str):
    from sft_assets.core.embed import load_sentence_model

    return load_sentence_model(model, device, precision, runtime, export_dir)


@functools.lru_cache(maxsize=2)
def _causal_lm(model: str, device: str, gguf_file: str | None, precision: str, runtime: str, export_dir: str):
    from sft_assets.core.perplexity import load_causal_lm

    return load_causal_lm(model, device, gguf_file, precision, runtime, export_dir)


class TorchModel(dg.ConfigurableResource):
    """Where a torch model runs and in which precision."""

    model: str = "default"
    device: str = "auto"
    precision: str = "auto"
    """auto: bfloat16 on a GPU with bf16 or a CPU with AMX (1.4-2.4x faster there), else float32."""
    runtime: str = "auto"
    """auto: ONNX Runtime for float32 on a CPU (benchmarks/results/inference.json), torch on a GPU; or torch, onnx.
    The row cache is shared: both runtimes give the same numbers (cosine >= 0.99999, perplexity within 1e-5)."""
    cache_uri: str

    def export_dir(self) -> str:
        """Exported ONNX graphs live beside the row cache."""
        from sft_assets.core.onnx_runtime import local_dir

        return str(local_dir(self.cache_uri))

    def precision_in_use(self) -> str:
        from sft_assets.core.embed import resolve_device, resolve_precision

        return resolve_precision(self.precision, resolve_device(self.device))

    def _cache(self, kind: str, *settings: str) -> RowCache:
        """A row cache per (kind, model, settings, precision). float32 adds nothing to the namespace, so caches
        written before the setting existed stay valid; bfloat16 results (close, not equal) get their own."""
        precision = self.precision_in_use()
        extra = () if precision == "float32" else (precision,)
        return RowCache(self.cache_uri, namespace_for(kind, self.model, *settings, *extra))


class EmbeddingModel(TorchModel):
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2) and its row cache."""

    batch_size: int = 128
    answer_max_tokens: int = 128
    """The quality model reads this many tokens of each answer: most alpaca answers fit whole, and shorter
    sequences embed faster on CPU than the model's 256 (prompts always get the model's full length)."""

    def load(self):
        return _sentence_model(self.model, self.device, self.precision, self.runtime, self.export_dir())

    def cache(self, purpose: str = "prompt") -> RowCache:
        """Vectors keyed by record_id, in a namespace per (model, precision, purpose)."""
        return self._cache(f"embeddings-{purpose}")


class LanguageModel(TorchModel):
    """A causal LM (default: the bundled SmolLM2-135M-Instruct GGUF); in real use, the model to fine-tune."""

    gguf_file: str | None = None
    batch_size: int = 16
    max_tokens: int = 512

    def load(self):
        return _causal_lm(self.model, self.device, self.gguf_file, self.precision, self.runtime, self.export_dir())

    def cache(self, purpose: str) -> RowCache:
        return self._cache(purpose, str(self.gguf_file), str(self.max_tokens))
