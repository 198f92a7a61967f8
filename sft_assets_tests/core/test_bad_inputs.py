"""The bad inputs curators feed the readers: every file is read to the end and
every row read is either a record or a quarantine row with a reason.

``CASES`` is the table the Dagster-level suite (defs/test_bad_inputs_defs.py)
ingests as well, so both levels check the same files.
"""

import gzip
import json
import random
import tracemalloc
from dataclasses import dataclass
from typing import Callable

import pytest

from sft_assets.core.rawfiles import partition_key, relpath_of, resolve_in_root, scan_root
from sft_assets.core.readers import ReaderOptions, read_file
from sft_assets.core.records import record_id
from sft_assets_tests.core.test_readers import conserved

# Small caps so a bomb and a huge record cost megabytes, not gigabytes; the Dagster suite sets the same.
CAP_BYTES = 1 << 20
OPTIONS = ReaderOptions(max_decompressed_bytes=CAP_BYTES)

GOOD = {"instruction": "Name a prime.", "input": "", "output": "7"}
ZH = [{"instruction": f"请用一句话解释{topic}。", "output": f"{topic}是一个常见的概念。"} for topic in ("递归", "复利", "光合作用")]


@dataclass(frozen=True)
class Case:
    name: str  # the file's path under the raw root
    data: Callable[[], bytes]  # built on demand: some are megabytes
    reasons: frozenset[str]  # the quarantine reasons the file must produce, exactly
    normalized: int  # records that must come out
    first_instruction: str | None = None  # what the first record must read (decoding cases)


def _lines(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows).encode()


def _truncated_array() -> bytes:
    return json.dumps([GOOD, GOOD | {"output": "11"}])[:-20].encode()


def _stray_byte() -> bytes:
    """Valid UTF-8 but for one byte inside the second record."""
    data = json.dumps(ZH, ensure_ascii=False).encode()
    at = data.index("复利".encode())
    return data[:at] + b"\xff" + data[at + 1 :]


def _bomb() -> bytes:
    return gzip.compress(b"[" + b" " * (64 << 20) + b"]", compresslevel=9)


def _big_record() -> bytes:
    return json.dumps([GOOD, {"instruction": "Repeat after me.", "output": "x" * (50 << 20)}]).encode()


def _deep() -> bytes:
    return b"[" + b'{"instruction": "x", "output": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"


