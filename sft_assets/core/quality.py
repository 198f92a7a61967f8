"""Quality: cheap rules, and a judge of whether an answer serves its question.

Uncertain data may simply be bad data, so the pipeline keeps rows that are
"model-uncertain AND quality-passing". Two judges, cheapest first:

- ``quality_rules``: named reasons a curator would drop or review an SFT row
  (empty, one-word, cut-off, repeated or copied answers, unclosed code fences,
  refusal boilerplate, wrong language, broken encoding), as vectorized polars
  expressions.
- ``train_quality_model`` / ``quality_scores``: a linear scorer on
  (prompt, answer) features (does the answer fit the question, what it says,
  is it whole), trained pairwise on helpfulness preferences (alpaca_eval) and
  on self-supervised negatives made from the pool (another question's answer,
  a topically close one, the answer cut, shuffled or duplicated), then
  calibrated to P(an acceptable answer). It is measured on held-out
  instructions only, beside the length baseline, and refused (``gate_reason``)
  when it is no better than that baseline or than 0.9 against another
  question's answer. Harmlessness pairs (HH-RLHF) train a separate score
  (``train_harmlessness_model``): folded in, they would teach the judge to
  prefer short, evasive answers.

Models are persisted with skops, never pickle, and loaded only when the file's
SHA-256 matches the hash the project recorded when it wrote the file.
"""

from __future__ import annotations

import hashlib
import math
import hmac
import re
from typing import Callable, Sequence

import numpy as np
import polars as pl
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from upath import UPath

from sft_assets.core.datasets import user_prompt
from sft_assets.core.draws import draw_rng, key_draws, smallest_draws
from sft_assets.core.storage import atomic_write

# ---------------------------------------------------------------- judge

# Chosen on the held-out splits of benchmarks/quality.py (alpaca_eval by instruction, pool corruptions):
# C 0.3 -> 0.0005 lifted another question's answer 0.95 -> 0.96 and a topically close one 0.84 -> 0.87;
# regularizing the few fit and structure features 10x less lifted alpaca_eval 0.64 -> 0.66 (length: 0.655).
DEFAULT_C = 0.0005
# Fewer held-out pairs than this make a figure that means nothing (4 pairs gave "accuracy 1.000").
MIN_MEASURED_PAIRS = 30
# The gate: the judge must beat "the longer answer wins" on held-out helpfulness pairs and rank a
# question's own answer above another question's answer this often.
MIN_OTHER_ANSWER_ACCURACY = 0.9
PREFERENCE_WEIGHT = 0.5  # 0.75 fell below the gate on another question's answer (0.89)
FEW_FEATURES_BOOST = 10.0


def _FEW_FEATURES(n: int) -> np.ndarray:
    """Column indices of the cosine and the structure features in ``quality_features``."""
    return np.r_[0, np.arange(n - len(STRUCTURE_FEATURES), n)]
CORRUPTIONS = ("other_answer", "close_answer", "cut_50", "cut_80", "shuffled", "duplicated")

Embed = Callable[[list[str]], np.ndarray]


def _texts(values: pl.Series | Sequence[str | None]) -> pl.Series:
    return pl.Series(values, dtype=pl.String).fill_null("")


_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")
_COMPLETE_END = re.compile(r"[.!?。！？…:;)\]}\"'”’`*>|]\s*$|^\S{1,40}$|\d\s*$")


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text) if s.strip()]


def _repeated_share(text: str) -> float:
    """Share of an answer's sentences (10+ characters) that repeat an earlier one."""
    parts = [s.strip() for s in _sentences(text) if len(s.strip()) >= 10]
    return 1.0 - len(set(parts)) / len(parts) if parts else 0.0


def _unbalanced(text: str) -> bool:
    """An odd number of code fences, or brackets that do not pair up (a cut or garbled answer)."""
    if text.count("```") % 2:
        return True
    return any(text.count(a) != text.count(b) for a, b in ("()", "[]", "{}", "（）"))


