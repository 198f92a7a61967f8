"""Self-Instruct: new instructions, inputs and outputs from seed tasks with an offline causal LM.

A round runs three generation steps, each batched and seeded:

1. instruction: a few-shot list of ``few_shot_tasks`` seed instructions
   ("Come up with a series of tasks: 1. ... 8.") that the model continues
   with one new line, Self-Instruct's instruction prompt;
2. input: ``few_shot_examples`` seed tasks as ``Task / Input / Output``
   blocks, then the new task and ``Input:``; the model writes the input and
   is stopped at ``Output:``, Self-Instruct's input-first instance prompt;
3. output: the model answers the instruction and input as a user turn, under
   its chat template when it has one, the prompt ``answer_perplexity``
   later scores the answer under.

Why three steps rather than one combined prompt: the instruction filters
(length, blacklist, language, ROUGE-L against seeds, pool and the round) run
before any input or output is generated, so a round spends no tokens on
near copies; and each step's text needs only one marker to parse. Steps 1 and
2 are format-imitation completions and never use the chat template: with it,
SmolLM2-135M-Instruct answered the task list with chatter ("I'm ready to
assist.", "Here is a new task:") instead of a task. Step 3 is what the
instruct model was trained for.

Every candidate ends kept or dropped with one reason, the first filter it
fails, in this order: ``unparsable``, ``too_long``, ``too_short``,
``starts_with_punctuation``, ``starts_with_non_english``, ``wrong_language``,
``blacklisted``, ``duplicate_in_round``, ``too_similar`` (instruction stage),
then ``unparsable``, ``too_long``, ``too_short``, ``wrong_language`` for the
generated input and output.

Similarity is judged on instructions, as in Self-Instruct: ROUGE-L F1 (the
``rouge-score`` package) or embedding cosine. The ROUGE check is exact at the
threshold and fast on a large pool: ROUGE-L F1 is ``2 * LCS / (m + n)`` and
the LCS is at most the multiset overlap of the two token lists, so a sparse
token-count product rules out almost every pool row and only the rest is
scored by ``rouge_scorer``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from rouge_score import rouge_scorer, tokenizers

from sft_assets.core.datasets import user_prompt
from sft_assets.core.dedup import exact_key
from sft_assets.core.perplexity import LanguageModel, _prompt_ids
from sft_assets.core.records import detect_lang

SIMILARITY_METHODS = ("rouge", "embedding")
# Method defaults: Self-Instruct's ROUGE-L cut, and the pool's near-dedup cosine.
DEFAULT_THRESHOLDS = {"rouge": 0.7, "embedding": 0.9}
# Self-Instruct / Alpaca: tasks a text-only model cannot do.
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
TASKS_HEADER = "Come up with a series of tasks:\n\n"
EXAMPLES_HEADER = "Come up with examples for the following tasks. If the task needs no input, write None.\n\n"
OUTPUT_MARKER = "\nOutput:"
NO_INPUT = {"", "none", "n/a", "<noinput>", "no input"}
_BOUND_SLACK = 1e-9  # rouge_scorer's float F1 may land a hair above the exact bound


@dataclass(frozen=True)
class RoundConfig:
    count: int = 32
    """Candidate instructions (step-1 prompts) in the round."""
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    """Cap per step; a text that reaches it unfinished is dropped as too_long."""
    seed: int = 0
    few_shot_tasks: int = 8
    few_shot_examples: int = 3
    batch_size: int = 16
    similarity: str = "rouge"
    similarity_threshold: float | None = None
    """None: 0.7 for ROUGE-L, 0.9 for cosine."""
    min_words: int = 4
    max_words: int = 150
    lang: str = "en"
    use_chat_template: bool = True
    """Step 3 only, when the model has one."""

    def threshold(self) -> float:
        if self.similarity not in SIMILARITY_METHODS:
            raise ValueError(f"similarity must be one of {SIMILARITY_METHODS}, not {self.similarity!r}")
        return DEFAULT_THRESHOLDS[self.similarity] if self.similarity_threshold is None else self.similarity_threshold


@dataclass(frozen=True)
class Reference:
    """What new instructions must not copy: texts, where each comes from, and (for cosine) their unit vectors."""

    texts: list[str]
    origins: list[str]
    vectors: np.ndarray | None = None


# ---------------------------------------------------------------- similarity


class RougeIndex:
    """ROUGE-L F1 of a query against fixed texts, exact at a threshold.

    Texts are tokenized once with rouge-score's own tokenizer into a sparse
    token-count matrix; a query's multiset overlap with every text bounds its
    LCS from above, so only texts with ``2 * overlap / (m + n) >= threshold``
    are scored by ``rouge_scorer``."""

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)
        self._tokenize = tokenizers.DefaultTokenizer(use_stemmer=False).tokenize
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._vocab: dict[str, int] = {}
        rows, cols, counts = [], [], []
        for row, text in enumerate(self.texts):
            for token, count in Counter(self._tokenize(text)).items():
                rows.append(row)
                cols.append(self._vocab.setdefault(token, len(self._vocab)))
                counts.append(count)
        self._counts = sp.csc_matrix((np.asarray(counts, np.float32), (rows, cols)),
                                     shape=(len(self.texts), len(self._vocab)))
        self._lengths = np.asarray(self._counts.sum(axis=1)).ravel()

    def candidates(self, query: str, threshold: float) -> np.ndarray:
        """Rows whose overlap bound reaches ``threshold``, most overlapping first."""
        tokens = Counter(self._tokenize(query))
        known = [(self._vocab[t], c) for t, c in tokens.items() if t in self._vocab]
        if not known or not self.texts:
            return np.empty(0, dtype=np.int64)
        cols, wanted = np.array([k for k, _ in known]), np.array([c for _, c in known], np.float32)
        block = self._counts[:, cols]
        column_of_entry = np.repeat(np.arange(len(cols)), np.diff(block.indptr))
        overlap = np.bincount(block.indices, weights=np.minimum(block.data, wanted[column_of_entry]),
                              minlength=len(self.texts))
        bound = 2 * overlap / (self._lengths + sum(tokens.values()))
        rows = np.flatnonzero(bound >= threshold - _BOUND_SLACK)
        return rows[np.argsort(-bound[rows], kind="stable")]

    def matches(self, query: str, threshold: float) -> list[tuple[int, float]]:
        """Every (row, ROUGE-L F1) at or above ``threshold``, most similar first."""
        found = [(int(row), self._scorer.score(self.texts[row], query)["rougeL"].fmeasure)
                 for row in self.candidates(query, threshold)]
        return sorted(((r, s) for r, s in found if s >= threshold), key=lambda m: -m[1])


def _matches(method: str, reference: Reference, queries: Sequence[str], query_vectors: np.ndarray | None,
             threshold: float) -> list[list[tuple[int, float]]]:
    """For each query, every reference row at or above ``threshold``, most similar first."""
    if method == "rouge":
        index = RougeIndex(reference.texts)
        return [index.matches(q, threshold) for q in queries]
    if reference.vectors is None or query_vectors is None:
        raise ValueError("similarity 'embedding' needs vectors for the reference and the queries")
    out = []
    for sims in query_vectors @ reference.vectors.T if len(reference.texts) else np.zeros((len(queries), 0)):
        rows = np.flatnonzero(sims >= threshold)
        out.append([(int(r), float(sims[r])) for r in rows[np.argsort(-sims[rows], kind="stable")]])
    return out


# ---------------------------------------------------------------- generation


STOPPED, ENDED, CAPPED = "stop_string", "eos", "token_cap"
STEPS = ("instruction", "input", "output")


@dataclass
class Generated:
    texts: list[str]
    ends: list[str]  # per prompt: STOPPED at a stop string, ENDED by eos, or CAPPED at max_new_tokens
    tokens: np.ndarray  # new tokens per prompt, padding excluded
    seconds: float


def _derived_seed(*numbers: int) -> int:
    return int(np.random.SeedSequence(list(numbers)).generate_state(1)[0])


def round_seed(seed: int, round_number: int) -> int:
    """A round's own seed: rounds under one base seed differ, and each repeats."""
    return _derived_seed(seed, round_number)