CASES = [
    Case("truncated_array.json", _truncated_array, frozenset({"truncated_json"}), 1),
    Case("one_broken_line.jsonl", lambda: _lines(GOOD, "{broken", GOOD | {"output": "11"}),
         frozenset({"invalid_json"}), 2),
    Case("utf16_bom.json", lambda: json.dumps([GOOD | {"instruction": "Café?"}], ensure_ascii=False).encode("utf-16"),
         frozenset(), 1, "Café?"),
    Case("utf16le_no_bom.jsonl", lambda: _lines(ZH[0]).decode().encode("utf-16-le"), frozenset(), 1,
         ZH[0]["instruction"]),
    Case("latin1.json", lambda: '[{"instruction": "Café crème?", "output": "Oui"}]'.encode("latin-1"),
         frozenset(), 1, "Café crème?"),
    Case("utf8_bom.json", lambda: b"\xef\xbb\xbf" + json.dumps(ZH[:1], ensure_ascii=False).encode(), frozenset(), 1,
         ZH[0]["instruction"]),
    Case("utf8_one_bad_byte.json", _stray_byte, frozenset({"invalid_utf8"}), 2, ZH[0]["instruction"]),
    Case("empty.json", lambda: b"", frozenset({"empty_file"}), 0),
    Case("zero_bytes.jsonl.gz", lambda: b"", frozenset({"empty_file"}), 0),
    Case("gzip_of_nothing.jsonl.gz", lambda: gzip.compress(b""), frozenset({"empty_file"}), 0),
    Case("gzip_magic_only.jsonl.gz", lambda: b"\x1f\x8b", frozenset({"bad_gzip"}), 0),
    Case("gzip_cut.jsonl.gz", lambda: gzip.compress(_lines(GOOD) * 50)[:-12], frozenset({"bad_gzip"}), 0),
    Case("bomb.json.gz", _bomb, frozenset({"decompressed_size_cap"}), 0),
    Case("missing_fields.jsonl", lambda: _lines({"output": "orphan"}, {"instruction": "no answer"},
                                               {"chosen": "Human: hi\n\nAssistant: hello"}, {"question": "Q?"},
                                               {"question": "Q?", "options": ["only one"], "answer": "A"}),
         frozenset({"missing_field:instruction (seen: output)", "missing_field:output (seen: instruction)",
                    "missing_field:rejected (seen: chosen)", "missing_field:output (seen: question)",
                    "bad_options"}), 0),
    Case("blank_instruction.json", lambda: b'[{"instruction": "  ", "output": "x"}]',
         frozenset({"empty_field:instruction"}), 0),
    Case("extra_fields.jsonl", lambda: _lines(GOOD | {"source_url": "http://x", "meta": {"a": [1, None]}}),
         frozenset(), 1, GOOD["instruction"]),
    Case("field_types.jsonl", lambda: _lines({"instruction": 12, "output": 3.5}, {"instruction": ["a"], "output": "x"},
                                             {"instruction": "q", "output": {"text": "x"}},
                                             {"instruction": "q", "output": None},
                                             {"instruction": "q", "output": "x", "history": 5}),
         frozenset({"bad_type:instruction", "bad_type:output", "missing_field:output (seen: instruction, output)",
                    "bad_type:history"}), 1, "12"),
    Case("scalars.json", lambda: b'[1, "two", null]', frozenset({"not_an_object"}), 0),
    Case("big_record.json", _big_record, frozenset({"record_too_large"}), 1, GOOD["instruction"]),
    Case("deeply_nested.json", _deep, frozenset({"json_too_deep"}), 0),
    Case("deeply_nested_line.jsonl", lambda: _lines(GOOD) + _deep()[1:-1] + b"\n", frozenset({"json_too_deep"}), 1),
    Case("wrong_cells.csv", lambda: b",Question,A,B,C,D,Answer\n0,Q?,a,b,c,d,A\n1,Q2?,a,b\n",
         frozenset({"bad_columns"}), 1, None),
    Case("missing_column.csv", lambda: b"instruction,input\nSay hi,\n",
         frozenset({"missing_field:output (seen: input, instruction)"}), 0),
    Case("unknown_columns.csv", lambda: b"title,body,score\nHello,World,3\nBye,Moon,4\n",
         frozenset({"unknown_columns"}), 0),
    Case("prose.txt", lambda: b"just some prose\nwith no structure\n", frozenset({"unknown_format"}), 0),
    Case("garbage.json", lambda: random.Random(9).randbytes(64 << 10), frozenset({"binary_content"}), 0),
    Case("odd names/ü 名前 $(touch x); rm -rf ~ & 'q' \"d\" `b` *?.jsonl", lambda: _lines(GOOD), frozenset(), 1,
         GOOD["instruction"]),
]


def write_case(root, case: Case):
    path = root / case.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(case.data())
    return path


def read_case(tmp_path, case: Case):
    return read_file(write_case(tmp_path, case), case.name, OPTIONS)


@pytest.mark.parametrize("case", CASES, ids=[c.name.split("/")[0] for c in CASES])
def test_bad_input_is_quarantined_never_lost(tmp_path, case):
    """Read to the end: rows conserved, exactly the expected reasons, every quarantine row explained."""
    result = read_case(tmp_path, case)
    assert conserved(result)
    assert set(result.quarantine["reason"]) == case.reasons
    assert result.records.height == case.normalized
    for column in ("reason", "detail"):
        assert result.quarantine[column].null_count() == 0
        assert (result.quarantine[column].str.strip_chars().str.len_chars() > 0).all()
    if case.first_instruction is not None:
        assert result.records["instruction"][0] == case.first_instruction
    assert set(result.records["corpus"]) <= {case.name} and set(result.quarantine["corpus"]) <= {case.name}