STRUCTURE_FEATURES = ("log_answer_chars", "log_prompt_chars", "log_ratio", "ends_complete", "unbalanced",
                      "repeated_share", "log_lines")


def structure_features(prompt_text: pl.Series | Sequence[str | None],
                       response_text: pl.Series | Sequence[str | None]) -> np.ndarray:
    """``STRUCTURE_FEATURES`` of each answer: lengths, whether it ends like a finished text, unbalanced
    fences or brackets, repeated sentences, line count. The embedding reads only an answer's first
    tokens, so a cut or padded answer is visible here only."""
    answers, prompts = _texts(response_text).to_list(), _texts(prompt_text).to_list()
    a_len = np.log1p(np.array([len(a) for a in answers], dtype=np.float32))
    p_len = np.log1p(np.array([len(p) for p in prompts], dtype=np.float32))
    return np.column_stack([
        a_len, p_len, a_len - p_len,
        [bool(_COMPLETE_END.search(a.strip())) for a in answers],
        [_unbalanced(a) for a in answers],
        [_repeated_share(a) for a in answers],
        np.log1p([a.strip().count("\n") for a in answers]),
    ]).astype(np.float32)


def quality_features(
    prompt_emb: np.ndarray,
    response_emb: np.ndarray,
    prompt_text: pl.Series | Sequence[str | None],
    response_text: pl.Series | Sequence[str | None],
) -> np.ndarray:
    """Features of (prompt, response): does the answer fit the question (cosine and the elementwise product
    of the L2-normalized embeddings), what it says (its embedding), and ``structure_features``. The prompt's
    own vector is left out: it is the same on both sides of a pair and would only shift the score by topic."""
    prompt = np.asarray(prompt_emb, dtype=np.float32)
    response = np.asarray(response_emb, dtype=np.float32)
    if prompt.shape != response.shape or prompt.ndim != 2:
        raise ValueError(f"prompt and response embeddings must be equal 2-d shapes, "
                         f"got {prompt.shape} and {response.shape}")
    structure = structure_features(prompt_text, response_text)
    if len(structure) != len(prompt):
        raise ValueError("one text per embedding row is needed")
    product = prompt * response
    return np.hstack([product.sum(axis=1, keepdims=True), product, response, structure])


def pairwise_accuracy(good: np.ndarray, bad: np.ndarray) -> float | None:
    """Share of pairs where the good side scores higher, ties counting half; None below
    ``MIN_MEASURED_PAIRS`` pairs, where a figure would mean nothing."""
    good, bad = np.asarray(good, dtype=float), np.asarray(bad, dtype=float)
    if len(good) < MIN_MEASURED_PAIRS:
        return None
    return float(np.mean((good > bad) + 0.5 * (good == bad)))


def length_baseline(good_text: Sequence[str], bad_text: Sequence[str]) -> float | None:
    """The trivial judge to beat: the longer answer wins."""
    return pairwise_accuracy(np.array([len(t) for t in good_text]), np.array([len(t) for t in bad_text]))


def show_accuracy(value: float | None, n: int) -> str:
    """A figure for a log line or a table: too few pairs are said, not printed as 1.000."""
    return f"too few pairs to measure (n={n})" if value is None else f"{value:.3f} (n={n})"


# ---------------------------------------------------------------- self-supervised negatives


def cut_answer(text: str, fraction: float) -> str:
    """The answer's first ``fraction`` of characters, ended at the last space before the cut if any."""
    cut = text[: max(1, int(len(text) * fraction))]
    space = cut.rfind(" ")
    return cut[:space] if space > len(cut) // 2 else cut