@torch.inference_mode()
def generate(lm: LanguageModel, prompts: Sequence[list[int]], config: RoundConfig, step: int,
             stop_strings: Sequence[str] = ()) -> Generated:
    """Sampled continuations of token-id prompts, cut before the first stop string.

    Prompts run in batches of similar length, left-padded; each batch samples
    under its own seed from (seed, step, batch), inside a forked RNG so the
    caller's torch state is untouched. The same prompts, config and model
    give the same texts."""
    tokenizer = lm.tokenizer
    pad = tokenizer.pad_token_id
    eos = {pad, tokenizer.eos_token_id} - {None}  # generate pads a finished row with pad
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    texts, ends, tokens = [""] * len(prompts), [CAPPED] * len(prompts), np.zeros(len(prompts), np.int64)
    sampling = ({"do_sample": True, "temperature": config.temperature, "top_p": config.top_p, "top_k": None}
                if config.temperature > 0 else {"do_sample": False})
    started = time.perf_counter()
    for batch, first in enumerate(range(0, len(order), config.batch_size)):
        rows = order[first : first + config.batch_size]
        width = len(prompts[rows[0]])
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            attention[r, width - len(prompts[i]):] = 1
        with torch.random.fork_rng():
            torch.manual_seed(_derived_seed(config.seed, step, batch))
            out = lm.model.generate(
                input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device),
                max_new_tokens=config.max_new_tokens, pad_token_id=pad,
                stop_strings=list(stop_strings) or None, tokenizer=tokenizer, **sampling,
            )[:, width:].cpu()
        for r, i in enumerate(rows):
            new = out[r].tolist()
            text = tokenizer.decode(new, skip_special_tokens=True)
            cut = min((text.find(s) for s in stop_strings if s in text), default=-1)
            texts[i] = text if cut < 0 else text[:cut]
            ends[i] = STOPPED if cut >= 0 else ENDED if any(t in eos for t in new) else CAPPED
            tokens[i] = sum(t != pad for t in new)
    return Generated(texts, ends, tokens, time.perf_counter() - started)


