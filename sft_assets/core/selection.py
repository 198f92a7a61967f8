"""Selection: every candidate in the pool kept or dropped, with every reason.

The signals (duplicates, quality, novelty, uncertainty, K-Center rank) are
computed upstream; this module only applies a ``SelectionPolicy`` to them, so
a policy change re-decides the pool without recomputing a signal, and "why
was this row dropped?" is a lookup in the decisions table.

The cascade, cheapest first (``STAGES``), has two kinds of stage:

- filters (duplicates, quality, novelty, uncertainty) judge each row on its
  own signals, so a dropped row lists all its faults, earliest stage first;
- budgets (category cap, diverse subset) share slots among the rows that
  passed every filter: a row already dropped takes no slot and gets no budget
  reason.

A relative threshold (the uncertainty quantile) is measured on the rows that
reach its stage, then applied as a value to every row.

A null signal has one of two meanings:

- a gate (``quality_gate``, ``novelty_gate``, ``option_gate``) names why the
  producing stage found its signal useless (e.g. the judge at chance on
  held-out data): the row is judged without that signal (quality: by the
  rules alone), any value it has is not used (it reads as null in the
  decisions), and ``missing_signals`` lists
  ``<signal>:<gate reason>``;
- no gate: the signal should be there and is not (a failed partition run, a
  row newly picked by K-Center). By default (``missing_* = "drop"``) a row
  that passed every other stage is then dropped by the last stage with
  ``missing_signal:<signal>``, so no row reaches the datasets unjudged;
  ``"keep"`` keeps it and names the signal in ``missing_signals``. Rows
  dropped earlier lack later signals by design (upstream skips them) and get
  no missing reason. Multiple-choice rows have no answer-quality stage: they
  never miss a quality score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import polars as pl

# The pool contract: one row per candidate, keyed by record_id.
SIGNAL_COLUMNS: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "corpus": pl.String,
    "kind": pl.String,  # sft or multiple_choice
    "category": pl.String,  # null: uncategorized, balanced as one category
    "exact_duplicate_of": pl.String,  # record_id of the copy kept; null for the copy kept
    "near_duplicate_of": pl.String,  # record_id of the cluster leader; null for a leader
    "quality_score": pl.Float64,  # the judge's calibrated P(an acceptable answer); SFT rows only
    "quality_reasons": pl.List(pl.String),  # rule failures (cheap filters); empty or null: none
    "novelty_prob": pl.Float64,  # share of held-out curated rows at most as like the curated set (novelty p-value)
    "ppl": pl.Float64,  # perplexity of the answer
    "ifd": pl.Float64,  # instruction-following difficulty
    # Multiple choice, or an item parsed from SFT text: summed probability of the
    # option letters. Where set, it is the row's uncertainty signal.
    "option_mass": pl.Float64,
    "diverse_rank": pl.Int64,  # position in the K-Center order; null: not in the diverse subset
    # Why a producing stage refused its signal (null: usable). Such a signal is not used and not missing.
    "quality_gate": pl.String,  # for quality_score
    "novelty_gate": pl.String,  # for novelty_prob
    "option_gate": pl.String,  # for option_mass
}

# Each gated signal and its gate column.
GATES = {"quality_score": "quality_gate", "novelty_prob": "novelty_gate", "option_mass": "option_gate"}

SELECTABLE_KINDS = ("sft", "multiple_choice")

STAGES = (
    "exact_duplicate_of",
    "near_duplicate_of",
    "failed_quality",
    "not_novel",
    "novel",  # novelty_keep="like_reference"
    "low_uncertainty",
    "category_cap",
    "outside_diverse_subset",
    "missing_signal",
)

# Reasons whose detail is a record id: counted by stage, not by id.
_ID_STAGES = ("exact_duplicate_of", "near_duplicate_of")

UNCATEGORIZED = "(none)"
DECISION_COLUMNS = ("kept", "reasons", "first_reason", "missing_signals")
_EPS = 1e-9

Missing = Literal["keep", "drop"]


@dataclass(frozen=True)
class SelectionPolicy:
    """Every threshold and budget of the selection, recorded with each decision."""

    # Similarity above which the near-duplicate stage clusters rows; decide()
    # trusts near_duplicate_of and keeps this here so the card states it.
    near_duplicate_threshold: float = 0.9
    # Quality (rule failures always drop): an SFT row whose judged P(acceptable answer) is below
    # quality_threshold fails. The judge is calibrated on held-out pool rows, a question's own whole answer
    # (acceptable) against another question's answer or a cut, shuffled or duplicated one (not), weighted
    # equally: below 0.5 the answer looks more like such a failure than like an answer to its question.
    # That balanced cut also drops correct short answers ("Clothing, Transportation, Food"), which look cut
    # off: on 2,000 unseen alpaca_en rows P < 0.5 dropped 24.8 % of the real answers, P < 0.2 dropped 4.4 %
    # while still catching 75 % of prompts given another row's answer (benchmarks/results/quality_drops.json,
    # cut_sweep). The default is that conservative cut; raise it to trade real answers for more failures caught.
    # Multiple-choice rows have no answer-quality stage (the answer is an option letter): never judged,
    # never "missing quality".
    quality_threshold: float = 0.2
    # Novelty: novel = less like the curated set than (1 - novelty_false_novel_rate) of the held-out
    # curated rows (novelty_prob <= the rate), so about that share of old rows is wrongly called novel.
    # "novel" drops the rest; "like_reference" (find more like the seeds) drops the novel ones.
    require_novel: bool = True
    novelty_false_novel_rate: float = 0.05
    novelty_keep: Literal["novel", "like_reference"] = "novel"
    # Uncertainty ("what the model has not learned"). Multiple-choice rows, and
    # rows with an option_mass, use it (lower = more uncertain); other rows use
    # ppl or ifd (higher = more uncertain). keep_fraction keeps the most
    # uncertain share of each (signal, category); the absolute bounds apply on
    # top. All None: stage off.
    uncertainty_signal: Literal["ppl", "ifd"] = "ppl"
    uncertainty_keep_fraction: float | None = 0.8
    min_uncertainty: float | None = None  # in units of uncertainty_signal
    max_option_mass: float | None = None
    # Budgets, off by default because they depend on the pool's size.
    category_cap: int | None = None
    # int: rows; float in (0, 1]: share of the rows reaching it (1.0 keeps every ranked survivor).
    diverse_budget: int | float | None = None
    # What a signal that is null without a gate means for a row that passed every stage.
    missing_quality: Missing = "drop"
    missing_novelty: Missing = "drop"
    missing_uncertainty: Missing = "drop"

    def __post_init__(self) -> None:
        problems = []
        for name in ("quality_threshold", "near_duplicate_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if not 0.0 < self.novelty_false_novel_rate < 1.0:
            problems.append("novelty_false_novel_rate must be in (0, 1)")
        if self.novelty_keep not in ("novel", "like_reference"):
            problems.append("novelty_keep must be 'novel' or 'like_reference'")
        if self.uncertainty_signal not in ("ppl", "ifd"):
            problems.append("uncertainty_signal must be 'ppl' or 'ifd'")
        if self.uncertainty_keep_fraction is not None and not 0.0 < self.uncertainty_keep_fraction <= 1.0:
            problems.append("uncertainty_keep_fraction must be in (0, 1]")
        if self.category_cap is not None and (isinstance(self.category_cap, bool) or self.category_cap < 1):
            problems.append("category_cap must be a positive int")
        budget = self.diverse_budget
        if budget is not None and (
            isinstance(budget, bool)
            or (isinstance(budget, int) and budget < 1)
            or (isinstance(budget, float) and not 0.0 < budget <= 1.0)
        ):
            problems.append("diverse_budget must be an int >= 1 (rows) or a float in (0, 1] (share)")
        for name in ("missing_quality", "missing_novelty", "missing_uncertainty"):
            if getattr(self, name) not in ("keep", "drop"):
                problems.append(f"{name} must be 'keep' or 'drop'")
        if problems:
            raise ValueError("invalid SelectionPolicy: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain values for asset metadata and the dataset card."""
        return asdict(self)

    def uncertainty_applies(self, signal: str) -> bool:
        """Whether the uncertainty stage judges rows measured by ``signal``."""
        absolute = self.max_option_mass if signal == "option_mass" else self.min_uncertainty
        return self.uncertainty_keep_fraction is not None or absolute is not None