def corrupted_answer(text: str, kind: str, rng: np.random.Generator) -> str | None:
    """A damaged copy of an answer (None when the damage does not apply, e.g. one sentence to shuffle)."""
    if kind == "cut_50":
        return cut_answer(text, 0.5)
    if kind == "cut_80":
        return cut_answer(text, 0.8)
    if kind == "duplicated":
        return f"{text}\n{text}"
    if kind == "shuffled":
        parts = _sentences(text)
        if len(parts) < 3:
            return None
        order = rng.permutation(len(parts))
        while (order == np.arange(len(parts))).all():
            order = rng.permutation(len(parts))
        return " ".join(parts[i] for i in order)
    raise ValueError(f"unknown corruption {kind!r}")


def other_answer_index(prompt_emb: np.ndarray, answers: Sequence[str], seed: int, close: bool) -> np.ndarray:
    """For each row, a row whose answer it gets as a negative: a random other row (the next one in the
    answers' seeded draw order, so a new row changes only its neighbours' pairs), or (``close``) the row
    whose prompt is nearest but whose answer differs (a topically close question's answer)."""
    n = len(answers)
    if not close:
        order = smallest_draws(key_draws(answers, seed), n)
        other = np.empty(n, dtype=int)
        other[order] = np.roll(order, -1)
        return other
    sims = prompt_emb @ prompt_emb.T
    same = np.array(answers, dtype=object)[:, None] == np.array(answers, dtype=object)[None, :]
    sims[same] = -np.inf  # itself, and rows with the very same answer
    sims[np.isclose(sims, 1.0, atol=1e-4)] = -np.inf  # the same question asked twice
    return sims.argmax(axis=1)


def corruption_pairs(pool: pl.DataFrame, prompt_emb: np.ndarray, answer_emb: np.ndarray, embed_answers: Embed,
                     seed: int, kinds: Sequence[str] = CORRUPTIONS) -> dict[str, dict]:
    """Per corruption kind, (good, bad) pairs on the pool rows ``pool`` (``prompt``, ``answer``):
    row indices into ``pool`` and the bad answers' texts and vectors."""
    answers = pool["answer"].to_list()
    out = {}
    for kind in kinds:
        if kind in ("other_answer", "close_answer"):
            if len(answers) < 2:
                continue
            other = other_answer_index(prompt_emb, answers, seed, close=kind == "close_answer")
            out[kind] = {"rows": np.arange(len(answers)), "bad": [answers[i] for i in other],
                         "bad_emb": answer_emb[other]}
            continue
        damaged = [corrupted_answer(a, kind, draw_rng(a, seed)) for a in answers]
        rows = np.array([i for i, d in enumerate(damaged) if d is not None and d != answers[i]], dtype=int)
        bad = [damaged[i] for i in rows]
        out[kind] = {"rows": rows, "bad": bad, "bad_emb": embed_answers(bad) if bad else np.zeros((0, 0))}
    return out


def self_supervised_pool(raw_records: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """A seeded sample of single-turn SFT rows that pass every rule, as (prompt, answer): the rows whose
    record ids draw smallest, so a new corpus file changes only the rows it displaces and the judge's
    retraining re-embeds only those (the rest come from the text cache)."""
    sft = raw_records.filter((pl.col("kind") == "sft") & (pl.col("history").list.len().fill_null(0) == 0))
    sft = sft.unique("record_id", keep="first")
    sft = sft.filter(quality_rules(sft).list.len() == 0)
    sft = sft[smallest_draws(key_draws(sft["record_id"], seed), rows)]  # in draw order, whatever the input order
    return sft.select(prompt=user_prompt(pl.col("instruction"), pl.col("input")), answer=pl.col("output").fill_null(""))


# ---------------------------------------------------------------- training


def held_out_mask(texts: Sequence[str], test_fraction: float, seed: int) -> np.ndarray:
    """True for the held-out rows: whole groups of the same text (an instruction) go to one side, the texts
    with the smallest seeded draws, so new rows leave the other texts' sides as they were."""
    keys = pl.Series(list(texts), dtype=pl.String).fill_null("")
    unique = keys.unique(maintain_order=True).to_list()
    held = [unique[i] for i in smallest_draws(key_draws(unique, seed), round(test_fraction * len(unique)))]
    return keys.is_in(held).to_numpy()


def _fit_pairwise(good: np.ndarray, bad: np.ndarray, weight: np.ndarray, C: float) -> LogisticRegression:
    """A linear scorer w with w·good > w·bad: logistic regression on feature differences, both signs."""
    diff = good - bad
    X = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff), dtype=np.int8), np.zeros(len(diff), dtype=np.int8)]
    return LogisticRegression(C=C, fit_intercept=False, max_iter=5000).fit(X, y, sample_weight=np.r_[weight, weight])


