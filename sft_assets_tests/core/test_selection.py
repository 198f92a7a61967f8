"""Selection policy on a real, long-tailed slice of the shared corpora.

The records are real (English Alpaca, Alpaca-CoT, Chinese categories, CMMLU
multiple choice); the signals upstream stages would compute are synthesized
here, deterministically and in the way those stages behave: duplicates from
the text, quality from the answer, no novelty for non-English rows (the
reference set is English), no PPL for rows the cheap filters dropped.
"""

import hashlib
import json
import math
import re

import polars as pl
import pytest

from sft_assets.core.records import RECORD_SCHEMA, record_id
from sft_assets.core.selection import (
    DECISION_COLUMNS,
    SIGNAL_COLUMNS,
    STAGES,
    SelectionPolicy,
    decide,
    not_wanted_by_novelty,
    novelty_cut,
    reason_counts,
)

SLICES = {  # path -> rows taken
    "alpaca_en/alpaca_data-0-3252.json": 200,
    "alpaca_cot/creak_train.json": 60,
    "alpaca_cot/aqua_train.json": 40,
    "zh_categories/学术问题.json": 80,
    "zh_categories/建议类问题.json": 23,
    "zh_categories/饮食问题.json": 9,
    "zh_categories/三国问题.json": 7,
    "cmmlu/test/agronomy.csv": 40,
    "cmmlu/dev/marketing.csv": 5,
}
PLANTED_COPIES = 5  # English rows re-cased: a different record_id, the same text to an exact-dup check


def unit(record_id_: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) for a row: a stand-in for a model's output."""
    return int(hashlib.blake2b(f"{salt}:{record_id_}".encode(), digest_size=6).hexdigest(), 16) / 16**12


def real_records(read_corpus) -> pl.DataFrame:
    frames = [read_corpus(path).records.head(n) for path, n in SLICES.items()]
    copies = []
    for row in frames[0].head(PLANTED_COPIES).iter_rows(named=True):
        fields = {"instruction": row["instruction"].upper(), "input": row["input"], "output": row["output"],
                  "history": row["history"]}
        copies.append({**row, **fields, "record_id": record_id("sft", fields), "source_row": None})
    return pl.concat([*frames, pl.DataFrame(copies, schema=RECORD_SCHEMA)])


def _loose_text(row: dict) -> str:
    text = " ".join(str(row[k] or "") for k in ("instruction", "input", "output", "question"))
    return re.sub(r"\s+", " ", text.casefold()).strip()


def synthesize_signals(records: pl.DataFrame) -> pl.DataFrame:
    """The pool signals, as the upstream stages would leave them."""
    rows = sorted(records.iter_rows(named=True), key=lambda r: (r["corpus"], r["source_row"] is None,
                                                              r["source_row"] or 0, r["record_id"]))
    first_exact, leaders, out = {}, {}, []
    for row in rows:
        rid = row["record_id"]
        exact = first_exact.setdefault(_loose_text(row), rid)
        head = " ".join((row["instruction"] or row["question"] or "").casefold().split()[:4])
        leader = leaders.setdefault((row["lang"], head), rid) if exact == rid else None
        answer = row["output"] if row["kind"] == "sft" else row["question"]
        rules = ["too_short"] if len((answer or "").strip()) < 2 else []
        cheap_pass = exact == rid and leader == rid and not rules
        too_long = len(row["output"] or "") > 1000  # the LM stage skips these: a missing PPL
        mc = row["kind"] == "multiple_choice"
        out.append({
            "record_id": rid, "corpus": row["corpus"], "kind": row["kind"], "category": row["category"],
            "exact_duplicate_of": None if exact == rid else exact,
            "near_duplicate_of": None if leader in (rid, None) else leader,
            "quality_score": round(min(1.0, 0.2 + len(answer or "") / 150) * (0.6 + 0.4 * unit(rid, "q")), 4),
            "quality_reasons": rules,
            # A p-value: half the English rows novel at the default 0.05.
            "novelty_prob": round(0.1 * unit(rid, "novelty"), 4) if row["lang"] == "en" else None,
            "ppl": round(1 + 30 * unit(rid, "ppl"), 3) if cheap_pass and not too_long and not mc else None,
            "ifd": round(unit(rid, "ifd"), 4) if cheap_pass and not mc else None,
            "option_mass": round(unit(rid, "mass"), 4) if cheap_pass and mc else None,
            "diverse_rank": None,
            # the novelty stage refuses rows unlike its (English) reference set
            "novelty_gate": None if row["lang"] == "en" else "gate=reference set is English",
        })
    pool = pl.DataFrame(out, schema=SIGNAL_COLUMNS)
    ranked = pool.filter(pl.col("ppl").is_not_null() | pl.col("option_mass").is_not_null())
    order = sorted(ranked["record_id"], key=lambda rid: unit(rid, "kcenter"))
    return pool.with_columns(diverse_rank=pl.col("record_id").replace_strict(
        order, list(range(len(order))), default=None, return_dtype=pl.Int64))