# ---------------------------------------------------------------- prompts


def tasks_prompt(instructions: Sequence[str]) -> str:
    """Step 1: numbered seed instructions, ending at the next number for the model to fill."""
    listed = "".join(f"{n}. {text.strip()}\n" for n, text in enumerate(instructions, start=1))
    return f"{TASKS_HEADER}{listed}{len(instructions) + 1}."


def _example_block(instruction: str, input_text: str, output: str) -> str:
    return f"Task: {instruction.strip()}\nInput: {input_text.strip() or 'None'}{OUTPUT_MARKER} {output.strip()}\n\n"


def examples_prompt(examples: pl.DataFrame, instruction: str) -> str:
    """Step 2: seed tasks with input and output, then the new task and ``Input:``."""
    blocks = "".join(_example_block(*row) for row in examples.select("instruction", "input", "output").iter_rows())
    return f"{EXAMPLES_HEADER}{blocks}Task: {instruction}\nInput:"


def _completion_ids(lm: LanguageModel, texts: Sequence[str]) -> list[list[int]]:
    return lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


# ---------------------------------------------------------------- cleaning


def instruction_problem(text: str, end: str, config: RoundConfig) -> tuple[str, str] | None:
    """(reason, detail) for a step-1 instruction that fails the text filters, else None."""
    if end == CAPPED:
        return "too_long", f"no line end within {config.max_new_tokens} new tokens"
    if not text:
        return "unparsable", "the model wrote no instruction"
    words = len(text.split())
    if words < config.min_words:
        return "too_short", f"{words} words, fewer than {config.min_words}"
    if words > config.max_words:
        return "too_long", f"{words} words, more than {config.max_words}"
    if text[0] in string.punctuation:
        return "starts_with_punctuation", f"starts with {text[0]!r}"
    if not text[0].isascii():
        return "starts_with_non_english", f"starts with {text[0]!r}"
    if (lang := detect_lang(text)) != config.lang:
        return "wrong_language", f"detected {lang}, expected {config.lang}"
    if hit := _BLACKLIST_RE.search(text):
        return "blacklisted", f"mentions {hit.group(0)!r}, which a text-only model cannot do"
    return None


def input_problem(end: str, config: RoundConfig) -> tuple[str, str] | None:
    """(reason, detail) when the input step did not stop at ``Output:``."""
    marker = OUTPUT_MARKER.strip()
    if end == CAPPED:
        return "too_long", f"input reached {config.max_new_tokens} new tokens without {marker!r}"
    if end == ENDED:
        return "unparsable", f"the input step ended without {marker!r}"
    return None


def output_problem(instruction: str, input_text: str, output: str, end: str,
                   config: RoundConfig) -> tuple[str, str] | None:
    """(reason, detail) for an answer that fails the filters, else None."""
    if end == CAPPED:
        return "too_long", f"output cut at {config.max_new_tokens} new tokens"
    if not output:
        return "too_short", "empty output"
    if (lang := detect_lang("\n".join((instruction, input_text, output)))) != config.lang:
        return "wrong_language", f"detected {lang}, expected {config.lang}"
    return None