def _calibrated(ranker: LogisticRegression, scale: StandardScaler, positive: np.ndarray,
                negative: np.ndarray) -> LogisticRegression:
    """One logistic regression giving P(acceptable) = sigmoid(a·(w·x̃) + b): Platt scaling of the ranker's
    score w·x̃ (x̃ standardized) fitted on held-out real answers (1) against damaged or mismatched ones (0),
    folded into a single model so the saved file is one trusted type."""
    def raw(X):
        return scale.transform(X) @ ranker.coef_[0]
    s = np.r_[raw(positive), raw(negative)]
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    weight = np.r_[np.full(len(positive), 0.5 / max(len(positive), 1)), np.full(len(negative), 0.5 / max(len(negative), 1))]
    platt = LogisticRegression(C=1e4, max_iter=1000).fit(s[:, None], y, sample_weight=weight * len(y))
    return _folded(ranker, scale, float(platt.coef_[0, 0]), float(platt.intercept_[0]))


def _folded(ranker: LogisticRegression, scale: StandardScaler, a: float = 1.0, b: float = 0.0) -> LogisticRegression:
    """One LogisticRegression whose decision function is a·(w·x̃) + b on raw features x (x̃ standardized):
    the scaler folded into the weights, so the saved file holds one trusted type."""
    # w·((x - mean) / sd) = (w / sd)·x - w·(mean / sd)
    w = ranker.coef_[0] / scale.scale_
    model = LogisticRegression()
    model.classes_ = np.array([0, 1])
    model.coef_ = (a * w)[None, :]
    model.intercept_ = np.array([b - a * float(w @ scale.mean_)])
    model.n_features_in_ = len(w)
    model.n_iter_ = np.array([0])
    return model