@pytest.fixture(scope="module")
def records(read_corpus):
    return real_records(read_corpus)


@pytest.fixture(scope="module")
def pool(records):
    return synthesize_signals(records)


@pytest.fixture(scope="module")
def decisions(pool):
    return decide(pool)


def _stage(reason: str) -> str:
    return reason.split(":", 1)[0]


def _alive_before(row: dict, stage: str) -> bool:
    return all(STAGES.index(_stage(r)) >= STAGES.index(stage) for r in row["reasons"])


def test_the_slice_is_real_and_long_tailed(pool):
    assert pool.height == sum(SLICES.values()) + PLANTED_COPIES
    sizes = pool.group_by("category").len()["len"]
    assert sizes.max() >= 20 * sizes.min()
    assert pool["exact_duplicate_of"].null_count() < pool.height  # planted copies found
    assert pool["near_duplicate_of"].null_count() < pool.height  # real "Generate a list of ..." clusters
    assert pool["kind"].to_list().count("multiple_choice") == 45


def test_one_decision_per_candidate(pool, decisions):
    assert decisions.columns == [*SIGNAL_COLUMNS, *DECISION_COLUMNS]
    assert decisions.height == pool.height
    assert sorted(decisions["record_id"]) == sorted(pool["record_id"]) == decisions["record_id"].to_list()
    kept, dropped = decisions["kept"].sum(), (~decisions["kept"]).sum()
    assert kept + dropped == pool.height and 0 < kept < pool.height


def test_reasons_are_in_cascade_order_and_kept_means_no_reason(decisions):
    for row in decisions.iter_rows(named=True):
        assert row["kept"] == (row["reasons"] == [])
        assert row["first_reason"] == (row["reasons"][0] if row["reasons"] else None)
        order = [STAGES.index(_stage(r)) for r in row["reasons"]]
        assert order == sorted(order), row["reasons"]


def _shown(reason: str) -> tuple[str, float | None]:
    """A reason as (text without its value, the value): ``not_novel:p=0.93>0.05`` -> (``not_novel:p=>0.05``, 0.93)."""
    match = re.match(r"^(.*=)(-?[0-9.]+)([<>].*)$", reason)
    return (match.group(1) + match.group(3), float(match.group(2))) if match else (reason, None)


def test_filters_apply_every_reason_the_signals_give(decisions):
    """An independent oracle for the per-row filters under the default policy."""
    policy = SelectionPolicy()
    cut = policy.quality_threshold
    for row in decisions.iter_rows(named=True):
        expected = []
        if row["exact_duplicate_of"]:
            expected.append((f"exact_duplicate_of:{row['exact_duplicate_of']}", None))
        if row["near_duplicate_of"]:
            expected.append((f"near_duplicate_of:{row['near_duplicate_of']}", None))
        expected += [(f"failed_quality:{rule}", None) for rule in row["quality_reasons"]]
        if row["kind"] == "sft" and row["quality_score"] < cut:  # multiple choice has no answer-quality stage
            expected.append((f"failed_quality:p=<{cut:g}", row["quality_score"]))
        if row["novelty_prob"] is not None and row["novelty_prob"] > policy.novelty_false_novel_rate:
            expected.append((f"not_novel:p=>{policy.novelty_false_novel_rate:g}", row["novelty_prob"]))
        got = [_shown(r) for r in row["reasons"] if _stage(r) in STAGES[:4]]
        assert [text for text, _ in got] == [text for text, _ in expected]
        for (_, shown), (_, value) in zip(got, expected):
            assert shown == value or abs(shown - value) <= 0.0005 + 1e-12


