"""Multiple-choice items hidden in SFT text, such as Alpaca-CoT's AQuA rows.

Those rows hold the question and its options in the instruction
("...\\nOptions:\\n(A) 300\\n(B) 992\\n...") and the chosen letter at the end of
the chain-of-thought output ("The final answer: (C)."). Read as multiple
choice they get the option-probability uncertainty signal too. An item is
taken only when the parse leaves no doubt; every other row stays plain SFT.
"""

from __future__ import annotations

import re

import polars as pl

# The chain-of-thought templates (FLAN style) that Alpaca-CoT wraps items in:
# a label or request before the question, a cue after the options.
LEADS = re.compile(
    r"^(?:Question: |Student: |Q: |Some question: |Use some thinking to answer the following question\. "
    r"|Give stream of consciousness and then the final answer\. "
    r"|Give a quick stream of consciousness before answering the following question\. )"
)
CUES = re.compile(
    r"(?: (?:Let's think first\. Some random reasoning:|Let's think first\. Stream of consciousness:"
    r"|Hmmm, my stream of consciousness:|Stream of consciousness first, then make a decision:"
    r"|Think first, then make a decision\. Some random thoughts:|Now, let's think a bit\. Some random thoughts:"
    r"|Let's give some random thoughts before answering\.|OK\. Let's think\. Some random thoughts first:"
    r"|Random thoughts:|Stream of consciousness:)"
    r"|\nSome stream of consciousness:"
    r"|\.\nAnother student: Let's say, hmmm\.\.\.)$"  # this template adds a full stop after the options
)
OPTIONS_HEADER = "\nOptions:\n"
OPTION_LINE = re.compile(r"^\(([A-Z])\) *(.*)$")
ANSWER = re.compile(r"\banswer(?: is|:)\s*\(([A-Z])\)", re.IGNORECASE)

PARSED_SCHEMA = {"record_id": pl.String, "corpus": pl.String, "question": pl.String,
                 "options": pl.List(pl.String), "answer": pl.String}


def parse_lettered_item(prompt: str, output: str) -> dict | None:
    """``{"question", "options", "answer"}`` from a prompt with an ``Options:`` block of
    ``(A) ...`` lines and an output that names one answer letter, or None when any
    part is in doubt: options not lettered A, B, C... in order, fewer than two, an
    empty option, an unknown cue left on the last option (it would end in ":"),
    no or several answer statements, or an answer that is not an option."""
    head, found, block = prompt.rpartition(OPTIONS_HEADER)
    if not found:
        return None
    lines = CUES.sub("", block.rstrip()).split("\n")
    options = []
    for expected, line in enumerate(lines):
        match = OPTION_LINE.match(line)
        if match is None or match.group(1) != chr(ord("A") + expected) or not match.group(2).strip():
            return None
        options.append(match.group(2).strip())
    answers = ANSWER.findall(output)
    question = LEADS.sub("", head.strip()).strip()
    if len(options) < 2 or options[-1].endswith(":") or len(answers) != 1 or not question:
        return None
    if ord(answers[0]) - ord("A") >= len(options):
        return None
    return {"question": question, "options": options, "answer": answers[0]}


def lettered_items(records: pl.DataFrame) -> pl.DataFrame:
    """The SFT rows of a records frame that parse as multiple choice, keyed by their
    ``record_id`` and file (``corpus``): question, options, answer; rows that do not parse are left out."""
    rows = []
    for row in records.filter(pl.col("kind") == "sft").iter_rows(named=True):
        prompt = "\n".join(part for part in (row["instruction"], row["input"]) if part)
        item = parse_lettered_item(prompt, row["output"] or "")
        if item is not None:
            rows.append({"record_id": row["record_id"], "corpus": row["corpus"], **item})
    return pl.DataFrame(rows, schema=PARSED_SCHEMA)