def train_quality_model(
    pairs: pl.DataFrame,
    pool: pl.DataFrame,
    embed_prompts: Embed,
    embed_answers: Embed,
    *,
    test_fraction: float = 0.25,
    C: float = DEFAULT_C,
    seed: int = 0,
) -> tuple[LogisticRegression | None, dict]:
    """Train the helpfulness judge; return it (None when there is nothing to train on) and its report.

    ``pairs``: helpfulness preference pairs (``prompt``, ``chosen``, ``rejected``), e.g. alpaca_eval;
    may be empty. ``pool``: SFT rows (``prompt``, ``answer``) that supply self-supervised negatives
    (``CORRUPTIONS``). Both are split by prompt text, so no instruction is on both sides; the judge is
    fitted on the train side, calibrated to P(acceptable answer) and measured on the held-out side, and
    the saved model is exactly the one measured. The report holds per-source held-out pairwise accuracy
    beside the length baseline, and ``gate``: None when the judge may be used, else why not.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    pairs = pairs.select(prompt=_texts(pairs["prompt"]), chosen=_texts(pairs["chosen"]),
                         rejected=_texts(pairs["rejected"])) if pairs.height else pl.DataFrame(
        schema={"prompt": pl.String, "chosen": pl.String, "rejected": pl.String})
    decided = pairs["chosen"].str.strip_chars() != pairs["rejected"].str.strip_chars()
    report: dict = {"n_pairs": pairs.height, "n_skipped_identical": int((~decided).sum()), "C": C, "seed": seed,
                    "test_fraction": test_fraction}
    pairs = pairs.filter(decided)
    pool = pool.filter(pl.col("answer").str.strip_chars() != "").unique("answer", keep="first", maintain_order=True)
    report["n_pool_rows"] = pool.height

    good_parts, bad_parts, weights, held = [], [], [], {}
    if pairs.height:
        test = held_out_mask(pairs["prompt"], test_fraction, seed)
        p_emb = embed_prompts(pairs["prompt"].to_list())
        g = quality_features(p_emb, embed_answers(pairs["chosen"].to_list()), pairs["prompt"], pairs["chosen"])
        b = quality_features(p_emb, embed_answers(pairs["rejected"].to_list()), pairs["prompt"], pairs["rejected"])
        report |= {"n_preference_train": int((~test).sum()), "n_preference_test": int(test.sum())}
        good_parts.append(g[~test]), bad_parts.append(b[~test])
        held["preference"] = (g[test], b[test], pairs.filter(test))
    if pool.height >= 4:
        test = held_out_mask(pool["prompt"], test_fraction, seed + 1)
        report |= {"n_pool_train": int((~test).sum()), "n_pool_test": int(test.sum())}
        for side, rows in (("train", pool.filter(~test)), ("test", pool.filter(test))):
            if rows.height < 2:
                continue
            p_emb, a_emb = embed_prompts(rows["prompt"].to_list()), embed_answers(rows["answer"].to_list())
            real = quality_features(p_emb, a_emb, rows["prompt"], rows["answer"])
            for kind, made in corruption_pairs(rows, p_emb, a_emb, embed_answers, seed).items():
                if not len(made["rows"]):
                    continue
                idx = made["rows"]
                bad = quality_features(p_emb[idx], made["bad_emb"], rows["prompt"][idx], made["bad"])
                if side == "train":
                    good_parts.append(real[idx]), bad_parts.append(bad)
                else:
                    held[kind] = (real[idx], bad, rows[idx].with_columns(bad=pl.Series(made["bad"])))
            if side == "test":
                held["real"] = real
    n_train = sum(len(g) for g in good_parts)
    if n_train < MIN_MEASURED_PAIRS or "real" not in held:
        report["gate"] = (f"too few pairs to train on (n={n_train}; {pairs.height} preference pairs, "
                          f"{pool.height} SFT answers)")
        return None, report
    # Preference pairs, few beside the corruption pairs, get PREFERENCE_WEIGHT of the training weight; the
    # corruption kinds share the rest equally.
    shares = [1.0] * len(good_parts)
    if pairs.height:
        shares = [PREFERENCE_WEIGHT] + [(1 - PREFERENCE_WEIGHT) / max(len(good_parts) - 1, 1)] * (len(good_parts) - 1)
    weights = [np.full(len(g), share / len(g)) for g, share in zip(good_parts, shares)]
    good, bad, weight = np.vstack(good_parts), np.vstack(bad_parts), np.concatenate(weights)
    weight = weight * len(weight) / weight.sum()
    scale = StandardScaler().fit(np.vstack([good, bad]))
    # The few fit and structure features are regularized less than the hundreds of embedding dimensions.
    scale.scale_[_FEW_FEATURES(good.shape[1])] /= FEW_FEATURES_BOOST
    ranker = _fit_pairwise(scale.transform(good), scale.transform(bad), weight, C)
    negatives = np.vstack([held[k][1] for k in CORRUPTIONS if k in held])
    model = _calibrated(ranker, scale, held["real"], negatives)

    report["held_out"] = evaluate_held_out(model, held)
    report["gate"] = gate_reason(report["held_out"])
    return model, report


def train_harmlessness_model(pairs: pl.DataFrame, embed_prompts: Embed, embed_answers: Embed, *,
                             test_fraction: float = 0.25, C: float = DEFAULT_C,
                             seed: int = 0) -> tuple[LogisticRegression | None, dict]:
    """A separate harmlessness score from HH-style pairs (chosen = the safer answer), on the same features;
    the model is the one measured (fitted on the train split of the prompts), its decision function the score.

    Kept apart from the helpfulness judge: on HH harmless-base the chosen answer is often the shorter,
    more evasive one, so folding it in would teach the judge to punish relevance and length. The report's
    ``gate`` says why it must not be used: too few pairs, or a held-out accuracy whose 95 % lower bound is
    not above both chance and the length baseline."""
    pairs = pairs.filter(_texts(pairs["chosen"]).str.strip_chars() != _texts(pairs["rejected"]).str.strip_chars())
    report = {"n_pairs": pairs.height, "test_fraction": test_fraction, "accuracy": None, "length_baseline": None}
    if pairs.height < 2 * MIN_MEASURED_PAIRS:
        report |= {"n_test_pairs": 0, "gate": f"too few pairs to train on (n={pairs.height})"}
        return None, report
    p_emb = embed_prompts(pairs["prompt"].to_list())
    good, bad = (quality_features(p_emb, embed_answers(pairs[side].to_list()), pairs["prompt"], pairs[side])
                 for side in ("chosen", "rejected"))
    test = held_out_mask(pairs["prompt"], test_fraction, seed)
    scale = StandardScaler().fit(np.vstack([good[~test], bad[~test]]))
    model = _folded(_fit_pairwise(scale.transform(good[~test]), scale.transform(bad[~test]),
                                  np.ones(int((~test).sum())), C), scale)
    accuracy = pairwise_accuracy(model.decision_function(good[test]), model.decision_function(bad[test]))
    length = length_baseline(pairs.filter(test)["chosen"].to_list(), pairs.filter(test)["rejected"].to_list())
    n_test = int(test.sum())
    report |= {"n_test_pairs": n_test, "accuracy": accuracy, "length_baseline": length}
    if accuracy is None:
        report["gate"] = f"too few held-out pairs to measure (n={n_test})"
        return model, report
    # 95 % lower bound: a score at chance on a few hundred pairs often lands a little above 0.5
    low = accuracy - 1.96 * math.sqrt(accuracy * (1 - accuracy) / n_test)
    bar = max(0.5, length)
    report["gate"] = None if low > bar else (f"harmlessness {accuracy:.3f} (95% lower bound {low:.3f}) "
                                             f"<= max(chance 0.5, length {length:.3f}) on {n_test} pairs")
    return model, report


def evaluate_held_out(model: LogisticRegression, held: dict) -> dict[str, dict]:
    """Per source: n, the judge's pairwise accuracy, the length baseline (None below the measurable size)."""
    out = {}
    for kind, value in held.items():
        if kind == "real":
            continue
        good, bad, rows = value
        bad_text = rows["rejected"] if kind == "preference" else rows["bad"]
        good_text = rows["chosen"] if kind == "preference" else rows["answer"]
        out[kind] = {"n": len(good),
                     "accuracy": pairwise_accuracy(model.decision_function(good), model.decision_function(bad)),
                     "length_baseline": length_baseline(good_text.to_list(), bad_text.to_list())}
    return out


