"""Readers on the real corpora (bad inputs: test_bad_inputs.py)."""

import json

import pytest

from sft_assets.core.readers import read_file
from sft_assets.core.records import normalize_text
from sft_assets_tests.conftest import CORPORA


def conserved(result) -> bool:
    return result.rows_read == result.records.height + result.quarantine.height


def test_alpaca_json_array(read_corpus):
    result = read_corpus("alpaca_en/alpaca_data-0-3252.json")
    assert result.format == "json_array" and conserved(result)
    assert result.rows_read == 3_252
    first = result.records.row(0, named=True)
    assert first["kind"] == "sft" and first["lang"] == "en" and first["source_row"] == 0
    assert first["source_line"] == 2 and first["category"] is None


def test_literal_newline_escapes_are_unescaped(read_corpus):
    result = read_corpus("alpaca_cot/aqua_train.json")
    assert any("escapes turned into newlines" in n for n in result.notes)
    instruction = result.records["instruction"][0]
    assert "\nOptions:\n(A)" in instruction and "\\n" not in instruction
    assert set(result.records["category"]) == {"aqua"}


def test_code_file_keeps_its_escapes(read_corpus):
    result = read_corpus("zh_categories/代码问题.json")
    assert not any("escapes" in n for n in result.notes)
    assert result.records["output"].str.contains(r"\\n", literal=True).sum() > 0
    assert set(result.records["category"]) == {"代码问题"}
    assert set(result.quarantine["reason"]) == {"duplicate_in_file"}
    assert result.quarantine["duplicate_of"].is_in(result.records["record_id"].implode()).all()


def test_truncated_file_keeps_every_complete_record(read_corpus):
    result = read_corpus("alpaca_zh/alpaca_data-9407-12345.json")
    assert conserved(result) and result.rows_read == 2_801
    assert any("trailing comma" in n for n in result.notes)


def test_missing_input_and_history(read_corpus):
    zh = read_corpus("alpaca_zh/alpaca_data-6382-9407.json")
    assert zh.records["input"].null_count() == 0
    code = read_corpus("zh_categories/代码问题.json")
    assert code.records["history"].list.len().max() == 0  # "" means no earlier turns


def test_gsm8k_tsv(read_corpus):
    result = read_corpus("gsm8k/gsm8k_train.tsv")
    assert result.format == "tsv" and result.rows_read == 7_473 and conserved(result)
    row = result.records.row(0, named=True)
    assert row["instruction"].startswith("Natalia sold clips")
    assert row["output"].endswith("\n#### 72")


def test_cmmlu_csv(read_corpus):
    result = read_corpus("cmmlu/dev/agronomy.csv")
    row = result.records.row(0, named=True)
    assert row["kind"] == "multiple_choice" and row["category"] == "agronomy" and row["lang"] == "zh"
    assert row["options"] == ["胸", "腹", "大腿", "小腿"] and row["answer"] == "C"


def test_hh_rlhf_dialogues(read_corpus):
    result = read_corpus("hh_rlhf/harmless_base_test.jsonl.gz")
    assert result.rows_read == 2_312 and conserved(result)
    row = result.records.row(0, named=True)
    assert row["prompt"] == "okay some of these do not have anything to do with pens"
    assert len(row["history"]) == 2 and row["history"][1]["prompt"] == "yep"
    assert row["chosen"].startswith("No, sorry!") and row["rejected"].startswith("There are lots")
    assert not any("Human:" in p for p in result.records["prompt"])


@pytest.mark.parametrize("model, wins, draws", [("alpaca-7b", 160, 14), ("guanaco-65b", 446, 0)])
def test_alpaca_eval_pairs_are_preferences_and_draws_are_counted(read_corpus, model, wins, draws):
    relpath = f"alpaca_eval/{model}.json"
    result = read_corpus(relpath)
    assert result.rows_read == 608 and conserved(result)
    records = result.records
    assert (records["kind"] == "preference").all() and records["history"].list.len().max() == 0
    assert result.quarantine["reason"].value_counts().to_dicts() == (
        [{"reason": "preference_draw", "count": draws}] if draws else [])
    assert records.height == 608 - draws
    raw = json.loads((CORPORA / relpath).read_text())
    decided = [r for r in raw if r["preference"] in (1, 2)]
    first = records.row(0, named=True)
    winner = "output_2" if decided[0]["preference"] == 2 else "output_1"
    assert first["prompt"] == normalize_text(decided[0]["instruction"])
    assert first["chosen"] == normalize_text(decided[0][winner])
    assert first["source"] == relpath and first["source_row"] == raw.index(decided[0])
    # output_2 (the model's answer) is chosen exactly when GPT-4 preferred it.
    model_answers = {normalize_text(r["output_2"]) for r in decided}
    assert records["chosen"].is_in(list(model_answers)).sum() == wins


def test_self_instruct_instances(read_corpus):
    result = read_corpus("self_instruct/seed_tasks.jsonl")
    assert result.format == "jsonl" and result.records.height == 175
    assert result.records["instruction"][0].startswith("Is there anything I can eat")


def test_same_text_in_two_files_gets_the_same_id(tmp_path):
    row = {"instruction": "Name a prime.", "input": "", "output": "7"}
    (tmp_path / "a.json").write_text(json.dumps([row]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({**row, "extra": 1}) + "\n", encoding="utf-8")
    a, b = read_file(tmp_path / "a.json", "a.json"), read_file(tmp_path / "b.jsonl", "b.jsonl")
    assert a.records["record_id"][0] == b.records["record_id"][0]
