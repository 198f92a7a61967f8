"""The final SFT, RM and PPO tables, from real decisions and real HH-RLHF pairs."""

import math

import polars as pl
import pytest

from sft_assets.core.datasets import (
    PPO_PROMPT_COLUMNS,
    RM_COLUMNS,
    RM_DROPPED_COLUMNS,
    SFT_COLUMNS,
    ppo_dataset,
    rm_dataset,
    sft_dataset,
)
from sft_assets.core.records import RECORD_SCHEMA, record_id
from sft_assets.core.selection import decide
from sft_assets_tests.core.test_selection import real_records, synthesize_signals

HH = "hh_rlhf/harmless_base_test.jsonl.gz"
HH_SLICE = (60, 50)  # 50 real pairs; source_row 86 has an empty final chosen turn


def preference_slice(read_corpus) -> pl.DataFrame:
    """50 real pairs plus planted faults: chosen == rejected, an empty side, a repeated pair."""
    real = read_corpus(HH).records.slice(*HH_SLICE)
    rows = real.head(3).to_dicts()
    same = {**rows[0], "rejected": rows[0]["chosen"]}
    empty = {**rows[1], "rejected": "  "}
    repeat = {**rows[2], "history": []}  # same (prompt, chosen, rejected), other context
    planted = []
    for row in (same, empty, repeat):
        fields = {k: row[k] for k in ("prompt", "chosen", "rejected", "history")}
        planted.append({**row, "record_id": record_id("preference", fields), "source_row": None})
    return pl.concat([real, pl.DataFrame(planted, schema=RECORD_SCHEMA)])


@pytest.fixture(scope="module")
def records(read_corpus):
    return real_records(read_corpus)


@pytest.fixture(scope="module")
def decisions(records):
    return decide(synthesize_signals(records))


@pytest.fixture(scope="module")
def sft(records, decisions):
    return sft_dataset(records, decisions)


@pytest.fixture(scope="module")
def preference(read_corpus):
    return preference_slice(read_corpus)


def test_sft_holds_exactly_the_kept_rows_with_lineage(records, decisions, sft):
    kept = decisions.filter("kept")
    assert sft.columns == list(SFT_COLUMNS)
    assert sorted(sft["record_id"]) == sorted(kept["record_id"]) == sft["record_id"].to_list()
    originals = sft.join(
        records, on=["record_id", "corpus"], suffix="_record").filter(pl.col("kind") == "sft")
    assert originals.height > 0
    for column in ("source", "source_row", "category", "lang", "instruction", "input", "output", "history"):
        assert originals[column].equals(originals[f"{column}_record"], check_names=False), column


def test_kept_multiple_choice_becomes_sft(records, decisions, sft):
    mc_ids = decisions.filter(pl.col("kept") & (pl.col("kind") == "multiple_choice"))["record_id"]
    assert mc_ids.len() > 0
    for row in sft.filter(pl.col("record_id").is_in(mc_ids.implode())).iter_rows(named=True):
        item = records.filter(pl.col("record_id") == row["record_id"]).row(0, named=True)
        assert row["instruction"].startswith(item["question"]) and "\n(A) " in row["instruction"]
        letter = item["answer"]
        assert row["output"] == f"({letter}) {item['options'][ord(letter) - ord('A')]}"
        assert row["input"] == "" and row["history"] == []


def test_sft_refuses_a_kept_row_without_its_record(records, decisions):
    with pytest.raises(ValueError, match="no record"):
        sft_dataset(records.filter(pl.col("corpus") != "alpaca_cot/creak_train.json"), decisions)


def test_rm_drops_bad_pairs_with_a_reason_and_loses_nothing(preference):
    pairs, dropped = rm_dataset(preference)
    assert pairs.columns == list(RM_COLUMNS) and dropped.columns == list(RM_DROPPED_COLUMNS)
    assert pairs.height + dropped.height == preference.height
    reasons = dict(zip(dropped["reason"].str.replace(r":.*", ""), dropped["source_row"]))
    assert reasons["empty_chosen"] == 86  # a real pair whose last chosen turn is empty
    assert {"chosen_equals_rejected", "empty_rejected", "duplicate_pair_of"} <= set(reasons)
    duplicate = dropped.filter(pl.col("reason").str.starts_with("duplicate_pair_of:"))
    assert duplicate["reason"].str.replace("duplicate_pair_of:", "").is_in(pairs["record_id"].implode()).all()
    assert (pairs["chosen"] != pairs["rejected"]).all()
    assert pairs.select("prompt", "chosen", "rejected").is_unique().all()
    assert pairs["record_id"].to_list() == sorted(pairs["record_id"])