def gate_reason(held_out: dict[str, dict]) -> str | None:
    """Why the judge must not be used, or None: it must beat the length baseline on held-out helpfulness
    pairs (when there are any) and rank the real answer above another question's answer
    ``MIN_OTHER_ANSWER_ACCURACY`` of the time."""
    other = held_out.get("other_answer", {})
    if other.get("accuracy") is None:
        return f"other_answer: too few pairs to measure (n={other.get('n', 0)})"
    if other["accuracy"] < MIN_OTHER_ANSWER_ACCURACY:
        return f"other_answer {other['accuracy']:.3f}<{MIN_OTHER_ANSWER_ACCURACY}"
    pref = held_out.get("preference")
    if pref is not None and pref["accuracy"] is not None and pref["accuracy"] <= pref["length_baseline"]:
        return f"preference {pref['accuracy']:.3f}<=length {pref['length_baseline']:.3f}"
    return None


Texts = pl.Series | Sequence[str | None]


def _features_for(model: LogisticRegression, prompt_emb: np.ndarray, response_emb: np.ndarray,
                  prompt_text: Texts, response_text: Texts) -> np.ndarray:
    X = quality_features(prompt_emb, response_emb, prompt_text, response_text)
    if X.shape[1] != model.n_features_in_:
        raise ValueError(f"model expects {model.n_features_in_} features, got {X.shape[1]}: "
                         f"embeddings from a different model?")
    return X