def decide(pool: pl.DataFrame, policy: SelectionPolicy = SelectionPolicy()) -> pl.DataFrame:
    """One decision per pool row: the pool's columns plus ``kept``, ``reasons``
    (cascade order), ``first_reason`` and ``missing_signals``, sorted by record_id.

    The result does not depend on the pool's row order; decision columns
    already in the pool (a re-decision) are replaced."""
    pool = pool.drop(DECISION_COLUMNS, strict=False)
    frame = _validated(pool).with_columns(
        _category=pl.col("category").fill_null(UNCATEGORIZED),
        _uncertainty=_uncertainty(policy),
        reasons=pl.lit([], dtype=pl.List(pl.String)),
    )
    for stage in (_duplicates, _quality, _novelty, _low_uncertainty, _category_cap, _diverse_subset, _missing):
        frame = stage(frame, policy)
    return (
        frame.with_columns(
            kept=pl.col("reasons").list.len() == 0,
            first_reason=pl.col("reasons").list.first(),
            missing_signals=_missing_signals(policy),
        )
        .select(*pool.columns, *DECISION_COLUMNS)
        .sort("record_id")
    )


def reason_counts(decisions: pl.DataFrame) -> pl.DataFrame:
    """Rows per reason (``rows``) and rows for which it is the first reason
    (``first``; these sum to the dropped rows), in cascade order.

    Reasons are counted by label: the duplicate's id and a signal's value are
    dropped (``low_uncertainty:ppl=3.1<4.2`` counts as ``low_uncertainty:ppl``)."""
    stage = pl.col("reason").str.extract(r"^([^:]+)")
    return (
        decisions.select("record_id", "reasons", position=pl.int_ranges(pl.col("reasons").list.len()))
        .explode("reasons", "position")
        .drop_nulls("reasons")
        .rename({"reasons": "reason"})
        .with_columns(
            stage=stage,
            reason=pl.when(stage.is_in(_ID_STAGES))
            .then(stage)
            .when(stage == "category_cap")
            .then(pl.col("reason"))
            .otherwise(pl.col("reason").str.replace(r"=.*$", "")),
        )
        .group_by("stage", "reason")
        .agg(rows=pl.col("record_id").n_unique(), first=(pl.col("position") == 0).sum())
        .with_columns(_order=pl.col("stage").replace_strict(STAGES, list(range(len(STAGES))), default=len(STAGES)))
        .sort("_order", "rows", "reason", descending=[False, True, False])
        .select("stage", "reason", "rows", "first")
    )


