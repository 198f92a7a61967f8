"""Readers: one corpus file in, normalized records and quarantine rows out.

The format is found from the extension and the content (never from a list of
known file names). Every unit of the file (array element, non-blank JSON line,
CSV/TSV data row, or the file itself when it cannot be parsed at all) becomes a
record or a quarantine row with a reason. ``count_source_units`` counts the units
in a separate pass that classifies nothing, and ``unaccounted_units`` names any
unit that no row stands for, so a reader that silently skips something is caught.
Only a file that cannot be opened raises.

Decisions worth knowing:
- Literal ``\\n`` / ``\\t`` escapes (alpaca_cot) are turned into real newlines
  and tabs when at least a fifth of the file's records carry them; a file
  with a few code snippets that print ``"\\n"`` (0.1% of records in the real
  corpora) is left as it is. The decision is per file and reported in ``notes``.
- A JSON array damaged part way keeps every complete record before the
  damage; the rest is one quarantine row with the byte offset. A trailing
  comma before the closing bracket is tolerated and noted.
- A record repeated inside the same file is quarantined as
  ``duplicate_in_file`` pointing at the first copy, so ``record_id`` stays
  unique within a partition. Copies across files are the pool's business.
- gsm8k-style TSV (question, answer, rationale, no header) becomes SFT with
  ``output = rationale + "\\n#### " + answer``, the GSM8K answer convention.
  A first row that reads like column names, none of them known, quarantines
  every row as ``unknown_columns`` rather than guessing what the columns mean.
- A UTF-8 file with a few invalid bytes stays UTF-8: only the records that hold
  them are quarantined (``invalid_utf8``); Latin-1 is for files that are not UTF-8.
- A record with more text than ``max_record_chars`` is quarantined: no model
  downstream could use it, and it would stall tokenizers and exports.
- HH-RLHF dialogues: ``prompt`` is the last human turn of the shared prefix,
  earlier turns go to ``history``, ``chosen``/``rejected`` are the final
  assistant turns. Pairs that diverge earlier are quarantined.
- SFT fields under common other names are read (``SFT_FIELDS``: ``text``,
  ``question``, ``query`` as the instruction, ``answer``, ``target`` as the output,
  ``context`` as the input); ``question`` is multiple choice only with options.
  Other names: ``ReaderOptions.column_mapping``, per folder glob. A record
  lacking a field is quarantined with the fields it has, in the reason, so a
  file with an unknown schema reads as such in the reasons' counts.
- AlpacaEval judged pairs (``instruction``, ``output_1``, ``output_2``,
  ``preference``) are preference records; a draw (0 or 1.5) is quarantined as
  ``preference_draw``, so draws are counted per file.
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator

import polars as pl

from sft_assets.core.records import (
    QUARANTINE_SCHEMA,
    RAW_EXCERPT_CHARS,
    RECORD_SCHEMA,
    detect_lang,
    embedding_text,
    normalize_text,
    record_id,
)

DEFAULT_CATEGORY_GLOBS = ("zh_categories/*", "alpaca_cot/*", "categories/*")
REPLACEMENT = "\ufffd"
SPLIT_SUFFIX = re.compile(r"_(train|test|dev|val|validation)$")


@dataclass(frozen=True)
class ReaderOptions:
    """Knobs a user may need to turn for their own files."""

    max_decompressed_bytes: int = 1 << 30
    max_record_chars: int = 1 << 20
    # Files whose stem names the category of all their records (relative globs).
    category_globs: tuple[str, ...] = DEFAULT_CATEGORY_GLOBS
    # Relative glob -> {field in the file: field the reader knows}; the first glob matching a file applies.
    column_mapping: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class ReadResult:
    records: pl.DataFrame
    quarantine: pl.DataFrame
    format: str
    # Units of the file, counted by count_source_units, apart from the reader.
    source_units: int
    # The unit from which the reader could not go on (a damaged tail): one quarantine row stands for the rest.
    rest_from: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Rows out: normalized and quarantined (a self-instruct task with several instances gives several)."""
        return self.records.height + self.quarantine.height


class UnreadableFile(Exception):
    """The file could not be opened or read at all (permissions, I/O error)."""