def quality_scores(model: LogisticRegression, prompt_emb: np.ndarray, response_emb: np.ndarray,
                   prompt_text: Texts, response_text: Texts) -> np.ndarray:
    """Calibrated P(an acceptable answer to this prompt), in [0, 1]."""
    return model.predict_proba(_features_for(model, prompt_emb, response_emb, prompt_text, response_text))[:, 1]


def harmlessness_scores(model: LogisticRegression, prompt_emb: np.ndarray, response_emb: np.ndarray,
                        prompt_text: Texts, response_text: Texts) -> np.ndarray:
    """The harmlessness model's score: higher = more like the answers HH raters chose as the less harmful.
    A ranking (standardized units), not a probability: compare rows, do not read one alone."""
    return model.decision_function(_features_for(model, prompt_emb, response_emb, prompt_text, response_text))


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
    "cut_off": "the answer stops mid-sentence: it ends with a comma, an opening bracket or a dangling word "
               "(and, the, of, to ...); poems, songs and tasks about words are exempt",
    "unbalanced_fence": "an odd number of ``` code fences: a code block that never closes",
    "repeated_text": "the answer repeats itself: one sentence, three times or more, is half its sentences, or its second "
                     "half copies its first; poems and songs are exempt",
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


# A comma ends a cut answer only after a line of three or more words (not "Best," under a letter).
_CUT_END = r"([，、(（]|(^|\n)[^\n]*\S[ \t]+\S+[ \t]+[^\n]*,|\s(and|or|the|a|an|of|to|with|for|in|that|is|are|was|were))$"
# Where an answer may end on a dangling word: verse, and tasks about words themselves.
_CUT_EXEMPT = r"(?i)poem|haiku|song|lyric|verse|rhyme|limerick|carol|chant|\b(sort|arrange|order|word|phrase)|诗|歌|词"


def _repeats_itself(text: str) -> bool:
    # Sentences with 10+ letters: table rules and list numbers are not text.
    parts = [p.strip() for p in _sentences(text) if len(re.findall(r"\w", p)) >= 10]
    top = max((parts.count(p) for p in set(parts)), default=0)
    if top >= 3 and top * 2 >= len(parts):
        return True
    half = len(text) // 2
    return len(text) >= 80 and text[:half].strip() == text[half:].strip()


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
        pl.col("output").fill_null("").alias("raw_output"),  # line breaks kept: sentences, fences
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
        "cut_off": answered & pl.col("raw_output").str.strip_chars().str.contains(_CUT_END) & ~prompt.str.contains(_CUT_EXEMPT),
        "unbalanced_fence": (pl.col("raw_output").str.count_matches("```") % 2) == 1,
        "repeated_text": pl.col("raw_output").map_elements(_repeats_itself, return_dtype=pl.Boolean)
        & ~prompt.str.contains(_CUT_EXEMPT),
    }
    reasons = pl.concat_list([pl.when(cond).then(pl.lit(code)) for code, cond in checks.items()])
    return texts.select(reasons.list.drop_nulls().alias("rule_reasons")).collect().to_series()


def hard_rule_failures(reasons: pl.Expr) -> pl.Expr:
    """The rule reasons that drop a row; ``SOFT_RULES`` are shown for review but never drop it."""
    return reasons.list.eval(pl.element().filter(~pl.element().is_in(sorted(SOFT_RULES))))