def parse_input(text: str) -> str:
    """The input the model wrote before ``Output:``; "None" and the like mean no input."""
    text = text.strip()
    return "" if text.lower() in NO_INPUT else text


def drop_copies(rows: list[dict], reference: Reference, method: str, threshold: float,
                embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
    """Set ``reason`` on rows (dicts with ``candidate`` and ``instruction``, in round order)
    whose instruction copies an earlier one exactly (``duplicate_in_round``), or is at
    ``threshold`` or above with a reference text or an earlier row that survived this
    rule (``too_similar``, the leader rule)."""
    first: dict[str, int] = {}
    for row in rows:
        key = exact_key(row["instruction"])
        if key in first:
            _drop(row, "duplicate_in_round", f"same instruction as candidate {first[key]}")
        else:
            first[key] = row["candidate"]
    rows = [r for r in rows if r["reason"] is None]
    if not rows:
        return
    texts = [r["instruction"] for r in rows]
    vectors = embed(texts) if method == "embedding" else None
    against_reference = _matches(method, reference, texts, vectors, threshold)
    within = _matches(method, Reference(texts, [f"candidate {r['candidate']}" for r in rows], vectors),
                      texts, vectors, threshold)
    survived: set[int] = set()
    for i, row in enumerate(rows):
        earlier = [(j, score) for j, score in within[i] if j in survived]
        if not against_reference[i] and not earlier:
            survived.add(i)
            continue
        j, score = (against_reference[i] or earlier)[0]
        origin, text = (reference.origins[j], reference.texts[j]) if against_reference[i] else (
            f"candidate {rows[j]['candidate']}", texts[j])
        row["similar_to"], row["similarity"] = origin, score
        _drop(row, "too_similar", f"{method} {score:.2f} >= {threshold} with {origin}: {text[:200]}")


def _drop(row: dict, reason: str, detail: str) -> None:
    row["reason"], row["detail"] = reason, detail


# ---------------------------------------------------------------- the round


@dataclass
class RoundResult:
    rows: pl.DataFrame
    """Every candidate, kept or dropped with its reason, its prompts and the model's raw texts."""
    stats: dict = field(default_factory=dict)

    @property
    def kept(self) -> pl.DataFrame:
        return self.rows.filter(pl.col("kept"))

    @property
    def dropped(self) -> pl.DataFrame:
        return self.rows.filter(~pl.col("kept"))


def _sample(rng: np.random.Generator, n: int, k: int) -> list[int]:
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def run_round(lm: LanguageModel, seeds: pl.DataFrame, reference: Reference, config: RoundConfig,
              embed: Callable[[list[str]], np.ndarray] | None = None) -> RoundResult:
    """Generate ``config.count`` candidates from ``seeds`` (instruction, input, output, origin) and clean them.

    ``reference`` holds the seed and pool instructions new ones are compared
    with; ``embed`` (texts -> unit vectors) is needed for cosine similarity.
    Few-shot picks come from ``config.seed``, so the same seeds, reference,
    config and model give the same round."""
    threshold = config.threshold()
    if seeds.is_empty():
        raise ValueError("no seed tasks to build prompts from")
    rng = np.random.default_rng(config.seed)
    task_picks = [_sample(rng, seeds.height, config.few_shot_tasks) for _ in range(config.count)]
    example_picks = [_sample(rng, seeds.height, config.few_shot_examples) for _ in range(config.count)]
    seed_instructions, origins = seeds["instruction"].to_list(), seeds["origin"].to_list()

    prompts = [tasks_prompt([seed_instructions[j] for j in pick]) for pick in task_picks]
    step1 = generate(lm, _completion_ids(lm, prompts), config, step=1, stop_strings=["\n"])
    rows = [{
        "candidate": i, "kept": False, "reason": None, "detail": None,
        "instruction": step1.texts[i].strip(), "input": None, "output": None,
        "similar_to": None, "similarity": None,
        "instruction_prompt": prompts[i], "input_prompt": None, "output_prompt": None,
        "few_shot_tasks": [origins[j] for j in task_picks[i]], "few_shot_examples": None,
        "instruction_generation": step1.texts[i], "input_generation": None, "output_generation": None,
        "tokens": int(step1.tokens[i]),
    } for i in range(config.count)]
    for row, end in zip(rows, step1.ends):
        if problem := instruction_problem(row["instruction"], end, config):
            _drop(row, *problem)
    drop_copies([r for r in rows if r["reason"] is None], reference, config.similarity, threshold, embed)

    steps = [("instruction", step1)]
    if survivors := [r for r in rows if r["reason"] is None]:
        steps += _instances(lm, survivors, seeds, example_picks, config)
    frame = pl.DataFrame(rows, schema=CANDIDATE_SCHEMA).with_columns(
        seed=pl.lit(config.seed, pl.Int64), model_id=pl.lit(lm.model_id))
    return RoundResult(frame, _stats(steps))


def _instances(lm: LanguageModel, rows: list[dict], seeds: pl.DataFrame, example_picks: list[list[int]],
               config: RoundConfig) -> list[tuple[str, Generated]]:
    """Steps 2 and 3 for the instructions that passed: input, then output; sets kept or the reason."""
    for row in rows:
        examples = seeds[example_picks[row["candidate"]]]
        row["input_prompt"] = examples_prompt(examples, row["instruction"])
        row["few_shot_examples"] = examples["origin"].to_list()
    step2 = generate(lm, _completion_ids(lm, [r["input_prompt"] for r in rows]), config, step=2,
                     stop_strings=[OUTPUT_MARKER])
    answerable = []
    for row, text, end, tokens in zip(rows, step2.texts, step2.ends, step2.tokens):
        row["input_generation"], row["tokens"] = text, row["tokens"] + int(tokens)
        if problem := input_problem(end, config):
            _drop(row, *problem)
        else:
            row["input"] = parse_input(text)
            answerable.append(row)
    turns = pl.DataFrame([{"instruction": r["instruction"], "input": r["input"]} for r in answerable],
                         schema={"instruction": pl.String, "input": pl.String})
    user_turns = turns.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list()
    answer_ids = _prompt_ids(lm, user_turns, config.use_chat_template, "\n\n")
    step3 = generate(lm, answer_ids, config, step=3)
    for row, ids, text, end, tokens in zip(answerable, answer_ids, step3.texts, step3.ends, step3.tokens):
        row.update(output_prompt=lm.tokenizer.decode(ids), output_generation=text, output=text.strip(),
                   tokens=row["tokens"] + int(tokens))
        if problem := output_problem(row["instruction"], row["input"], row["output"], end, config):
            _drop(row, *problem)
        else:
            row["kept"] = True
    return [("input", step2), ("output", step3)]


CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "candidate": pl.Int64, "kept": pl.Boolean, "reason": pl.String, "detail": pl.String,
    "instruction": pl.String, "input": pl.String, "output": pl.String,
    "similar_to": pl.String, "similarity": pl.Float64,
    "instruction_prompt": pl.String, "input_prompt": pl.String, "output_prompt": pl.String,
    "few_shot_tasks": pl.List(pl.String), "few_shot_examples": pl.List(pl.String),
    "instruction_generation": pl.String, "input_generation": pl.String, "output_generation": pl.String,
    "tokens": pl.Int64,
}


