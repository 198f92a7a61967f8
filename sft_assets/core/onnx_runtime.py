"""ONNX Runtime for the two models on CPU: exported once from the torch weights already in memory.

``benchmarks/inference.py`` measures it against the torch path on the same rows; ``auto`` picks
it on CPU where it holds the same numbers and is faster. An exported graph is kept on disk under a
name that hashes the weights and the versions that made it, so a changed model or exporter never
finds a stale graph, and the export (seconds for MiniLM, about a minute for SmolLM2) runs once per
machine. Nothing is downloaded: the graph comes from the local weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

OPSET = 17


def available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def local_dir(cache_uri: str | None) -> Path:
    """Where exported graphs live: ``onnx/`` beside the row cache when that is a local folder; a remote
    cache (``s3://``…) gets a local temporary folder, since ONNX Runtime reads local files only."""
    if cache_uri and "://" not in cache_uri.removeprefix("file://"):
        return Path(cache_uri.removeprefix("file://")) / "onnx"
    return Path(tempfile.gettempdir()) / "sft_assets-onnx"


class MeanPooled(torch.nn.Module):
    """A sentence encoder's graph: the transformer's token states averaged over the real tokens (the
    Pooling module's ``mean``); normalizing stays outside, in ``embed.l2_normalize``."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class LastHidden(torch.nn.Module):
    """A causal LM's graph: the base model's last hidden states; the vocabulary projection stays in torch,
    applied only at the positions that are scored."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.base = base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the module's parameters and buffers, with torch's and ONNX Runtime's versions."""
    import onnxruntime

    digest = hashlib.sha256(f"{torch.__version__}|{onnxruntime.__version__}|{OPSET}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], input_names: Sequence[str],
           output_name: str, dynamic_axes: dict, directory: Path, label: str) -> Path:
    """``module`` as an ONNX file under ``directory`` (exported now unless already there), written
    under a temporary name and renamed, so a concurrent or killed export never leaves half a graph."""
    target = Path(directory) / f"{label}-{weights_digest(module)}.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings name lines of transformers
            torch.onnx.export(module.eval(), example, str(tmp), input_names=list(input_names),
                              output_names=[output_name], dynamic_axes=dynamic_axes, opset_version=OPSET,
                              dynamo=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def session(path: Path):
    """An inference session with every graph optimization, on as many threads as torch uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, **inputs: torch.Tensor) -> np.ndarray:
    """The session's single output for int64 torch inputs."""
    return sess.run(None, {name: value.to(torch.int64).numpy() for name, value in inputs.items()})[0]