def share_count(n, fraction: float):
    """Rows in a share of n (an int or a length expression), rounded up so a small category keeps one.

    The epsilon stops float noise (0.7 * 10 = 7.000000000000001) from adding a row."""
    return (n * fraction - _EPS).ceil() if isinstance(n, pl.Expr) else math.ceil(n * fraction - _EPS)


# ---------------------------------------------------------------- input


def _validated(pool: pl.DataFrame) -> pl.DataFrame:
    missing = [name for name in SIGNAL_COLUMNS if name not in pool.columns]
    if missing:
        raise ValueError(f"pool lacks signal columns {missing}; see selection.SIGNAL_COLUMNS")
    frame = pool.with_columns(pl.col(name).cast(dtype) for name, dtype in SIGNAL_COLUMNS.items())
    if frame["record_id"].null_count() or frame["record_id"].n_unique() != frame.height:
        raise ValueError("pool record_id must be non-null and unique")
    bad_kinds = sorted(set(frame["kind"].drop_nulls().unique()) - set(SELECTABLE_KINDS))
    if frame["kind"].null_count() or bad_kinds:
        raise ValueError(f"pool kind must be one of {SELECTABLE_KINDS}; found {bad_kinds or 'null'}")
    # A gated signal is not used: null to every stage and in the decisions (its producer keeps the value).
    return _checked_scores(frame).with_columns(
        pl.col("quality_reasons").fill_null([]),
        *(pl.when(pl.col(gate).is_null()).then(pl.col(signal)).alias(signal) for signal, gate in GATES.items()),
    )


