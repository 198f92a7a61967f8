"""Readers on the real corpora (bad inputs: test_bad_inputs.py)."""

import json

import pytest

from sft_assets.core.readers import read_file, unaccounted_units
from sft_assets.core.records import normalize_text
from sft_assets_tests.conftest import CORPORA


def conserved(result) -> bool:
    """Every unit of the file, counted apart from the reader, came out as a record or a quarantine row."""
    return unaccounted_units(result) == ([], [])


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


ROWS = [{"instruction": f"Name prime number {i}.", "input": "", "output": str(p)} for i, p in enumerate((2, 3, 5, 7))]
FORMATS = {  # one file per kind of unit, four units each
    "array.json": json.dumps(ROWS),
    "lines.jsonl": "".join(json.dumps(r) + "\n\n" for r in ROWS),
    "wrapped.json": json.dumps({"meta": {"v": 1}, "data": ROWS}),
    "header.csv": "instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in ROWS),
    "bare.tsv": "".join(f"{r['instruction']}\t{r['output']}\n\t\n" for r in ROWS),
    "cut.json": json.dumps(ROWS)[:-30],
    "tasks.jsonl": "".join(json.dumps({"instruction": r["instruction"], "instances": [
        {"input": "", "output": r["output"]}, {"input": "again", "output": r["output"]}]}) + "\n" for r in ROWS),
}


def _skipping(units, skip=1):
    """A reader fault: the unit at ``skip`` silently dropped."""
    return lambda *args: (unit for unit in units(*args) if unit.source_row != skip)


def test_every_unit_of_every_format_is_counted_apart_from_the_reader(tmp_path, monkeypatch):
    from sft_assets.core import readers

    for name, text in FORMATS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        result = read_file(tmp_path / name, name)
        assert result.source_units == 4 and conserved(result), name
        assert (result.records.height + result.quarantine.height) == (8 if name == "tasks.jsonl" else 4)
    monkeypatch.setattr(readers, "_units", _skipping(readers._units))
    for name in FORMATS:
        result = read_file(tmp_path / name, name)
        assert unaccounted_units(result) == ([1], []), name
        assert result.rows_read == result.records.height + result.quarantine.height  # what the old check compared


def test_a_row_for_a_unit_the_file_lacks_is_caught(tmp_path, monkeypatch):
    from dataclasses import replace

    from sft_assets.core import readers

    units = readers._units
    monkeypatch.setattr(readers, "_units", lambda *args: [*units(*args), replace(next(units(*args)), source_row=9)])
    (tmp_path / "lines.jsonl").write_text(FORMATS["lines.jsonl"], encoding="utf-8")
    assert unaccounted_units(read_file(tmp_path / "lines.jsonl", "lines.jsonl")) == ([], [9])


def test_a_record_dropped_after_parsing_is_caught(tmp_path, monkeypatch):
    from sft_assets.core import readers

    classify = readers._classify
    monkeypatch.setattr(readers, "_classify", lambda obj: [] if obj.get("output") == "5" else classify(obj))
    (tmp_path / "array.json").write_text(FORMATS["array.json"], encoding="utf-8")
    assert unaccounted_units(read_file(tmp_path / "array.json", "array.json")) == ([2], [])



def _read_lines(tmp_path, name, *rows, options=None):
    from sft_assets.core.readers import ReaderOptions

    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return read_file(path, name, options or ReaderOptions())


def test_common_field_names_are_read_as_sft_fields(tmp_path):
    rows = [{"text": "Name a prime.", "answer": "7"}, {"question": "2 + 2?", "target": "4", "context": "Arithmetic"},
            {"query": "Capital of France?", "completion": "Paris"}, {"prompt": "Say hi.", "response": "Hi!"}]
    result = _read_lines(tmp_path, "aliases.jsonl", *rows)
    assert result.quarantine.height == 0 and set(result.records["kind"]) == {"sft"}
    assert result.records.select("instruction", "input", "output").rows() == [
        ("Name a prime.", "", "7"), ("2 + 2?", "Arithmetic", "4"), ("Capital of France?", "", "Paris"),
        ("Say hi.", "", "Hi!")]
    canonical = _read_lines(tmp_path, "canonical.jsonl", {"instruction": "Name a prime.", "output": "7"})
    assert result.records["record_id"][0] == canonical.records["record_id"][0]


def test_aliases_leave_the_other_formats_alone(tmp_path):
    """prompt + chosen/rejected is a preference pair, question + options multiple choice, the reader's own name
    wins over an alias."""
    result = _read_lines(tmp_path, "mixed.jsonl",
                         {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."},
                         {"question": "2 + 2?", "options": ["3", "4"], "answer": "B"},
                         {"question": "Which is red?", "A": "sky", "B": "blood", "answer": "B"},
                         {"instruction": "Own name.", "text": "alias", "output": "o", "answer": "a"})
    assert result.records["kind"].to_list() == ["preference", "multiple_choice", "multiple_choice", "sft"]
    assert result.records["answer"].to_list()[1:3] == ["B", "B"]
    assert result.records.row(3, named=True)["instruction"] == "Own name." and result.records["output"][3] == "o"


def test_a_missing_field_names_the_fields_seen(tmp_path):
    result = _read_lines(tmp_path, "scores.jsonl", {"id": 1, "label": "pos", "body": "great"},
                         {"title": "t", **{f"f{i}": i for i in range(10)}})
    assert result.quarantine["reason"].to_list() == [
        "missing_field:instruction (seen: body, id, label)",
        "missing_field:instruction (seen: f0, f1, f2, f3, f4, f5, f6, f7, +3 more)"]
    assert "'instruction' or 'prompt' or 'text'" in result.quarantine["detail"][0]


def test_a_folder_column_mapping_renames_fields(tmp_path):
    from sft_assets.core.readers import ReaderOptions

    mapping = ReaderOptions(column_mapping={"qa/*": {"q": "instruction", "a": "output"}, "*": {"q": "nothing"}})
    row = {"q": "Name a prime.", "a": "7", "id": 3}
    mapped = _read_lines(tmp_path, "qa/part-1.jsonl", row, options=mapping)
    assert mapped.records.select("instruction", "output").row(0) == ("Name a prime.", "7")
    assert any("column mapping for 'qa/*'" in note for note in mapped.notes)
    other = _read_lines(tmp_path, "elsewhere/part-1.jsonl", row, options=mapping)
    assert other.quarantine["reason"].to_list() == ["missing_field:instruction (seen: a, id, nothing)"]
    (tmp_path / "qa" / "table.csv").write_text("Q,A\nName a prime.,7\n2 + 2?,4\n", encoding="utf-8")
    table = read_file(tmp_path / "qa" / "table.csv", "qa/table.csv", mapping)
    assert table.records["output"].to_list() == ["7", "4"] and conserved(table)
    plain = read_file(tmp_path / "qa" / "table.csv", "qa/table.csv")
    assert set(plain.quarantine["reason"]) == {"unknown_columns"} and plain.quarantine.height == 2