class RecordError(Exception):
    """One unit could not be normalized; ``reason`` is the quarantine code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass
class _Unit:
    """One thing read from a file: a parsed value, or the error that stopped it."""

    source_row: int
    source_line: int | None
    value: Any = None
    byte_offset: int | None = None
    error: RecordError | None = None
    raw: str | None = None
    rest_of_file: bool = False  # the error stopped the reading: this unit stands for the rest of the file


# ---------------------------------------------------------------- bytes, text


def _read_bytes(path, cap: int) -> tuple[bytes | None, RecordError | None]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head != b"\x1f\x8b":
                return fh.read(), None
            return _gunzip_capped(fh, cap)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc


def _gunzip_capped(fh, cap: int) -> tuple[bytes | None, RecordError | None]:
    """Decompress at most ``cap`` bytes: a gzip bomb stops at the cap."""
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=fh) as gz:
            while chunk := gz.read(min(1 << 20, cap + 1 - len(out))):
                out += chunk
                if len(out) > cap:
                    return None, RecordError(
                        "decompressed_size_cap",
                        f"gzip content expands past the cap of {cap} bytes; not read",
                    )
    except (OSError, EOFError, zlib.error) as exc:
        return None, RecordError("bad_gzip", f"gzip stream is damaged: {exc}")
    return bytes(out), None


def _decode(data: bytes, notes: list[str]) -> tuple[str, bool]:
    """UTF-8 (BOM or not), UTF-16/32 by BOM or zero-byte pattern, else Latin-1.

    The flag says invalid UTF-8 bytes were replaced by U+FFFD: the file is
    mostly valid UTF-8, so one bad byte must not turn all of it into Latin-1."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            if codec != "utf-8-sig":
                notes.append(f"decoded as {codec} (byte order mark)")
            return data.decode(codec, errors="strict"), False
    sample = data[:4096]
    if sample and sample.count(0) > len(sample) // 4:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        codec = "utf-16-le" if odd > even else "utf-16-be"
        try:
            text = data.decode(codec)
            notes.append(f"decoded as {codec} (no byte order mark)")
            return text, False
        except UnicodeDecodeError:
            raise RecordError("binary_content", "file holds binary data, not text") from None
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        if b"\x00" in sample:
            raise RecordError("binary_content", "file holds binary data, not text") from None
        text = data.decode("utf-8", errors="replace")
        replaced = text.count(REPLACEMENT) - data.count(REPLACEMENT.encode())
        valid_non_ascii = len(text) - len(text.encode("ascii", errors="ignore")) - text.count(REPLACEMENT)
        if valid_non_ascii > replaced:
            notes.append(f"{replaced} invalid UTF-8 sequences (first at byte {exc.start}) replaced by U+FFFD; "
                         "records holding them are quarantined")
            return text, True
        notes.append(f"not valid UTF-8 ({exc.reason} at byte {exc.start}); decoded as Latin-1")
        return data.decode("latin-1"), False


# ---------------------------------------------------------------- formats