# The values each score can take; a tolerance absorbs float rounding (a mass summed from probabilities).
SCORE_RANGES: dict[str, tuple[float, float, str]] = {
    "quality_score": (0.0, 1.0, "a probability"),
    "novelty_prob": (0.0, 1.0, "a probability"),
    "option_mass": (0.0, 1.0, "a sum of option probabilities"),
    "ppl": (1.0, math.inf, "a perplexity, exp of a mean of non-negative losses"),
    "ifd": (0.0, math.inf, "a ratio of perplexities"),
}
_RANGE_TOLERANCE = 1e-6


def _checked_scores(frame: pl.DataFrame) -> pl.DataFrame:
    """NaN scores as null (missing): polars orders NaN above every number, so a NaN novelty would pass
    ``> threshold`` and drop the row as not novel. A finite value outside its range, or an infinite one,
    is an upstream bug: a clear error, not a decision."""
    frame = frame.with_columns(pl.col(name).fill_nan(None) for name in SCORE_RANGES)
    problems = []
    for name, (low, high, what) in SCORE_RANGES.items():
        value = pl.col(name)
        bad = frame.filter(value.is_infinite() | (value < low - _RANGE_TOLERANCE) | (value > high + _RANGE_TOLERANCE))
        if bad.height:
            example = bad.row(0, named=True)
            problems.append(f"{name} must be {what} in [{low:g}, {high:g}]: {bad.height} rows are not, e.g. "
                            f"{example[name]!r} (record_id {example['record_id']})")
    if problems:
        raise ValueError("impossible scores in the pool: " + "; ".join(problems))
    return frame


# ---------------------------------------------------------------- stages

_ALIVE = pl.col("reasons").list.len() == 0  # no reason from an earlier stage
# Rows judged by option mass: multiple choice, or an item parsed from SFT text that was scored as one.
_BY_MASS = (pl.col("kind") == "multiple_choice") | pl.col("option_mass").is_not_null()


def _append(frame: pl.DataFrame, *reasons: pl.Expr) -> pl.DataFrame:
    """Add a stage's reasons (string or list expressions, null = none) after the earlier ones."""
    return frame.with_columns(reasons=pl.concat_list("reasons", *reasons).list.drop_nulls())


def _value(expr: pl.Expr) -> pl.Expr:
    return expr.round(3).cast(pl.String)