def test_novelty_cut_is_the_false_novel_rate_in_both_modes(pool):
    """novel_prob is a p-value: the default keeps p <= 0.05 (novel), like_reference keeps the rest."""
    for policy, stage, dropped in (
        (SelectionPolicy(novelty_false_novel_rate=0.03), "not_novel", lambda p: p > 0.03),
        (SelectionPolicy(novelty_keep="like_reference"), "novel", lambda p: p <= 0.05),
    ):
        judged = 0
        for row in decide(pool, policy).iter_rows(named=True):
            if row["novelty_prob"] is not None and _alive_before(row, "not_novel"):
                judged += 1
                shown = [r for r in row["reasons"] if _stage(r) == stage]
                assert bool(shown) == dropped(row["novelty_prob"]), (row["novelty_prob"], row["reasons"])
                assert all(r.startswith(f"{stage}:p=") for r in shown)
        assert judged > 100


def test_the_novelty_stage_owns_the_cut_that_the_subset_and_the_selection_apply(pool):
    """novelty_scores carries its cut (novelty_cut, novelty_keep): the rows the diverse subset leaves out are
    exactly those the selection drops for novelty, in each mode; a refused gate or keep=all leaves none out."""
    scored = pool.select("record_id", "novelty_prob", "novelty_gate").filter(pl.col("novelty_prob").is_not_null())
    for rate, keep, stage in ((0.03, "novel", "not_novel"), (0.05, "like_reference", "novel")):
        table = scored.with_columns(novelty_cut=pl.lit(rate), novelty_keep=pl.lit(keep))
        policy = SelectionPolicy(**novelty_cut(table))
        assert (policy.novelty_false_novel_rate, policy.novelty_keep, policy.require_novel) == (rate, keep, True)
        dropped = decide(pool, policy).filter(pl.col("reasons").list.eval(
            pl.element().str.starts_with(f"{stage}:p=")).list.any())["record_id"]
        left_out = not_wanted_by_novelty(table)
        assert 0 < left_out.len() < table.height and set(left_out) == set(dropped)
    off = scored.with_columns(novelty_cut=pl.lit(0.05), novelty_keep=pl.lit("all"))
    assert not SelectionPolicy(**novelty_cut(off)).require_novel and not_wanted_by_novelty(off).is_empty()
    gated = scored.with_columns(novelty_prob=None, novelty_cut=pl.lit(0.05), novelty_keep=pl.lit("novel"))
    assert not_wanted_by_novelty(gated).is_empty()
    assert novelty_cut(scored) == {}  # a table written before the cut travelled with it: the defaults


def test_uncertainty_keeps_the_most_uncertain_share_of_each_category(decisions):
    fraction = SelectionPolicy().uncertainty_keep_fraction
    rows = [r for r in decisions.iter_rows(named=True) if _alive_before(r, "low_uncertainty")]
    groups: dict = {}
    for row in rows:
        value = -row["option_mass"] if row["kind"] == "multiple_choice" else row["ppl"]
        if value is not None:
            low = any(_stage(r) == "low_uncertainty" for r in row["reasons"])
            groups.setdefault((row["kind"], row["category"]), []).append((value, low))
    assert len(groups) >= 5
    for members in groups.values():
        passed = [v for v, low in members if not low]
        failed = [v for v, low in members if low]
        assert len(passed) >= math.ceil(fraction * len(members) - 1e-9)
        assert not failed or max(failed) < min(passed)
    mc_low = decisions.filter(pl.col("reasons").list.join("|").str.contains("low_uncertainty:option_mass="))
    assert mc_low.height and all(">" in r for r in mc_low["reasons"].list.last())


QUALITY_GATE = "gate=alpaca_eval 0.48<length 0.75"
OPTION_GATE = "gate=at chance: 9/40 correct, binomial p=0.69 against 1/4"


