"""Quality: a reward-style classifier learned from preference pairs, and cheap rules.

Uncertain data may simply be bad data, so the pipeline keeps rows that are
"model-uncertain AND quality-passing". Two judges, cheapest first:

- ``quality_rules``: named reasons a curator would drop or review an SFT row
  (empty, one-word or copied answers, refusal boilerplate, wrong language,
  broken encoding), as vectorized polars expressions (about 3 s per 100,000
  rows on two busy cores).
- ``train_quality_model`` / ``quality_scores``: a logistic regression on
  embeddings trained with chosen = good (1) and rejected = bad (0), evaluated
  on held-out *pairs* so both answers to a prompt are always on the same side
  of the split (otherwise the prompt leaks and the score flatters).

Models are persisted with skops, never pickle, and loaded only when the file's
SHA-256 matches the hash the project recorded when it wrote the file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Sequence

import numpy as np
import polars as pl
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from upath import UPath

from sft_assets.core.storage import atomic_write

# ---------------------------------------------------------------- classifier

# Chosen on HH-RLHF harmless-base (5-fold, MiniLM embeddings): 0.3 held up
# best from 600 to 2,312 pairs; weaker regularization overfits the 1,156 dims.
DEFAULT_C = 0.3
MIN_PAIRS = 4


def _texts(values: pl.Series | Sequence[str | None]) -> pl.Series:
    return pl.Series(values, dtype=pl.String).fill_null("")


def quality_features(
    prompt_emb: np.ndarray,
    response_emb: np.ndarray,
    prompt_text: pl.Series | Sequence[str | None],
    response_text: pl.Series | Sequence[str | None],
) -> np.ndarray:
    """Features of (prompt, response): both embeddings, their elementwise product
    (does the answer address the question), log lengths, the log length ratio
    and the cosine similarity (embeddings are L2-normalized)."""
    prompt = np.asarray(prompt_emb, dtype=np.float32)
    response = np.asarray(response_emb, dtype=np.float32)
    if prompt.shape != response.shape or prompt.ndim != 2:
        raise ValueError(f"prompt and response embeddings must be equal 2-d shapes, "
                         f"got {prompt.shape} and {response.shape}")
    p_len = np.log1p(_texts(prompt_text).str.len_chars().to_numpy().astype(np.float32))
    r_len = np.log1p(_texts(response_text).str.len_chars().to_numpy().astype(np.float32))
    if len(p_len) != len(prompt) or len(r_len) != len(prompt):
        raise ValueError("one text per embedding row is needed")
    product = prompt * response
    extra = np.column_stack([p_len, r_len, r_len - p_len, product.sum(axis=1)])
    return np.hstack([prompt, response, product, extra])


def _pairwise_accuracy(good: np.ndarray, bad: np.ndarray) -> float:
    """Share of pairs where the good side scores higher; ties count half."""
    return float(np.mean((good > bad) + 0.5 * (good == bad)))


def train_quality_model(
    prompt_emb: np.ndarray,
    chosen_emb: np.ndarray,
    rejected_emb: np.ndarray,
    pairs: pl.DataFrame,
    *,
    test_fraction: float = 0.25,
    C: float = DEFAULT_C,
    seed: int = 0,
) -> tuple[LogisticRegression, dict]:
    """Train chosen-vs-rejected on preference pairs; report held-out pair metrics.

    ``pairs`` holds the texts (``prompt``, ``chosen``, ``rejected``) row-aligned
    with the embeddings. Pairs whose two answers are the same text teach
    nothing and are skipped and counted. A seeded ``test_fraction`` of pairs is
    held out whole; the report's metrics come from it, then the returned model
    is refit on every usable pair with the same settings.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    chosen_text = _texts(pairs["chosen"])
    rejected_text = _texts(pairs["rejected"])
    prompt_text = _texts(pairs["prompt"])
    keep = (chosen_text.str.strip_chars() != rejected_text.str.strip_chars()).to_numpy()
    n_skipped = int((~keep).sum())
    idx = np.flatnonzero(keep)
    if len(idx) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs with different answers, got {len(idx)} "
                         f"({n_skipped} skipped as identical)")

    good = quality_features(prompt_emb, chosen_emb, prompt_text, chosen_text)
    bad = quality_features(prompt_emb, rejected_emb, prompt_text, rejected_text)
    idx = np.random.default_rng(seed).permutation(idx)
    n_test = min(max(1, round(test_fraction * len(idx))), len(idx) - 2)
    test, train = idx[:n_test], idx[n_test:]

    def fit(rows: np.ndarray) -> LogisticRegression:
        X = np.vstack([good[rows], bad[rows]])
        y = np.r_[np.ones(len(rows), dtype=np.int8), np.zeros(len(rows), dtype=np.int8)]
        return LogisticRegression(C=C, max_iter=3000).fit(X, y)

    held_out = fit(train)
    s_good = held_out.predict_proba(good[test])[:, 1]
    s_bad = held_out.predict_proba(bad[test])[:, 1]
    longer = _pairwise_accuracy(chosen_text.str.len_chars().to_numpy()[test].astype(float),
                                rejected_text.str.len_chars().to_numpy()[test].astype(float))
    report = {
        "n_pairs": pairs.height,
        "n_skipped_identical": n_skipped,
        "n_train_pairs": len(train),
        "n_test_pairs": len(test),
        "pairwise_accuracy": _pairwise_accuracy(s_good, s_bad),
        "roc_auc": float(roc_auc_score(np.r_[np.ones(n_test), np.zeros(n_test)], np.r_[s_good, s_bad])),
        # The trivial judge to beat: always prefer the longer (or always the shorter) answer.
        "length_baseline_accuracy": max(longer, 1.0 - longer),
        "C": C,
        "seed": seed,
        "refit_on_all_pairs": True,
    }
    return fit(idx), report