def test_rm_keeps_one_copy_of_a_pair_found_in_two_files(read_corpus):
    """alpaca-7b and falcon-7b-instruct gave the same answer to two instructions with the same verdict: the same
    pair, so the same content-hashed record_id, in two files. One copy is kept, the other is dropped naming it,
    and margins scored per preference row (the id twice) still join one to one."""
    both = pl.concat([read_corpus(f"alpaca_eval/{name}.json").records
                      for name in ("alpaca-7b", "falcon-7b-instruct")], how="diagonal_relaxed")
    shared = both.filter(pl.col("record_id").is_duplicated())
    assert shared.height == 4 and shared["record_id"].n_unique() == 2
    margins = both.select("record_id", chosen_score=pl.lit(0.8), rejected_score=pl.lit(0.3))
    pairs, dropped = rm_dataset(both, margins)
    assert pairs.height + dropped.height == both.height
    assert pairs["record_id"].is_unique().all() and set(shared["record_id"]) <= set(pairs["record_id"])
    copies = dropped.filter(pl.col("record_id").is_in(shared["record_id"].implode()))
    assert copies.height == 2 and (copies["reason"] == "duplicate_pair_of:" + copies["record_id"]).all()
    assert (pairs["quality_margin"] == 0.5).all()


def test_rm_quality_margin(preference):
    pairs, _ = rm_dataset(preference)
    scored = pairs["record_id"].head(10)
    margins = pl.DataFrame({"record_id": scored, "chosen_score": [0.9] * 10, "rejected_score": [0.25] * 10})
    with_margin, _ = rm_dataset(preference, margins)
    assert with_margin.height == pairs.height
    scored_margins = with_margin.filter(pl.col("record_id").is_in(scored.implode()))["quality_margin"]
    assert scored_margins.round(6).to_list() == [0.65] * 10
    assert with_margin["quality_margin"].null_count() == pairs.height - 10  # not scored: null, not dropped


def test_ppo_prompts_reuse_sft_and_preference_prompts_once(sft, preference):
    pairs, _ = rm_dataset(preference)
    shared = pairs.filter(pl.col("history").list.len() == 0).row(0, named=True)
    sft_plus = pl.concat([sft, sft.head(1).with_columns(
        record_id=pl.lit("planted-shared-prompt"), instruction=pl.lit(shared["prompt"]), input=pl.lit(""))])
    prompts, _ = ppo_dataset(sft_plus, pairs)
    assert prompts.columns == list(PPO_PROMPT_COLUMNS)
    assert prompts.select("prompt", "history").is_unique().all()
    assert prompts["record_ids"].list.len().sum() == sft_plus.height + pairs.height
    merged = prompts.filter(pl.col("record_ids").list.contains("planted-shared-prompt"))
    assert merged["origins"].to_list() == [["preference", "sft"]]
    with_input = sft.filter(pl.col("input") != "").row(0, named=True)
    assert f"{with_input['instruction']}\n{with_input['input']}" in prompts["prompt"].to_list()
    # HH prompts such as "yes" recur under different dialogues: they stay apart, with their history
    assert prompts.filter(pl.col("origins").list.contains("preference"))["history"].list.len().max() > 0


def test_ptx_is_a_deterministic_share_of_sft(sft, preference):
    _, ptx = ppo_dataset(sft, preference, ptx_fraction=0.1, seed=0)
    assert ptx.height == math.ceil(0.1 * sft.height)
    assert ptx.columns == sft.columns
    assert set(ptx["record_id"]) <= set(sft["record_id"])
    assert ppo_dataset(sft.reverse(), preference, ptx_fraction=0.1, seed=0)[1].equals(ptx)
    assert not ppo_dataset(sft, preference, ptx_fraction=0.1, seed=1)[1].equals(ptx)
    assert ppo_dataset(sft, preference, ptx_fraction=0.0)[1].height == 0
    with pytest.raises(ValueError):
        ppo_dataset(sft, preference, ptx_fraction=1.5)
