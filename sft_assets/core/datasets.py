"""The three final datasets, built from the selection decisions and the records.

- SFT: the kept rows with their lineage (record_id, corpus, source, source_row).
  A kept multiple-choice item becomes an SFT row (question and lettered
  options in, the lettered answer out), so what selection chose reaches training.
- RM: preference pairs, cleaned; every pair removed is returned with a reason.
- PPO: prompts (the selected SFT prompts plus the preference prompts) and,
  separately, a fixed share of the SFT data for the ptx loss.

Every table is sorted by record_id (a content hash): the same inputs give the
same rows in the same order, whatever order the inputs came in.
"""

from __future__ import annotations

import polars as pl

from sft_assets.core.draws import key_draws
from sft_assets.core.records import TURN, embedding_text
from sft_assets.core.selection import share_count

LINEAGE = ("record_id", "corpus", "source", "source_row", "category", "lang")
SFT_COLUMNS = (*LINEAGE, "instruction", "input", "output", "history")
RM_COLUMNS = (*LINEAGE, "prompt", "chosen", "rejected", "history")
RM_DROPPED_COLUMNS = ("record_id", "corpus", "source", "source_row", "reason")
PPO_PROMPT_COLUMNS = ("prompt", "history", "record_ids", "origins")


def user_prompt(instruction: pl.Expr, input: pl.Expr) -> pl.Expr:
    """The user turn of an SFT row: ``instruction\\ninput``, LLaMA-Factory's
    convention, so a prompt reads the same in every export."""
    return pl.when(input.fill_null("") == "").then(instruction).otherwise(
        pl.concat_str(instruction, input, separator="\n")
    )