def _sniff_format(name: str, text: str) -> str:
    suffixes = [s.lower() for s in PurePosixPath(name).suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    head = text.lstrip()[:1]
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json" or head in ("[", "{"):
        if head == "[":
            return "json_array"
        if head == "{":
            return "json_object_or_lines"
        return "json_unknown"
    if ext == ".tsv":
        return "tsv"
    if ext == ".csv":
        return "csv"
    first_line = text.split("\n", 1)[0]
    if "\t" in first_line:
        return "tsv"
    if "," in first_line:
        return "csv"
    return "unknown"


def _byte_offset(text: str, char_index: int) -> int:
    return len(text[:char_index].encode("utf-8"))


_SEPARATOR = re.compile(r"\s*(,\s*)?")
# Python's JSON parser recurses per nesting level: a hostile file must not crash the run.
TOO_DEEP, TOO_DEEP_DETAIL = "json_too_deep", "nested deeper than the JSON parser's recursion limit"


def _json_array_units(text: str, notes: list[str]) -> Iterator[_Unit]:
    """Elements of a JSON array, one at a time, surviving damage part way."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = text.count("\n", 0, pos) + 1
    row = 0
    while True:
        sep = _SEPARATOR.match(text, pos)
        had_comma = bool(sep.group(1))
        line += text.count("\n", pos, sep.end())
        pos = sep.end()
        if pos >= len(text):
            yield _damaged_tail(text, pos, row, line, "truncated_json", "array ends without ']'")
            return
        if text[pos] == "]":
            if had_comma and row:
                notes.append(f"trailing comma before ']' at byte {_byte_offset(text, pos)} tolerated")
            if text[pos + 1 :].strip():
                yield _damaged_tail(text, pos + 1, row, line, "invalid_json", "content after the closing ']'")
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            reason = "invalid_json" if text.rstrip().endswith("]") else "truncated_json"
            yield _damaged_tail(text, pos, row, line, reason, f"{exc.msg}; rest of the file not parsed")
            return
        except RecursionError:
            yield _damaged_tail(text, pos, row, line, TOO_DEEP, f"{TOO_DEEP_DETAIL}; rest of the file not parsed")
            return
        yield _Unit(row, line, value)
        line += text.count("\n", pos, end)
        pos, row = end, row + 1


def _damaged_tail(text: str, pos: int, row: int, line: int, reason: str, detail: str) -> _Unit:
    offset = _byte_offset(text, pos)
    return _Unit(
        row,
        line,
        byte_offset=offset,
        error=RecordError(reason, f"{detail} (from byte {offset}, line {line})"),
        raw=text[pos : pos + RAW_EXCERPT_CHARS],
        rest_of_file=True,
    )


def _json_lines_units(text: str) -> Iterator[_Unit]:
    row = 0
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield _Unit(row, line_no, json.loads(line))
        except (json.JSONDecodeError, RecursionError) as exc:
            reason, why = (("invalid_json", exc.msg) if isinstance(exc, json.JSONDecodeError)
                           else (TOO_DEEP, TOO_DEEP_DETAIL))
            yield _Unit(row, line_no, error=RecordError(reason, f"line {line_no}: {why}"), raw=line[:RAW_EXCERPT_CHARS])
        row += 1


def _json_object_units(text: str, notes: list[str]) -> Iterator[_Unit]:
    """One JSON object: a record, or a wrapper holding a list of records; else JSON lines."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        yield from _json_lines_units(text)
        return
    key = _records_key(value)
    if key is not None:
        notes.append(f"records read from the list under key {key!r}")
        for row, item in enumerate(value[key]):
            yield _Unit(row, None, item)
    else:
        yield _Unit(0, 1, value)


def _records_key(value: Any) -> str | None:
    """The key of the one list of objects in a wrapper object; None when the object is a record itself."""
    if not isinstance(value, dict):
        return None
    lists = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    looks_like_record = {"chosen", "Question", "instances", *SFT_FIELDS["instruction"]} & set(value)
    return lists[0] if len(lists) == 1 and not looks_like_record else None


MC_LETTERS = ("A", "B", "C", "D", "E", "F")


def _table_units(text: str, delimiter: str, columns: dict[str, str]) -> Iterator[_Unit]:
    """CSV/TSV rows as dicts; a header is used when it names known columns (after ``columns`` renames them)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        first = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield _Unit(0, 1, error=RecordError("invalid_csv", str(exc)), rest_of_file=True)
        return
    header, unknown = _first_row(first, columns)
    row = 0
    pending = [] if header or unknown else [(1, first)]
    line_start = reader.line_num + 1
    while True:
        if pending:
            line_no, cells = pending.pop()
        else:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _Unit(row, line_start, error=RecordError("invalid_csv", str(exc)), rest_of_file=True)
                return
            line_no, line_start = line_start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if unknown:
            yield _Unit(row, line_no, error=RecordError("unknown_columns", unknown), raw=_cells_excerpt(cells))
        else:
            yield _table_row_unit(row, line_no, cells, header)
        row += 1


# SFT fields and the other names files give them, the reader's own name first; the first present is read.
SFT_FIELDS: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "text", "question", "query"),
    "output": ("output", "response", "answer", "completion", "target"),
    "input": ("input", "context"),
}
KNOWN_COLUMNS = {"chosen", "rejected", *(name for names in SFT_FIELDS.values() for name in names)}
# A column name: a word or a few, no sentence punctuation, no leading digit (data rows have them).
_COLUMN_NAME = re.compile(r"[^\W\d]\w*(?:[ .-]\w+){0,3}")


def _first_row(cells: list[str], columns: dict[str, str]) -> tuple[list[str] | None, str | None]:
    """(header names, renamed by ``columns``, when the first row names known columns; else why the first
    row is a header naming none of them, or None when it reads as data)."""
    renamed = {k.lower(): v for k, v in columns.items()}
    names = [renamed.get(c.strip().lower(), c.strip().lower()) for c in cells]
    if KNOWN_COLUMNS & set(names):
        return names, None
    return None, _unknown_header(cells)


def _unknown_header(cells: list[str]) -> str | None:
    """Why the first row is a header naming none of the known columns, or None when it reads as data."""
    names = [c.strip() for c in cells if c.strip()]
    if names and all(_COLUMN_NAME.fullmatch(n) for n in names):
        return f"the header {names[:8]} names none of the columns the reader knows ({', '.join(sorted(KNOWN_COLUMNS))})"
    return None


def _cells_excerpt(cells: list[str]) -> str:
    return "\t".join(cells)[:RAW_EXCERPT_CHARS]


def _table_row_unit(row: int, line_no: int, cells: list[str], header: list[str] | None) -> _Unit:
    raw = _cells_excerpt(cells)
    if header is not None:
        if len(cells) != len(header):
            return _Unit(row, line_no, error=RecordError(
                "bad_columns", f"{len(cells)} cells, header has {len(header)}"), raw=raw)
        return _Unit(row, line_no, _table_mapping(dict(zip(header, cells))))
    if len(cells) == 3:  # question, answer, rationale (gsm8k)
        question, answer, rationale = cells
        return _Unit(row, line_no, {"instruction": question, "output": f"{rationale.strip()}\n#### {answer.strip()}"})
    if len(cells) == 2:
        return _Unit(row, line_no, {"instruction": cells[0], "output": cells[1]})
    return _Unit(row, line_no, error=RecordError(
        "bad_columns", f"{len(cells)} cells and no header naming the columns"), raw=raw)


def _table_mapping(mapping: dict[str, str]) -> dict[str, Any]:
    """A header row's cells: multiple choice when it has option letters, else as named."""
    letters = [x for x in MC_LETTERS if x.lower() in mapping]
    if "question" in mapping and len(letters) >= 2:
        return {
            "question": mapping["question"],
            "options": [mapping[x.lower()] for x in letters],
            "answer": mapping.get("answer", ""),
        }
    return {k: v for k, v in mapping.items() if k}


# ---------------------------------------------------------------- records


def _text(obj: dict, key: str) -> str | None:
    """A string field; numbers and booleans are written as text, null is absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise RecordError(f"bad_type:{key}", f"field {key!r} is a {type(value).__name__}, expected text")


SEEN_SHOWN = 8  # field names a missing_field reason lists


def _missing(key: str, obj: dict, aliases: tuple[str, ...] = (), why: str = "") -> RecordError:
    """``missing_field:<key> (seen: <the record's fields>)``: the reasons' counts then show a file's schema."""
    seen = sorted(map(str, obj))
    shown = ", ".join(seen[:SEEN_SHOWN]) + (f", +{len(seen) - SEEN_SHOWN} more" if len(seen) > SEEN_SHOWN else "")
    names = " or ".join(repr(name) for name in (key, *aliases))
    return RecordError(f"missing_field:{key} (seen: {shown or 'no fields'})", why or f"no field {names}")


def _required(obj: dict, key: str, *aliases: str) -> str:
    for name in (key, *aliases):
        value = _text(obj, name)
        if value is not None and value.strip():
            return value
    if any(name in obj for name in (key, *aliases)):
        raise RecordError(f"empty_field:{key}", f"field {key!r} is empty")
    raise _missing(key, obj, aliases)


def _history(value: Any) -> list[dict[str, str]]:
    """``[[prompt, response], ...]`` or ``[{prompt, response}, ...]``; "" and null mean none."""
    if value in (None, "", []):
        return []
    if not isinstance(value, list):
        raise RecordError("bad_type:history", f"history is a {type(value).__name__}, expected a list of turns")
    turns = []
    for turn in value:
        if isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn):
            turns.append({"prompt": turn[0], "response": turn[1]})
        elif isinstance(turn, dict) and isinstance(turn.get("prompt"), str) and isinstance(turn.get("response"), str):
            turns.append({"prompt": turn["prompt"], "response": turn["response"]})
        else:
            raise RecordError("bad_type:history", "a history turn is not a [prompt, response] pair")
    return turns


_TURN_SPLIT = re.compile(r"\n\n(Human|Assistant): ")


def _dialogue_turns(text: str) -> list[tuple[str, str]]:
    parts = _TURN_SPLIT.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if parts[0].strip():
        raise RecordError("malformed_dialogue", "text before the first 'Human:' turn")
    turns: list[tuple[str, str]] = []
    for i in range(1, len(parts) - 1, 2):
        role, text = parts[i], parts[i + 1]
        if turns and turns[-1][0] == role:  # a quoted "Assistant:" inside an answer
            turns[-1] = (role, f"{turns[-1][1]}\n\n{role}: {text}")
        else:
            turns.append((role, text))
    return turns


def _preference(obj: dict) -> dict[str, Any]:
    chosen, rejected = _required(obj, "chosen"), _required(obj, "rejected")
    if "prompt" in obj:
        return {"prompt": _required(obj, "prompt"), "chosen": chosen, "rejected": rejected,
                "history": _history(obj.get("history"))}
    if "\n\nHuman:" not in chosen and not chosen.startswith("Human:"):
        raise _missing("prompt", obj, why="no prompt field and no 'Human:' dialogue turns")
    c_turns, r_turns = _dialogue_turns(chosen), _dialogue_turns(rejected)
    if not c_turns or not r_turns or c_turns[-1][0] != "Assistant" or r_turns[-1][0] != "Assistant":
        raise RecordError("malformed_dialogue", "a dialogue does not end with an assistant turn")
    if c_turns[:-1] != r_turns[:-1]:
        raise RecordError("preference_diverges_early", "chosen and rejected differ before the final assistant turn")
    prefix = c_turns[:-1]
    roles = [role for role, _ in prefix]
    if len(prefix) % 2 != 1 or roles != ["Human", "Assistant"] * (len(prefix) // 2) + ["Human"]:
        raise RecordError("malformed_dialogue", "turns do not alternate Human/Assistant")
    history = [{"prompt": prefix[i][1], "response": prefix[i + 1][1]} for i in range(0, len(prefix) - 1, 2)]
    return {"prompt": prefix[-1][1], "chosen": c_turns[-1][1], "rejected": r_turns[-1][1], "history": history}


# AlpacaEval annotations: ``preference`` 1 = output_1 better, 2 = output_2 better; 0 and 1.5 are draws.
_PAIRWISE_WINNER = {1: ("output_1", "output_2"), 2: ("output_2", "output_1")}


def _pairwise_preference(obj: dict) -> dict[str, Any]:
    """An AlpacaEval-style judged pair ``{instruction, output_1, output_2, preference}`` as a preference record.

    A draw teaches no preference: it becomes a quarantine row (``preference_draw``), so it is counted, not lost."""
    value = obj.get("preference")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError("bad_preference", f"preference {value!r} is not 1, 2 or a draw (0, 1.5)")
    if value in (0, 1.5):
        raise RecordError("preference_draw", f"preference {value}: the judge found no winner")
    if value not in _PAIRWISE_WINNER:
        raise RecordError("bad_preference", f"preference {value!r} is not 1, 2 or a draw (0, 1.5)")
    better, worse = _PAIRWISE_WINNER[int(value)]
    return {"prompt": _required(obj, "instruction"), "chosen": _required(obj, better),
            "rejected": _required(obj, worse), "history": []}


def _multiple_choice(obj: dict) -> dict[str, Any]:
    question = _required(obj, "question", "Question")
    options = obj.get("options")
    if options is None:
        options = [obj[x] for x in MC_LETTERS if x in obj]
    if not isinstance(options, list) or len(options) < 2:
        raise RecordError("bad_options", "fewer than two options")
    options = [_text({"option": o}, "option") or "" for o in options]
    answer = (_text(obj, "answer") or _text(obj, "Answer") or "").strip().upper()
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if answer not in letters:
        raise RecordError("bad_answer", f"answer {answer!r} is not one of {letters}")
    return {"question": question, "options": options, "answer": answer}


def _first_present(obj: dict, names: tuple[str, ...]) -> str | None:
    """The text of the first of ``names`` the record has (null reads as absent)."""
    return next((_text(obj, name) for name in names if name in obj), None)


def _sft(obj: dict) -> dict[str, Any]:
    instruction = _required(obj, *SFT_FIELDS["instruction"])
    output = _first_present(obj, SFT_FIELDS["output"])
    if output is None:
        raise _missing("output", obj, SFT_FIELDS["output"][1:])
    return {"instruction": instruction, "input": _first_present(obj, SFT_FIELDS["input"]) or "", "output": output,
            "history": _history(obj.get("history"))}


def _classify(obj: Any) -> list[tuple[str, dict[str, Any]]]:
    """(kind, fields) for one parsed value; self-instruct tasks expand to one per instance."""
    if not isinstance(obj, dict):
        raise RecordError("not_an_object", f"a {type(obj).__name__}, expected an object")
    if "chosen" in obj or "rejected" in obj:
        return [("preference", _preference(obj))]
    if "output_1" in obj and "output_2" in obj:
        return [("preference", _pairwise_preference(obj))]
    if "instances" in obj:
        instruction = _required(obj, "instruction")
        instances = obj["instances"]
        if not isinstance(instances, list) or not instances:
            raise RecordError("bad_type:instances", "instances is not a non-empty list")
        if not all(isinstance(inst, dict) for inst in instances):
            raise RecordError("bad_type:instances", "an instance is not an object")
        return [("sft", _sft({**inst, "instruction": instruction})) for inst in instances]
    # A question with options (a list or letter fields) is multiple choice; without, a question and its answer.
    if ("question" in obj or "Question" in obj) and ("options" in obj or any(x in obj for x in MC_LETTERS)):
        return [("multiple_choice", _multiple_choice(obj))]
    return [("sft", _sft(obj))]


def _map_strings(fields: dict[str, Any], fix) -> dict[str, Any]:
    """``fix`` applied to every text of a record: plain fields, history turns, options."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, str):
            out[key] = fix(value)
        elif key == "history":
            out[key] = [{k: fix(v) for k, v in turn.items()} for turn in value]
        elif key == "options":
            out[key] = [fix(v) for v in value]
        else:
            out[key] = value
    return out


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _escaped_share(items: list[dict[str, Any]]) -> float:
    def escaped(fields: dict[str, Any]) -> bool:
        return any(isinstance(v, str) and "\\n" in v for v in fields.values())

    return sum(map(escaped, items)) / len(items) if items else 0.0


def file_category(relpath: str, options: ReaderOptions) -> str | None:
    """The file's stem when a category glob matches it (exam files get theirs from their subject)."""
    if any(fnmatch.fnmatch(relpath, pattern) for pattern in options.category_globs):
        return SPLIT_SUFFIX.sub("", PurePosixPath(relpath).name.split(".")[0])
    return None


def dataset_name(relpath: str) -> str:
    parts = PurePosixPath(relpath).parts
    return parts[0] if len(parts) > 1 else PurePosixPath(relpath).name.split(".")[0]


def column_mapping(relpath: str, options: ReaderOptions) -> tuple[str | None, dict[str, str]]:
    """The configured (glob, {field in the file: field the reader knows}) of a file: the first glob matching."""
    return next(((glob, mapping) for glob, mapping in options.column_mapping.items()
                 if fnmatch.fnmatch(relpath, glob)), (None, {}))


def _renamed(value: Any, columns: dict[str, str]) -> Any:
    if not columns or not isinstance(value, dict):
        return value
    return {columns.get(key, key): item for key, item in value.items()}


def _quarantine_row(corpus: str, unit: _Unit, error: RecordError, duplicate_of: str | None = None) -> dict:
    raw = unit.raw
    if raw is None and unit.value is not None:
        raw = json.dumps(unit.value, ensure_ascii=False, default=str)[:RAW_EXCERPT_CHARS]
    return {"corpus": corpus, "source": corpus, "source_row": unit.source_row, "source_line": unit.source_line,
            "byte_offset": unit.byte_offset, "reason": error.reason, "detail": error.detail,
            "duplicate_of": duplicate_of, "raw": raw}


def read_file(path, relpath: str, options: ReaderOptions = ReaderOptions()) -> ReadResult:
    """Read one corpus file into normalized records and quarantine rows.

    ``relpath`` is the file's path under the raw root; it becomes ``corpus``
    and ``source``. Raises ``UnreadableFile`` only when the file cannot be read.
    """
    notes: list[str] = []
    data, error = _read_bytes(path, options.max_decompressed_bytes)
    fmt = "unknown"
    replaced_utf8 = False
    units: list[_Unit]
    glob, columns = column_mapping(relpath, options)
    if glob is not None:
        notes.append(f"fields renamed by the column mapping for {glob!r}: {columns}")
    if error is None:
        try:
            text, replaced_utf8 = _decode(data, notes)
        except RecordError as exc:
            error = exc
    if error is not None:
        units, source_units = [_Unit(0, None, error=error, raw=None)], 1
    elif not text.strip():
        units, source_units = [_Unit(0, None, error=RecordError("empty_file", "the file holds no data"))], 1
    else:
        fmt = _sniff_format(relpath, text)
        units = list(_units(fmt, text, notes, columns))
        source_units = count_source_units(fmt, text, columns)
    return _normalize_units(relpath, units, fmt, notes, options, replaced_utf8, columns, source_units)


def _units(fmt: str, text: str, notes: list[str], columns: dict[str, str]) -> Iterator[_Unit]:
    if fmt == "json_array":
        return _json_array_units(text, notes)
    if fmt == "json_object_or_lines":
        return _json_object_units(text, notes)
    if fmt == "jsonl":
        return _json_lines_units(text)
    if fmt in TABLE_FORMATS:
        return _table_units(text, "," if fmt == "csv" else "\t", columns)
    detail = "not JSON, JSON lines, CSV or TSV" if fmt == "unknown" else "JSON file that is neither an array nor objects"
    return iter([_Unit(0, 1, error=RecordError("unknown_format", detail), raw=text[:RAW_EXCERPT_CHARS])])


TABLE_FORMATS = ("csv", "tsv")
# A JSON token for counting array elements: a string (perhaps cut off), a bracket or comma, or a bare literal.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{},]|[^\s\[\]{},"]+')


def count_source_units(fmt: str, text: str, columns: dict[str, str] | None = None) -> int:
    """How many units the file holds, counted apart from the reader and before any record is classified:
    array elements, non-blank JSON lines, CSV/TSV data rows, the records of a wrapper object; 1 for a
    file of unknown format. In a damaged JSON array, the elements that begin before the damage."""
    if fmt == "json_array":
        try:
            value = json.loads(text)
            return len(value) if isinstance(value, list) else 1
        except (json.JSONDecodeError, RecursionError):
            return _array_elements(text)
    if fmt == "json_object_or_lines":
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return _nonblank_lines(text)
        key = _records_key(value)
        return 1 if key is None else len(value[key])
    if fmt == "jsonl":
        return _nonblank_lines(text)
    if fmt in TABLE_FORMATS:
        return _table_data_rows(text, "," if fmt == "csv" else "\t", columns or {})
    return 1


def _nonblank_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.strip())


def _array_elements(text: str) -> int:
    """Top-level elements of a JSON array that does not parse, by its tokens: no value is decoded."""
    depth = elements = 0
    expect = False
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if depth == 1 and expect and token not in (",", "]"):
            elements, expect = elements + 1, False
        if token in ("[", "{"):
            depth += 1
            expect = expect or depth == 1
        elif token in ("]", "}"):
            depth -= 1
            if depth == 0:
                break
        elif token == "," and depth == 1:
            expect = True
    return elements


def _table_data_rows(text: str, delimiter: str, columns: dict[str, str]) -> int:
    """Rows holding a non-blank cell, less a header row; a row the CSV parser cannot read counts once,
    for itself and what follows it."""
    rows, first = 0, None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for cells in reader:
            if first is None:
                first = cells
            if any(c.strip() for c in cells):
                rows += 1
    except csv.Error:
        return rows + 1 - (first is not None and _is_header(first, columns))
    return rows - (first is not None and _is_header(first, columns))


def _is_header(cells: list[str], columns: dict[str, str]) -> bool:
    header, unknown = _first_row(cells, columns)
    return header is not None or unknown is not None


def unaccounted_units(result: ReadResult) -> tuple[list[int], list[int]]:
    """(units no record or quarantine row stands for, rows pointing at a unit the file does not have).

    Both empty means every unit of the file, as ``count_source_units`` counted them, came out as rows. A
    damaged tail's row (``rest_from``) stands for every unit from its own on."""
    rows = set(result.records["source_row"].drop_nulls()) | set(result.quarantine["source_row"].drop_nulls())
    end = result.source_units if result.rest_from is None else min(result.rest_from, result.source_units)
    missing = [unit for unit in range(end) if unit not in rows]
    invented = sorted(row for row in rows if row >= result.source_units and row != result.rest_from)
    return missing, invented


def _strings(fields: dict[str, Any]) -> Iterator[str]:
    """Every text of a record: plain fields, history turns, options."""
    for key, value in fields.items():
        if isinstance(value, str):
            yield value
        elif key == "history":
            yield from (text for turn in value for text in turn.values())
        elif key == "options":
            yield from value


def _check_text(fields: dict[str, Any], max_chars: int, replaced_utf8: bool) -> None:
    """Refuse a record too large for any model, or one holding bytes the decoder had to replace."""
    texts = list(_strings(fields))
    size = sum(map(len, texts))
    if size > max_chars:
        raise RecordError("record_too_large", f"{size} characters of text, over the cap of {max_chars}")
    if replaced_utf8 and any(REPLACEMENT in text for text in texts):
        raise RecordError("invalid_utf8", "holds bytes that are not valid UTF-8 (replaced by U+FFFD)")


def _normalize_units(relpath: str, units: list[_Unit], fmt: str, notes: list[str], options: ReaderOptions,
                     replaced_utf8: bool, columns: dict[str, str], source_units: int) -> ReadResult:
    category = file_category(relpath, options)
    subject = SPLIT_SUFFIX.sub("", PurePosixPath(relpath).name.split(".")[0])
    dataset = dataset_name(relpath)
    parsed: list[tuple[_Unit, str, dict[str, Any]]] = []
    quarantine: list[dict] = []
    rest_from = None
    for unit in units:
        if unit.error is not None:
            quarantine.append(_quarantine_row(relpath, unit, unit.error))
            rest_from = unit.source_row if unit.rest_of_file else rest_from
            continue
        try:  # table rows were renamed with their header
            classified = _classify(unit.value if fmt in TABLE_FORMATS else _renamed(unit.value, columns))
            for _, fields in classified:
                _check_text(fields, options.max_record_chars, replaced_utf8)
        except RecordError as exc:
            quarantine.append(_quarantine_row(relpath, unit, exc))
            continue
        parsed.extend((unit, kind, fields) for kind, fields in classified)
    if _escaped_share([f for _, _, f in parsed]) >= 0.2:
        notes.append("literal \\n and \\t escapes turned into newlines and tabs")
        parsed = [(u, k, _map_strings(f, _unescape)) for u, k, f in parsed]
    records: list[dict] = []
    first_row: dict[str, int] = {}
    for unit, kind, fields in parsed:
        fields = _map_strings(fields, normalize_text)
        rid = record_id(kind, fields)
        if rid in first_row:
            quarantine.append(_quarantine_row(
                relpath, unit, RecordError("duplicate_in_file", f"same content as source_row {first_row[rid]}"), rid))
            continue
        first_row[rid] = unit.source_row
        own_category = unit.value.get("category") if isinstance(unit.value, dict) else None
        row = {"record_id": rid, "corpus": relpath, "dataset": dataset, "source": relpath,
               "source_row": unit.source_row, "source_line": unit.source_line, "kind": kind,
               "category": own_category if isinstance(own_category, str) and own_category
               else category or (subject if kind == "multiple_choice" else None),
               **fields}
        row["lang"] = detect_lang(embedding_text(row))
        records.append(row)
    return ReadResult(
        records=pl.DataFrame(records, schema=RECORD_SCHEMA) if records else pl.DataFrame(schema=RECORD_SCHEMA),
        quarantine=pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA) if quarantine
        else pl.DataFrame(schema=QUARANTINE_SCHEMA),
        format=fmt,
        source_units=source_units,
        rest_from=rest_from,
        notes=notes,
    )