def test_a_gate_means_the_row_is_judged_without_that_signal(pool, decisions):
    """The Chinese rows carry the novelty gate (the reference set is English): not dropped, named with why."""
    gated = decisions.filter(pl.col("novelty_gate").is_not_null())
    assert gated.height > 50 and gated["novelty_prob"].is_null().all()
    assert not gated["reasons"].list.join("|").str.contains("not_novel|missing_signal:novelty").any()
    assert gated["missing_signals"].list.contains("novelty_prob:gate=reference set is English").all()
    assert gated["kept"].any()

    refused = pool.with_columns(quality_gate=pl.lit(QUALITY_GATE),
                                option_gate=pl.when(pl.col("corpus").str.starts_with("cmmlu/")).then(pl.lit(OPTION_GATE)))
    balanced = SelectionPolicy(quality_threshold=0.5)  # enough synthetic scores below the cut to see them go
    scored, judged = decide(pool, balanced), decide(refused, balanced)
    reasons = judged["reasons"].list.join("|")
    assert not reasons.str.contains("failed_quality:p|missing_signal:quality_score").any()
    assert reasons.str.contains("failed_quality:too_short").any()  # the rules still judge
    assert judged["missing_signals"].list.contains(f"quality_score:{QUALITY_GATE}").all()
    assert judged["quality_score"].is_null().all()  # not used, so not shown as the row's score
    exams = judged.filter(pl.col("corpus").str.starts_with("cmmlu/"))
    assert exams["missing_signals"].list.contains(f"option_mass:{OPTION_GATE}").all()
    assert not exams["reasons"].list.join("|").str.contains("low_uncertainty|missing_signal").any()
    by_score_alone = scored.filter(pl.col("reasons").list.eval(pl.element().str.starts_with(
        "failed_quality:p=")).list.all() & ~pl.col("kept"))["record_id"]
    assert by_score_alone.len() >= 20
    assert not judged.filter(pl.col("record_id").is_in(by_score_alone.implode()))["reasons"].list.join("|") \
        .str.contains("failed_quality").any()
    assert judged["kept"].sum() > scored["kept"].sum()


def test_a_signal_missing_without_a_gate_drops_the_row_by_default(pool, decisions):
    """A failed partition run: the scores of one corpus never arrive, and nothing says why."""
    lost = pl.col("corpus").is_in(["alpaca_en/alpaca_data-0-3252.json", "cmmlu/test/agronomy.csv"])
    unscored = pool.with_columns(quality_score=pl.when(lost).then(None).otherwise(pl.col("quality_score")),
                                 option_mass=pl.when(lost).then(None).otherwise(pl.col("option_mass")))
    strict, lenient = decide(unscored), decide(unscored, SelectionPolicy(
        missing_quality="keep", missing_novelty="keep", missing_uncertainty="keep"))
    assert lenient.filter(lost & pl.col("kept")).height >= 20  # they would reach the datasets unjudged
    for row, was in zip(strict.iter_rows(named=True), lenient.iter_rows(named=True)):
        expected = []
        if was["kept"]:
            if row["kind"] == "sft" and row["quality_score"] is None:  # exam items have no answer quality
                expected.append("missing_signal:quality_score")
            if row["novelty_prob"] is None and row["novelty_gate"] is None:
                expected.append("missing_signal:novelty_prob")
            if row["kind"] == "multiple_choice" and row["option_mass"] is None:
                expected.append("missing_signal:option_mass")
            elif row["kind"] == "sft" and row["ppl"] is None and row["option_mass"] is None:
                expected.append("missing_signal:ppl")
            assert row["reasons"] == expected
            assert row["missing_signals"] == [r.split(":")[1] for r in expected] + (
                ["novelty_prob:gate=reference set is English"] if row["novelty_gate"] else [])
        else:
            assert row["reasons"] == was["reasons"]
    dropped = strict.filter(pl.col("first_reason").str.starts_with("missing_signal:"))
    assert dropped.filter(lost).height >= 20 and not dropped.filter(lost.not_()).filter(
        pl.col("first_reason") == "missing_signal:quality_score").height
    assert dropped.filter(pl.col("kind") == "multiple_choice")["first_reason"].to_list().count(
        "missing_signal:option_mass") >= 1
    assert not strict["reasons"].list.join("|").str.contains("multiple_choice.*quality_score").any()
    assert decisions.filter(pl.col("first_reason") == "missing_signal:ppl").height >= 1  # too long for the LM


def test_uncertainty_off_and_absolute_bounds(pool):
    off = decide(pool, SelectionPolicy(uncertainty_keep_fraction=None))
    assert not off["reasons"].list.join("|").str.contains("low_uncertainty").any()
    assert not off["missing_signals"].list.contains("ppl").any()
    bounded = decide(pool, SelectionPolicy(uncertainty_keep_fraction=None, min_uncertainty=10.0, max_option_mass=0.5))
    for row in bounded.iter_rows(named=True):
        low = [r for r in row["reasons"] if _stage(r) == "low_uncertainty"]
        if row["ppl"] is not None:
            assert bool(low) == (row["ppl"] < 10.0)
        if row["option_mass"] is not None:
            assert bool(low) == (row["option_mass"] > 0.5)