def quality_scores(
    model: LogisticRegression,
    prompt_emb: np.ndarray,
    response_emb: np.ndarray,
    prompt_text: pl.Series | Sequence[str | None],
    response_text: pl.Series | Sequence[str | None],
) -> np.ndarray:
    """Probability in [0, 1] that each response is a good answer to its prompt."""
    X = quality_features(prompt_emb, response_emb, prompt_text, response_text)
    if X.shape[1] != model.n_features_in_:
        raise ValueError(f"model expects {model.n_features_in_} features, got {X.shape[1]}: "
                         f"embeddings from a different model?")
    return model.predict_proba(X)[:, 1]


# ---------------------------------------------------------------- persistence

# Every type a quality model file may hold, named explicitly; skops refuses anything else.
TRUSTED_TYPES = ("sklearn.linear_model._logistic.LogisticRegression",)


class UntrustedModelFile(Exception):
    """A model file that must not be loaded: wrong hash, or types nobody vouched for."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(model, path, trusted: Sequence[str] = TRUSTED_TYPES) -> str:
    """Write ``model`` with skops (atomically) and return the file's SHA-256 to record.

    Refuses a model holding types outside ``trusted``: such a file could never
    be loaded back, so it is better to fail while writing."""
    data = sio.dumps(model)
    untrusted = set(sio.get_untrusted_types(data=data)) - set(trusted)
    if untrusted:
        raise UntrustedModelFile(f"model holds types that are not trusted: {sorted(untrusted)}")
    atomic_write(path, lambda fh: fh.write(data))
    return _sha256(data)


def load_model(path, expected_sha256: str, trusted: Sequence[str] = TRUSTED_TYPES):
    """Load a skops model file only if its SHA-256 equals the recorded hash.

    The bytes are read once, hashed and loaded from memory, so the file cannot
    change between the check and the load."""
    if not isinstance(expected_sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256):
        raise UntrustedModelFile(f"no valid recorded SHA-256 for {path}; refusing to load an unchecked file")
    data = UPath(path).read_bytes()
    actual = _sha256(data)
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise UntrustedModelFile(f"{path}: SHA-256 {actual} does not match the recorded {expected_sha256}; "
                                 f"the file was changed after it was written")
    return sio.loads(data, trusted=list(trusted))


# ---------------------------------------------------------------- rules

# Codes a curator reviews rather than drops outright.
SOFT_RULES = frozenset({"repeats_input"})

RULES: dict[str, str] = {
    "empty_output": "the answer is empty or a placeholder (<nooutput>, N/A, 不适用)",
    "one_word_output": "a one-word answer (at most 3 CJK characters) to an instruction that opens by "
                       "asking for prose (explain, describe, why, write an essay ...); classification "
                       "and other short-answer tasks are not flagged",
    "copies_prompt": "the answer repeats the instruction (with or without the input)",
    "repeats_input": "the answer is the input unchanged; soft: an edit task on already-correct text may "
                     "legitimately return it, so review rather than drop",
    "refusal": "refusal or AI-disclaimer boilerplate (English or Chinese)",
    "wrong_language": "the answer is in another language than the prompt: a Chinese prompt answered in "
                      "English sentences (unless the prompt carries English text to work on) or an English prompt "
                      "answered in Chinese; translation and code requests are exempt",
    "broken_encoding": "U+FFFD replacement characters or UTF-8 mojibake (e.g. 'Ã©', 'â€™') in any field",
}

_CJK = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_LATIN = "[A-Za-z]"
_PLACEHOLDER = r"(?i)^((<|&lt;)\s*(no\s*(input|output)|无输入|无输出)\s*(>|&gt;)|n/a|不适用)$"
# Instructions that ask for prose, by how they open; a one-word reply to them is a
# non-answer. Anchored at the start: "article" or "describe" later in a prompt
# usually names the material ("label this news article"), not the task.
_OPEN_ENDED = (
    r"(?i)^\s*(please\s+)?(explain|describe|discuss|elaborate|summari[sz]e|compare|why\b"
    r"|how\s+(do|does|did|can|could|would|should|is|are|to)\b"
    r"|write\s+(an?\s+)?(\w+\s+)?(essay|story|paragraph|article|poem|letter|e-?mail|speech|blog|report|review))"
    r"|^\s*请?\s*(解释|描述|说明|讨论|总结|概括|介绍|比较|写一篇|写一首|写一封|写一段)|为什么|如何|怎么|怎样"
)
# Cues that a short reply is what the task asks for, even in a prose-sounding prompt.
_SHORT_ANSWER = (
    r"(?i)\b(one|single|a) word\b|\bclassif|\bcategori|\beither\b|\bwhether\b|\b(true|false|yes)\b"
    r"|\bone of\b|\b(grade|rate|score)\b|一个词|一个字|一词|分类|归类|判断|是否|是不是|还是|哪|评分|打分"
)
# Refusal and disclaimer boilerplate. Refusing verbs need an object ("I can't help
# you", "我无法提供"), so "I can't help but smile" or a dialogue line "抱歉，我不能去"
# is not a refusal.
_REFUSAL = (
    r"(?i)\bas an? (ai|artificial intelligence)( language)? model\b|\bas a (large )?language model\b"
    r"|\b(i(?:'|’)?m|i am) sorry,? but i (can(?:'|’)?t|cannot|am unable|won(?:'|’)?t)\b"
    r"|\bi apologi[sz]e,? but i (can(?:'|’)?t|cannot|am unable)\b"
    r"|\bi (cannot|can(?:'|’)?t|am unable to|am not able to) (help (you|with)|assist|provide|comply|fulfill|answer)"
    r"|作为一?[个名]?(AI|人工智能)(语言)?模型|作为一?[个名]?语言模型"
    r"|我(无法|不能|没有办法)(为您|帮您|提供|回答|满足|协助|直接生成)"
)
_TRANSLATION = r"(?i)translat|翻译|译成|译为|英文|英语|中文|汉语|\bchinese\b|\benglish\b"
# Code is written in Latin script whatever the language of the request.
_CODE = (r"(?i)代码|程序|函数|查询|脚本|算法|正则|编程|c\+\+"
         r"|\b(sql|python|java(script)?|html|css|code|program|function|query|script|regex|json|api)\b")
# Function words: English sentences, as opposed to names, lists or formulas in Latin letters.
_ENGLISH_PROSE = r"(?i)\b(the|is|are|was|were|of|and|to|this|that|with|it)\b"
# UTF-8 read as Latin-1/cp1252: 'Ã©' for é, 'â€™' for ’, 'Â ' for a no-break space, and
# a lead byte plus two continuation bytes for a CJK character ('ä¸­' for 中).
_CP1252_TAIL = "\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d" \
               "\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
_MOJIBAKE = f"\ufffd|[ÃÂ][{_CP1252_TAIL}]|â€|[äåæçèé][{_CP1252_TAIL}]{{2}}"


def _squash(expr: pl.Expr) -> pl.Expr:
    """White space runs made one space, none around: the form copies are compared in.

    Case and punctuation are kept: changing them is the whole task in
    "convert to upper case" or "add the missing punctuation"."""
    return expr.str.replace_all(r"\s+", " ").str.strip_chars()


def _is_zh(cjk: pl.Expr, latin: pl.Expr) -> pl.Expr:
    """Mirrors ``records.detect_lang``: CJK at least a fifth of the letters."""
    return (cjk > 0) & (cjk * 5 >= cjk + latin)


def quality_rules(frame: pl.DataFrame) -> pl.Series:
    """``rule_reasons``: for each SFT row (``instruction``, ``input``, ``output``),
    the list of ``RULES`` codes that fire, empty when the row looks clean."""
    # Shared pieces are materialized once as columns; as expressions they would be
    # recomputed by every check that uses them.
    texts = frame.lazy().select(
        pl.col("instruction").fill_null(""),
        pl.col("input").fill_null(""),
        _squash(pl.col("output").fill_null("")).alias("output"),
    ).with_columns(prompt=pl.concat_str(["instruction", "input"], separator="\n"))
    instruction, given_input, output, prompt = (pl.col(c) for c in ("instruction", "input", "output", "prompt"))
    texts = texts.with_columns(
        out_cjk=output.str.count_matches(_CJK), out_latin=output.str.count_matches(_LATIN),
        prompt_cjk=prompt.str.count_matches(_CJK), prompt_latin=prompt.str.count_matches(_LATIN),
    )
    out_cjk, out_latin, prompt_cjk, prompt_latin = (
        pl.col(c) for c in ("out_cjk", "out_latin", "prompt_cjk", "prompt_latin"))
    answered = (output != "") & ~output.str.contains(_PLACEHOLDER)

    checks = {
        "empty_output": ~answered,
        "one_word_output": answered & ~output.str.contains(r"\s") & (out_cjk <= 3)
        & instruction.str.contains(_OPEN_ENDED) & ~prompt.str.contains(_SHORT_ANSWER),
        "copies_prompt": answered & ((output == _squash(instruction)) | (output == _squash(prompt))),
        "repeats_input": answered & (output == _squash(given_input)),
        "refusal": output.str.contains(_REFUSAL),
        "wrong_language": ~prompt.str.contains(_TRANSLATION) & ~prompt.str.contains(_CODE) & (
            (_is_zh(prompt_cjk, prompt_latin) & (prompt_latin < 20) & (out_cjk == 0)
             & (output.str.count_matches(_ENGLISH_PROSE) >= 3))
            | ((prompt_cjk == 0) & (prompt_latin > 0) & _is_zh(out_cjk, out_latin) & (out_cjk >= 2))
        ),
        "broken_encoding": pl.any_horizontal(c.str.contains(_MOJIBAKE) for c in (instruction, given_input, output)),
    }
    reasons = pl.concat_list([pl.when(cond).then(pl.lit(code)) for code, cond in checks.items()])
    return texts.select(reasons.list.drop_nulls().alias("rule_reasons")).collect().to_series()


def hard_rule_failures(reasons: pl.Expr) -> pl.Expr:
    """The rule reasons that drop a row; ``SOFT_RULES`` are shown for review but never drop it."""
    return reasons.list.eval(pl.element().filter(~pl.element().is_in(sorted(SOFT_RULES))))