def sft_dataset(records: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Kept decisions joined to their records on (record_id, corpus).

    Raises when a kept decision has no record: a selected row must not vanish."""
    kept = decisions.filter(pl.col("kept")).select("record_id", "corpus")
    rows = kept.join(records, on=["record_id", "corpus"], how="left", validate="1:1")
    orphans = rows.filter(pl.col("kind").is_null())["record_id"]
    if orphans.len():
        raise ValueError(f"{orphans.len()} kept decisions have no record, e.g. {orphans.head(3).to_list()}")
    sft = rows.filter(pl.col("kind") == "sft").select(SFT_COLUMNS)
    mc = rows.filter(pl.col("kind") == "multiple_choice")
    return pl.concat([sft, _multiple_choice_as_sft(mc)]).sort("record_id", "corpus")


def _multiple_choice_as_sft(mc: pl.DataFrame) -> pl.DataFrame:
    """Question and options ``(A) ...`` as the instruction, ``(B) answer text`` as the output."""
    converted = [
        {
            **{name: row[name] for name in LINEAGE},
            "instruction": embedding_text(row),
            "input": "",
            "output": f"({row['answer']}) {row['options'][ord(row['answer']) - ord('A')]}",
            "history": [],
        }
        for row in mc.iter_rows(named=True)
    ]
    schema = {name: mc.schema[name] for name in LINEAGE} | {
        "instruction": pl.String, "input": pl.String, "output": pl.String, "history": pl.List(TURN),
    }
    return pl.DataFrame(converted, schema=schema)


def rm_dataset(
    preference_records: pl.DataFrame, margins: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pairs, dropped) from the preference records (other kinds are ignored).

    A pair is dropped, with the first reason that applies, for an empty prompt
    or side, chosen == rejected (no preference signal), or a repeat of an
    earlier pair's (prompt, chosen, rejected), in the same file or another: ``duplicate_pair_of:<record_id>``.
    ``pairs + dropped`` = the preference rows given.

    ``margins`` (record_id, chosen_score, rejected_score), from the quality
    model, adds those scores and ``quality_margin`` = chosen - rejected (null
    where a pair was not scored)."""
    key = ["prompt", "chosen", "rejected"]
    empty = {name: pl.col(name).fill_null("").str.strip_chars() == "" for name in key}
    first_copy = pl.col("record_id").first().over(key)
    # The same pair in two files has the same (content-hashed) record_id: the copy is told apart by its corpus.
    is_copy = (pl.col("record_id") != first_copy) | (pl.col("corpus") != pl.col("corpus").first().over(key))
    frame = (
        preference_records.filter(pl.col("kind") == "preference")
        .sort("record_id", "corpus")
        .with_columns(
            reason=pl.when(empty["prompt"]).then(pl.lit("empty_prompt"))
            .when(empty["chosen"]).then(pl.lit("empty_chosen"))
            .when(empty["rejected"]).then(pl.lit("empty_rejected"))
            .when(pl.col("chosen") == pl.col("rejected")).then(pl.lit("chosen_equals_rejected"))
            .when(is_copy).then(pl.format("duplicate_pair_of:{}", first_copy))
        )
    )
    pairs = frame.filter(pl.col("reason").is_null()).select(RM_COLUMNS)
    if margins is not None:
        pairs = pairs.join(
            margins.select("record_id", "chosen_score", "rejected_score").unique("record_id", keep="first"),
            on="record_id", how="left", validate="m:1", maintain_order="left",
        ).with_columns(quality_margin=pl.col("chosen_score") - pl.col("rejected_score"))
    return pairs, frame.filter(pl.col("reason").is_not_null()).select(RM_DROPPED_COLUMNS)


def ppo_dataset(
    sft: pl.DataFrame, preference_records: pl.DataFrame, ptx_fraction: float = 0.1, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(prompts, ptx).

    prompts: one row per distinct (prompt, history) from the selected SFT rows
    (``instruction\\ninput``) and the preference rows (pass rm_dataset's pairs,
    which are already cleaned), with the record_ids and origins that share it.

    ptx: ``ptx_fraction`` of the SFT rows (rounded up), the first in the order
    of a seeded hash of record_id: reproducible, independent of row order, and
    a uniform sample across corpora and categories."""
    if not 0.0 <= ptx_fraction <= 1.0:
        raise ValueError("ptx_fraction must be in [0, 1]")
    candidates = pl.concat([
        sft.select("record_id", "history", prompt=user_prompt(pl.col("instruction"), pl.col("input")),
                   origin=pl.lit("sft")),
        preference_records.select("record_id", "history", "prompt", origin=pl.lit("preference")),
    ])
    prompts = (
        candidates.group_by("prompt", "history")
        .agg(record_ids=pl.col("record_id").unique().sort(), origins=pl.col("origin").unique().sort())
        .sort(pl.col("record_ids").list.first())
        .select(PPO_PROMPT_COLUMNS)
    )
    draw = pl.Series(key_draws(sft["record_id"], seed), dtype=pl.UInt64)
    ptx = sft.with_columns(_draw=draw).sort("_draw", "record_id").head(share_count(sft.height, ptx_fraction))
    return prompts, ptx.drop("_draw").sort("record_id", "corpus")


def sft_problems(sft: pl.DataFrame, near_duplicates: pl.DataFrame) -> list[str]:
    """What would poison training in the SFT set: repeated ids, rows without lineage, near-duplicate pairs."""
    problems = []
    if (repeated := sft.height - sft["record_id"].n_unique()) > 0:
        problems.append(f"{repeated} record_id values appear more than once")
    if (orphans := sft.filter(pl.col("source").is_null() | pl.col("source_row").is_null()).height) > 0:
        problems.append(f"{orphans} rows do not trace to a source file and row")
    pairs = near_duplicates.filter(
        pl.col("near_duplicate_of").is_not_null()
        & pl.col("record_id").is_in(sft["record_id"].implode())
        & pl.col("near_duplicate_of").is_in(sft["record_id"].implode()))
    if pairs.height:
        problems.append(f"{pairs.height} near-duplicate pairs, e.g. {pairs.row(0, named=True)['record_id']}")
    return problems


def rm_problems(rm: pl.DataFrame) -> list[str]:
    """Reward-model pairs that cannot teach a preference: an empty side, or chosen == rejected."""
    bad = rm.filter(
        (pl.col("chosen").fill_null("").str.strip_chars() == "")
        | (pl.col("rejected").fill_null("").str.strip_chars() == "")
        | (pl.col("prompt").fill_null("").str.strip_chars() == "")
        | (pl.col("chosen") == pl.col("rejected")))
    return [f"{bad.height} invalid pairs, e.g. {bad['record_id'][0]}"] if bad.height else []