def test_gzip_bomb_stops_at_the_cap(tmp_path):
    """64 MiB of content behind a 65 KB file: reading stops after the 1 MiB cap, never holding the rest."""
    path = write_case(tmp_path, next(c for c in CASES if c.name == "bomb.json.gz"))
    tracemalloc.start()
    try:
        result = read_file(path, path.name, OPTIONS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.quarantine["reason"].to_list() == ["decompressed_size_cap"]
    assert peak < 8 * CAP_BYTES


def test_truncated_json_reports_byte_offset(tmp_path):
    text = json.dumps([GOOD, {"instruction": "Second 中文", "output": "cut here"}], ensure_ascii=False)
    cut = text[: text.index("cut")]
    result = read_case(tmp_path, Case("cut.json", cut.encode, frozenset({"truncated_json"}), 1))
    row = result.quarantine.row(0, named=True)
    assert row["reason"] == "truncated_json"
    assert cut.encode()[row["byte_offset"] : row["byte_offset"] + 1] == b"{"
    assert row["raw"].startswith('{"instruction": "Second')


def test_one_bad_byte_costs_one_record_not_the_file(tmp_path):
    """The bytes around the damage stay UTF-8: no Latin-1 mojibake in the records that survive."""
    result = read_case(tmp_path, next(c for c in CASES if c.name == "utf8_one_bad_byte.json"))
    assert result.records["instruction"].to_list() == [ZH[0]["instruction"], ZH[2]["instruction"]]
    assert result.quarantine["source_row"].to_list() == [1]
    assert any("replaced by U+FFFD" in note for note in result.notes)


def test_unknown_fields_do_not_change_the_record(tmp_path):
    result = read_case(tmp_path, next(c for c in CASES if c.name == "extra_fields.jsonl"))
    assert result.records["record_id"][0] == record_id("sft", GOOD | {"history": []})
    assert "source_url" not in result.records.columns and "meta" not in result.records.columns


def test_record_cap_is_configurable(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(_lines(GOOD | {"output": "y" * 5000}))
    assert read_file(path, "long.jsonl").records.height == 1
    capped = read_file(path, "long.jsonl", ReaderOptions(max_record_chars=1000))
    assert capped.quarantine["reason"].to_list() == ["record_too_large"]


def test_links_out_of_the_root_are_refused(tmp_path):
    root, outside = tmp_path / "raw", tmp_path / "secret.json"
    (root / "sub").mkdir(parents=True)
    outside.write_text(json.dumps([GOOD]), encoding="utf-8")
    (root / "sub" / "escape.json").symlink_to(outside)
    (root / "inside.json").write_text("[]", encoding="utf-8")
    (root / "sub" / "alias.json").symlink_to(root / "inside.json")
    scan = scan_root(root)
    assert sorted(scan.files) == ["inside.json", "sub/alias.json"]
    assert "points outside the raw root" in scan.refused["sub/escape.json"]
    with pytest.raises(PermissionError, match="outside the raw root"):
        resolve_in_root(root, "sub/escape.json")  # a key registered before the link changed is refused too
    with pytest.raises(PermissionError, match="outside the raw root"):
        resolve_in_root(root, "../secret.json")


def test_odd_file_names_round_trip_as_partition_keys(tmp_path):
    odd = next(c for c in CASES if c.name.startswith("odd names/"))
    write_case(tmp_path, odd)
    (tmp_path / "tab\tand\nnewline.json").write_bytes(json.dumps([GOOD]).encode())
    keys = sorted(scan_root(tmp_path).files)
    assert [relpath_of(k) for k in keys] == sorted([odd.name, "tab\tand\nnewline.json"])
    assert all(resolve_in_root(tmp_path, k).is_file() for k in keys)
    assert partition_key(odd.name) == odd.name  # nothing Dagster forbids: the key is the path itself