def _stats(steps: list[tuple[str, Generated]]) -> dict:
    tokens = sum(int(g.tokens.sum()) for _, g in steps)
    seconds = sum(g.seconds for _, g in steps)
    return {
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
        "steps": {name: {"prompts": len(g.texts), "tokens": int(g.tokens.sum()), "seconds": round(g.seconds, 2)}
                  for name, g in steps},
    }


# ---------------------------------------------------------------- the raw file


def prompt_sha256(prompt: str | None) -> str | None:
    return None if prompt is None else hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def lineage_rows(kept: pl.DataFrame, **run: object) -> list[dict]:
    """One JSON object per kept row: the SFT fields the readers take, then lineage fields they pass over.

    ``run`` (run id, round, ...) is written into every row. The prompts are
    named by their SHA-256; the full texts stay in the round's table."""
    return [{
        "instruction": row["instruction"], "input": row["input"], "output": row["output"],
        **{f"generation_{k}": v for k, v in run.items()},
        "generation_candidate": row["candidate"],
        "generation_seed": row["seed"],
        "generation_model": row["model_id"],
        "few_shot_tasks": row["few_shot_tasks"],
        "few_shot_examples": row["few_shot_examples"],
        **{f"{step}_prompt_sha256": prompt_sha256(row[f"{step}_prompt"]) for step in STEPS},
    } for row in kept.iter_rows(named=True)]


def write_jsonl_atomic(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """JSON lines under a hidden temporary name, then renamed: a scan never sees half a file
    (the raw-folder sensor ignores dot files and ``*.tmp``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(tmp, path)
    return path