def _duplicates(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    return _append(
        frame,
        pl.format("exact_duplicate_of:{}", pl.col("exact_duplicate_of")),
        pl.format("near_duplicate_of:{}", pl.col("near_duplicate_of")),
    )


def _quality(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    score, cut = pl.col("quality_score"), policy.quality_threshold
    return _append(
        frame,
        pl.col("quality_reasons").list.eval(pl.lit("failed_quality:") + pl.element()),
        # multiple choice has no answer-quality stage (its answer is an option letter)
        pl.when((pl.col("kind") == "sft") & (score < cut)).then(pl.format(f"failed_quality:p={{}}<{cut:g}", _value(score))),
    )


def quality_margin(decisions: pl.DataFrame, policy: SelectionPolicy, n: int = 10) -> pl.DataFrame:
    """The ``n`` scored SFT rows just above the quality cut (``side`` = kept) and the ``n`` just below it
    (dropped), closest first: what a curator reads to judge the judge. Rows a duplicate or a rule dropped
    are left out: the score did not decide them."""
    cut = policy.quality_threshold
    judged = decisions.filter(
        (pl.col("kind") == "sft") & pl.col("quality_score").is_not_null() & pl.col("quality_gate").is_null()
        & pl.col("exact_duplicate_of").is_null() & pl.col("near_duplicate_of").is_null()
        & (pl.col("quality_reasons").fill_null([]).list.len() == 0))
    above = judged.filter(pl.col("quality_score") >= cut).sort("quality_score", "record_id").head(n)
    below = judged.filter(pl.col("quality_score") < cut).sort("quality_score", "record_id", descending=[True, False]).head(n)
    return pl.concat([above.with_columns(side=pl.lit("kept")), below.with_columns(side=pl.lit("dropped"))]).select(
        "side", "record_id", "corpus", "quality_score")


def _novelty(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    """``not_novel:p=0.43>0.05``: the row is at most as unlike the curated set as 43 % of the held-out
    curated rows; in ``like_reference`` mode, ``novel:p=0.01<=0.05`` drops the novel rows instead."""
    if not policy.require_novel:
        return frame
    prob, rate = pl.col("novelty_prob"), policy.novelty_false_novel_rate
    sign = ">" if policy.novelty_keep == "novel" else "<="
    name = "not_novel" if policy.novelty_keep == "novel" else "novel"
    return _append(frame, pl.when(dropped_by_novelty(prob, rate, policy.novelty_keep)).then(
        pl.format(f"{name}:p={{}}{sign}{rate:g}", _value(prob))))


def novelty_cut(novelty: pl.DataFrame) -> dict:
    """The novelty stage's cut as ``SelectionPolicy`` fields, read from its table (constant columns
    ``novelty_cut`` and ``novelty_keep``, where ``all`` means no filtering), so the diverse subset and the
    selection apply one cut. A table without them (written before they existed, or empty): the defaults."""
    if not {"novelty_cut", "novelty_keep"} <= set(novelty.columns) or novelty.height == 0:
        return {}
    keep = novelty["novelty_keep"][0]
    return {"require_novel": keep != "all", "novelty_false_novel_rate": float(novelty["novelty_cut"][0]),
            "novelty_keep": "novel" if keep == "all" else keep}


def not_wanted_by_novelty(novelty: pl.DataFrame) -> pl.Series:
    """The record ids the novelty cut drops (none while its gate refuses the signal, or with ``all``)."""
    cut = SelectionPolicy(**novelty_cut(novelty))
    if not cut.require_novel:
        return pl.Series("record_id", [], dtype=pl.String)
    return novelty.filter(
        dropped_by_novelty(pl.col("novelty_prob"), cut.novelty_false_novel_rate, cut.novelty_keep))["record_id"]


def dropped_by_novelty(prob: pl.Expr, rate: float, keep: str) -> pl.Expr:
    """Whether the novelty cut drops a row: ``keep="novel"`` drops rows with ``novelty_prob`` above the
    false-novel rate, ``"like_reference"`` the novel ones. Null where the signal is (gated or missing)."""
    return prob > rate if keep == "novel" else prob <= rate


def _uncertainty(policy: SelectionPolicy) -> pl.Expr:
    """One scale for every row, higher = more uncertain: minus the option mass, or the SFT signal."""
    return pl.when(_BY_MASS).then(-pl.col("option_mass")).otherwise(pl.col(policy.uncertainty_signal))


def _signal_name(policy: SelectionPolicy) -> pl.Expr:
    return pl.when(_BY_MASS).then(pl.lit("option_mass")).otherwise(pl.lit(policy.uncertainty_signal))


def _low_uncertainty(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    """Drop rows below the bound: the quantile cut of their (signal, category) and the
    absolute bound, whichever is higher. Signals are not comparable, so never pooled."""
    absolute = pl.when(_BY_MASS).then(
        pl.lit(None if policy.max_option_mass is None else -policy.max_option_mass, dtype=pl.Float64)
    ).otherwise(pl.lit(policy.min_uncertainty, dtype=pl.Float64))
    frame = frame.with_columns(_bound=absolute, _signal=_signal_name(policy))
    if policy.uncertainty_keep_fraction is not None:
        keep = share_count(pl.len(), policy.uncertainty_keep_fraction).cast(pl.Int64)
        cuts = (
            frame.filter(_ALIVE & pl.col("_uncertainty").is_not_null())
            .group_by("_signal", "_category")
            .agg(_cut=pl.col("_uncertainty").sort(descending=True).get(keep - 1))
        )
        frame = frame.join(cuts, on=["_signal", "_category"], how="left", maintain_order="left").with_columns(
            _bound=pl.max_horizontal("_bound", "_cut")
        )
    u, bound = pl.col("_uncertainty"), pl.col("_bound")
    shown_bound = pl.when(_BY_MASS).then(-bound).otherwise(bound)
    return _append(
        frame,
        pl.when(u < bound).then(
            pl.format(
                "low_uncertainty:{}={}{}{}",
                pl.col("_signal"),
                _value(pl.when(_BY_MASS).then(-u).otherwise(u)),
                pl.when(_BY_MASS).then(pl.lit(">")).otherwise(pl.lit("<")),
                _value(shown_bound),
            )
        ),
    ).drop("_bound", "_cut", "_signal", strict=False)


def _uncertainty_on(policy: SelectionPolicy) -> pl.Expr:
    return pl.when(_BY_MASS).then(pl.lit(policy.uncertainty_applies("option_mass"))).otherwise(
        pl.lit(policy.uncertainty_applies(policy.uncertainty_signal))
    )


def _category_cap(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    """Keep at most ``category_cap`` survivors per category: first in K-Center
    order, then the most uncertain, then by record_id (a content hash, so an
    unbiased sample when no signal orders them)."""
    if policy.category_cap is None:
        return frame
    slots = (
        frame.filter(_ALIVE)
        .sort(
            "_category", "diverse_rank", "_uncertainty", "record_id",
            descending=[False, False, True, False], nulls_last=True,
        )
        .select("record_id", _slot=pl.int_range(pl.len()).over("_category"))
    )
    frame = frame.join(slots, on="record_id", how="left", maintain_order="left")
    return _append(
        frame,
        pl.when(pl.col("_slot") >= policy.category_cap).then(pl.format("category_cap:{}", pl.col("_category"))),
    ).drop("_slot")


def _diverse_subset(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    """Keep the first ``diverse_budget`` survivors in K-Center order; rows without a rank are outside."""
    if policy.diverse_budget is None:
        return frame
    survivors = frame.filter(_ALIVE)
    ranked = survivors.filter(pl.col("diverse_rank").is_not_null())
    if survivors.height and not ranked.height:
        raise ValueError("diverse_budget is set but no surviving row has a diverse_rank: was K-Center run?")
    budget = policy.diverse_budget
    if isinstance(budget, float):
        budget = share_count(survivors.height, budget)
    chosen = ranked.sort("diverse_rank", "record_id").head(budget)["record_id"].implode()
    return _append(frame, pl.when(_ALIVE & ~pl.col("record_id").is_in(chosen)).then(pl.lit("outside_diverse_subset")))


def _missing(frame: pl.DataFrame, policy: SelectionPolicy) -> pl.DataFrame:
    """Last stage: a row that passed every other stage but lacks, with no gate, a signal a stage in
    force needed, would reach the datasets unjudged; with ``missing_* = "drop"`` it does not."""
    settings = (policy.missing_quality, policy.missing_novelty, policy.missing_uncertainty)
    return _append(frame, *(
        pl.when(pl.lit(setting == "drop") & _ALIVE & unmeasured).then(pl.format("missing_signal:{}", name))
        for setting, (name, unmeasured) in zip(settings, _unmeasured(policy))
    ))


def _unmeasured(policy: SelectionPolicy) -> tuple[tuple[pl.Expr, pl.Expr], ...]:
    """(signal name, whether the row lacks it with no gate to say why) for quality, novelty, uncertainty."""
    ungated = {signal: pl.col(gate).is_null() for signal, gate in GATES.items()}
    # an option-mass row whose gate refused it has no uncertainty signal to miss
    uncertainty_gated = (pl.col("kind") == "multiple_choice") & ~ungated["option_mass"]
    return (
        (pl.lit("quality_score"),
         (pl.col("kind") == "sft") & pl.col("quality_score").is_null() & ungated["quality_score"]),
        (pl.lit("novelty_prob"),
         pl.lit(policy.require_novel) & pl.col("novelty_prob").is_null() & ungated["novelty_prob"]),
        (_signal_name(policy),
         _uncertainty_on(policy) & pl.col("_uncertainty").is_null() & ~uncertainty_gated),
    )


# ---------------------------------------------------------------- output


def _missing_signals(policy: SelectionPolicy) -> pl.Expr:
    """The signals a stage in force had no value for, whatever the row's fate: by name when
    nothing says why, as ``<signal>:<gate reason>`` when a gate refused it."""
    gated = [
        pl.when(pl.col(gate).is_not_null() & (pl.lit(signal != "novelty_prob") | pl.lit(policy.require_novel)))
        .then(pl.format(f"{signal}:{{}}", pl.col(gate)))
        for signal, gate in GATES.items()
    ]
    return pl.concat_list(
        *(pl.when(unmeasured).then(name) for name, unmeasured in _unmeasured(policy)), *gated
    ).list.drop_nulls()
