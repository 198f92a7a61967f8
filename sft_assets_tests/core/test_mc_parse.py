"""AQuA multiple-choice items parsed out of Alpaca-CoT's chain-of-thought rows."""

import pytest

from sft_assets.core.mc_parse import lettered_items, parse_lettered_item


@pytest.fixture(scope="module")
def aqua(read_corpus):
    return read_corpus("alpaca_cot/aqua_train.json").records


@pytest.fixture(scope="module")
def parsed(aqua):
    return lettered_items(aqua)


def row(aqua, i):
    return aqua["instruction"][i], aqua["output"][i]


def test_nearly_every_aqua_row_parses(aqua, parsed):
    assert aqua.height == 2_728
    assert parsed.height == 2_724
    assert parsed["record_id"].is_in(aqua["record_id"].implode()).all()
    assert set(parsed["options"].list.len()) == {5}
    assert set(parsed["answer"]) == set("ABCDE")


def test_cue_and_label_are_stripped(aqua):
    item = parse_lettered_item(*row(aqua, 0))
    assert item == {
        "question": "Rs. 5600 is divided into three parts A, B and C. "
        "How much A is more than C if their ratio is 1/7:1/7:1/14?",
        "options": ["300", "992", "1120", "552", "312"],
        "answer": "C",
    }


def test_student_template_loses_only_its_added_full_stop(aqua):
    students = aqua.filter(aqua["instruction"].str.starts_with("Student: "))
    instruction, output = students["instruction"][0], students["output"][0]
    assert instruction.endswith(".\nAnother student: Let's say, hmmm...")
    item = parse_lettered_item(instruction, output)
    assert not item["question"].startswith("Student:")
    assert item["options"][-1] + ".\nAnother student" in instruction
    assert not item["options"][-1].endswith(".")


def test_rows_with_two_answer_statements_are_left_out(aqua, parsed):
    left_out = aqua.join(parsed.select("record_id"), on="record_id", how="anti")
    assert left_out.height == 4
    assert all(parse_lettered_item(i, o) is None for i, o in zip(left_out["instruction"], left_out["output"]))


def test_doubtful_items_are_refused(aqua):
    instruction, output = row(aqua, 0)
    assert parse_lettered_item(instruction.replace("(B) 992", "(C) 992"), output) is None  # letters out of order
    assert parse_lettered_item(instruction.replace("(B) 992", "(B) "), output) is None  # empty option
    assert parse_lettered_item(instruction, output.replace("(C)", "C")) is None  # no answer letter
    assert parse_lettered_item(instruction, output.replace("(C)", "(F)")) is None  # not an option
    unknown_cue = instruction.replace("Let's think first. Some random reasoning:", "Ponder this:")
    assert parse_lettered_item(unknown_cue, output) is None
    assert parse_lettered_item(instruction.replace("\nOptions:\n", "\n"), output) is None
