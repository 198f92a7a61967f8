"""The normalized record: its schema, its stable id, its language.

Every table downstream is keyed by ``record_id`` and carries ``corpus``,
``source``, ``source_row`` (0-based record index in its file) and
``source_line`` (1-based line where the record starts, when the format has
lines), so any row traces back to its place in its file.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

import polars as pl

KINDS = ("sft", "preference", "multiple_choice")

# Fields that carry content, per kind; record_id hashes exactly these.
CONTENT_FIELDS: dict[str, tuple[str, ...]] = {
    "sft": ("instruction", "input", "output", "history"),
    "preference": ("prompt", "chosen", "rejected", "history"),
    "multiple_choice": ("question", "options", "answer"),
}

TURN = pl.Struct({"prompt": pl.String, "response": pl.String})

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "record_id": pl.String,
    "corpus": pl.String,
    "dataset": pl.String,
    "source": pl.String,
    "source_row": pl.Int64,
    "source_line": pl.Int64,
    "kind": pl.String,
    "lang": pl.String,
    "category": pl.String,
    "instruction": pl.String,
    "input": pl.String,
    "output": pl.String,
    "history": pl.List(TURN),
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "question": pl.String,
    "options": pl.List(pl.String),
    "answer": pl.String,
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "corpus": pl.String,
    "source": pl.String,
    "source_row": pl.Int64,
    "source_line": pl.Int64,
    "byte_offset": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
    "duplicate_of": pl.String,
    "raw": pl.String,
}

# How much of a bad record's raw text a quarantine row keeps.
RAW_EXCERPT_CHARS = 2000


def normalize_text(text: str) -> str:
    """NFC, unix newlines, no surrounding white space: the form ids are computed on."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def record_id(kind: str, fields: dict[str, Any]) -> str:
    """Stable content hash: the same normalized content in two files gets the same id."""
    payload = [kind] + [fields.get(name) for name in CONTENT_FIELDS[kind]]
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=10).hexdigest()


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def detect_lang(text: str) -> str:
    """Cheap script count: ``zh`` when CJK ideographs are at least a fifth of the
    letters, ``en`` when Latin letters dominate, else ``other``.

    A fifth, not a half: Chinese instructions about code carry many Latin
    identifiers and are still Chinese to the reader."""
    cjk = latin = other = 0
    for ch in text[:2000]:
        if _is_cjk(ch):
            cjk += 1
        elif ch.isascii():
            if ch.isalpha():
                latin += 1
        elif ch.isalpha():
            other += 1
    letters = cjk + latin + other
    if letters == 0:
        return "other"
    if cjk / letters >= 0.2:
        return "zh"
    if latin / letters >= 0.6:
        return "en"
    return "other"


def embedding_text(row: dict[str, Any]) -> str:
    """The text that stands for a record when comparing records: what is asked.

    SFT: instruction + input; preference: the prompt; multiple choice: the
    question and its options."""
    kind = row["kind"]
    if kind == "sft":
        parts = [row.get("instruction") or "", row.get("input") or ""]
    elif kind == "preference":
        parts = [row.get("prompt") or ""]
    else:
        options = row.get("options") or []
        parts = [row.get("question") or ""] + [
            f"({chr(ord('A') + i)}) {opt}" for i, opt in enumerate(options)
        ]
    return "\n".join(p for p in parts if p)


def embedding_texts(frame: pl.DataFrame) -> list[str]:
    """`embedding_text` for every row of a records frame, in order."""
    return [embedding_text(row) for row in frame.iter_rows(named=True)]


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)