def test_sft_rows_scored_as_multiple_choice_are_judged_by_option_mass(pool):
    """AQuA items hide multiple choice in SFT text; once scored as such, option mass is their signal."""
    parsed = (pl.col("corpus") == "alpaca_cot/aqua_train.json") & pl.col("ppl").is_not_null()
    mixed = pool.with_columns(option_mass=pl.when(parsed).then(pl.col("ppl") / 31).otherwise(pl.col("option_mass")))
    assert mixed.filter(parsed).height >= 5
    judged = decide(mixed, SelectionPolicy(uncertainty_keep_fraction=None, min_uncertainty=10.0, max_option_mass=0.5))
    for row in judged.filter(parsed).iter_rows(named=True):
        low = [_shown(r) for r in row["reasons"] if _stage(r) == "low_uncertainty"]
        if row["option_mass"] > 0.5:
            [(text, shown)] = low
            assert text == "low_uncertainty:option_mass=>0.5" and abs(shown - row["option_mass"]) <= 0.0005 + 1e-12
        else:
            assert low == []


def _past_budgets(decisions: pl.DataFrame) -> pl.DataFrame:
    """Rows that passed every stage up to the budgets (the missing-signal stage comes after them)."""
    return decisions.filter(pl.col("kept") | pl.col("first_reason").str.starts_with("missing_signal:"))


def test_category_cap_is_respected_and_spent_in_k_center_order(pool):
    cap = 5
    capped = decide(pool, SelectionPolicy(category_cap=cap))
    uncapped = decide(pool)
    per_category = capped.filter("kept").group_by("category").len()
    assert per_category["len"].max() <= cap
    survivors = _past_budgets(uncapped).group_by("category").agg(pl.col("record_id"), pl.col("diverse_rank"))
    for row in survivors.iter_rows(named=True):
        kept = _past_budgets(capped).filter(pl.col("category").eq_missing(row["category"]))
        assert kept.height == min(cap, len(row["record_id"]))
        ranks = sorted(r for r in row["diverse_rank"] if r is not None)
        assert sorted(kept["diverse_rank"].drop_nulls()) == ranks[: kept["diverse_rank"].drop_nulls().len()]
    by_cap = capped.filter(pl.col("first_reason").str.starts_with("category_cap:"))
    assert by_cap.height and (by_cap["reasons"].list.len() == 1).all()
    newly_dropped = set(_past_budgets(uncapped)["record_id"]) - set(_past_budgets(capped)["record_id"])
    assert set(by_cap["record_id"]) == newly_dropped


def test_diverse_budget_keeps_the_first_survivors_in_k_center_order(pool):
    survivors = _past_budgets(decide(pool))
    by_count = decide(pool, SelectionPolicy(diverse_budget=10))
    expected = survivors.drop_nulls("diverse_rank").sort("diverse_rank", "record_id").head(10)["record_id"]
    assert sorted(by_count.filter("kept")["record_id"]) == sorted(expected)
    outside = by_count.filter(pl.col("first_reason") == "outside_diverse_subset")
    assert outside.height == survivors.height - 10
    by_share = decide(pool, SelectionPolicy(diverse_budget=0.5))
    assert by_share["kept"].sum() == math.ceil(0.5 * survivors.height)


def test_diverse_budget_without_any_rank_is_an_error_not_an_empty_set(pool):
    with pytest.raises(ValueError, match="diverse_rank"):
        decide(pool.with_columns(diverse_rank=pl.lit(None, pl.Int64)), SelectionPolicy(diverse_budget=10))


def test_deterministic_and_independent_of_row_order(pool, decisions):
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=7)
    assert decide(shuffled).equals(decisions)
    assert decide(decisions).equals(decisions)  # a re-decision replaces the old decision columns


def test_pool_contract_is_enforced(pool):
    with pytest.raises(ValueError, match="ppl"):
        decide(pool.drop("ppl"))
    with pytest.raises(ValueError, match="unique"):
        decide(pl.concat([pool, pool.head(1)]))
    with pytest.raises(ValueError, match="kind"):
        decide(pool.with_columns(kind=pl.lit("preference")))


@pytest.mark.parametrize("bad", [
    {"quality_threshold": 1.5}, {"uncertainty_keep_fraction": 0.0}, {"category_cap": 0},
    {"diverse_budget": 0}, {"diverse_budget": 1.5}, {"missing_quality": "ignore"}, {"uncertainty_signal": "loss"},
])
def test_policy_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        SelectionPolicy(**bad)


def test_reason_counts_sum_to_the_dropped_rows(decisions):
    counts = reason_counts(decisions)
    assert counts["first"].sum() == (~decisions["kept"]).sum()
    assert counts["stage"].to_list() == sorted(counts["stage"], key=STAGES.index)
    assert (counts["rows"] >= counts["first"]).all()
    assert not counts["reason"].str.contains("=").any()  # values are not labels
    assert "exact_duplicate_of" in counts["reason"].to_list()
    assert json.loads(json.dumps(SelectionPolicy(diverse_budget=0.3).to_dict()))["diverse_budget"] == 0.3


def test_quality_cut_is_the_calibrated_probability_and_skips_multiple_choice(pool):
    """P(acceptable) below quality_threshold fails an SFT row; exam rows are never judged on answer quality."""
    judged = pool.filter(pl.col("exact_duplicate_of").is_null() & pl.col("near_duplicate_of").is_null()
                         & (pl.col("quality_reasons").list.len().fill_null(0) == 0) & pl.col("quality_score").is_not_null())

    def failed_by_score(policy: SelectionPolicy) -> pl.DataFrame:
        decided = decide(pool, policy).join(judged.select("record_id"), on="record_id", how="semi")
        return decided.filter(pl.col("reasons").list.join("|").str.contains("failed_quality:p="))

    for threshold in (0.0, 0.5, 0.9):
        failed = failed_by_score(SelectionPolicy(quality_threshold=threshold))
        expected = judged.filter((pl.col("kind") == "sft") & (pl.col("quality_score") < threshold))
        assert sorted(failed["record_id"]) == sorted(expected["record_id"]), threshold
    assert failed_by_score(SelectionPolicy(quality_threshold=0.9)).height > failed_by_score(SelectionPolicy()).height > 0
    exam = decide(pool.with_columns(quality_score=pl.lit(None, dtype=pl.Float64)),
                  SelectionPolicy(missing_quality="drop")).filter(pl.col("kind") == "multiple_choice")
    assert exam.height == 45 and not exam["reasons"].list.join("|").str.contains("failed_quality").any()
    assert not exam["missing_signals"].list.contains("quality_score").any()


def test_a_nan_score_is_a_missing_score(pool):
    """NaN sorts above every number in polars: unchecked, a NaN novelty passes ``> threshold`` and every
    such row is dropped as not novel. It must decide exactly as a null does."""
    scored = {name: pl.col(name).is_not_null() & (pl.col("record_id").str.slice(0, 1) < "8")
              for name in ("novelty_prob", "quality_score", "ppl", "option_mass")}
    nan = pool.with_columns(pl.when(hit).then(float("nan")).otherwise(pl.col(name)).alias(name)
                            for name, hit in scored.items())
    null = pool.with_columns(pl.when(hit).then(None).otherwise(pl.col(name)).alias(name) for name, hit in scored.items())
    assert all(nan[name].is_nan().sum() > 5 for name in scored)
    from_nan, from_null = decide(nan), decide(null)
    assert from_nan.equals(from_null)
    assert from_nan["novelty_prob"].is_nan().sum() == 0
    hit = nan.filter(scored["novelty_prob"])["record_id"].implode()
    assert not from_nan.filter(pl.col("record_id").is_in(hit))["reasons"].list.join("|").str.contains("not_novel:p=").any()


@pytest.mark.parametrize("column, value", [
    ("novelty_prob", 1.7), ("quality_score", -0.2), ("option_mass", 1.5), ("ppl", -3.0), ("ppl", 0.5),
    ("ifd", -1.0), ("ppl", float("inf")), ("quality_score", float("-inf")),
])
def test_impossible_scores_are_a_clear_error(pool, column, value):
    row = pool.filter(pl.col(column).is_not_null())["record_id"][0]
    bad = pool.with_columns(pl.when(pl.col("record_id") == row).then(value).otherwise(pl.col(column)).alias(column))
    with pytest.raises(ValueError, match=rf"{column} must be .*1 rows are not, e.g. {re.escape(repr(value))} "
                                         rf"\(record_id {row}\)"):
        decide(bad)


def test_scores_at_their_bounds_are_accepted(pool):
    edges = pool.with_columns(novelty_prob=pl.when(pl.col("novelty_prob").is_not_null()).then(1.0),
                              quality_score=pl.lit(0.0), ppl=pl.when(pl.col("ppl").is_not_null()).then(1.0))
    assert decide(edges).height == pool.height
