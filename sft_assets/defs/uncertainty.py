"""Uncertainty: perplexity and option probabilities, only for rows the cheap filters kept."""

import time

import dagster as dg
import numpy as np
import polars as pl

from sft_assets.core.mc_parse import lettered_items
from sft_assets.core.perplexity import answer_perplexity, chance_test, option_probabilities as score_options
from sft_assets.core.quality import hard_rule_failures
from sft_assets.core.datasets import user_prompt
from sft_assets.core.plots import histogram_png, png_markdown
from sft_assets.defs.diversity import survivors
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import LanguageModel
from sft_assets.defs.partitions import per_file_tables, report_progress, scored_per_file

PPL_SCHEMA = {"record_id": pl.String, "ppl": pl.Float64, "ppl_unconditioned": pl.Float64, "ifd": pl.Float64,
              "answer_tokens": pl.Int64, "truncated": pl.Boolean, "status": pl.String}
OPTION_SCHEMA = {"record_id": pl.String, "option_probs": pl.List(pl.Float64), "option_mass": pl.Float64,
                 "choice": pl.String, "answer": pl.String, "correct": pl.Boolean, "truncated": pl.Boolean}


class UncertaintyConfig(dg.Config):
    only_diverse_subset: bool = True
    """Score only rows K-Center picked. Selection drops every row outside the subset anyway, so the costliest
    signal goes last in the cascade; off: every row that passed dedup (and, for PPL, the quality rules)."""


def ppl_rows(raw_records: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
             quality_labels: pl.DataFrame, only_diverse_subset: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The SFT rows ``ppl_scores`` scores, and per file (``corpus``) how many it leaves out at each earlier stage."""
    sft = raw_records.filter(pl.col("kind") == "sft")
    failed_rules = quality_labels.filter(hard_rule_failures(pl.col("quality_reasons")).list.len() > 0)
    deduplicated = survivors(sft, near_duplicates)
    passed_rules = deduplicated.join(failed_rules, on="record_id", how="anti", maintain_order="left")
    rows = survivors(passed_rules, near_duplicates, diverse_subset if only_diverse_subset else None)
    counts = sft.group_by("corpus").agg(sft_rows=pl.len())
    for name, stage in (("deduplicated", deduplicated), ("passed_rules", passed_rules), ("scored", rows)):
        counts = counts.join(stage.group_by("corpus").agg(pl.len().alias(name)), on="corpus", how="left")
    counts = counts.fill_null(0).select(
        "corpus", "sft_rows", not_scored_duplicate=pl.col("sft_rows") - pl.col("deduplicated"),
        not_scored_failed_quality_rule=pl.col("deduplicated") - pl.col("passed_rules"),
        not_scored_outside_diverse_subset=pl.col("passed_rules") - pl.col("scored"))
    return rows, counts


def option_items(raw_records: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
                 only_diverse_subset: bool = True) -> pl.DataFrame:
    """The multiple-choice items ``option_probabilities`` scores: exam rows and SFT rows that parse as one."""
    kept = survivors(raw_records, near_duplicates, diverse_subset if only_diverse_subset else None)
    mc = kept.filter(pl.col("kind") == "multiple_choice")
    return pl.concat([mc.select("record_id", "corpus", "question", "options", "answer"), lettered_items(kept)],
                     how="vertical_relaxed")


# Scores go to the cache this many rows at a time (about two minutes of the language model on 2 CPU cores):
# a run stopped midway loses at most one chunk, now that one step scores every file.
CHUNK_ROWS = 256


def cached_scores(rows: pl.DataFrame, cache, schema: dict, score, chunk_rows: int = CHUNK_ROWS,
                  what: str = "rows") -> tuple[pl.DataFrame, pl.Series]:
    """Scores for ``rows`` (``record_id``, ``corpus``, what ``score`` reads) from the cache, computing only the
    missing ids, each chunk cached as soon as it is scored. Returns the scores with ``corpus``, and the ids
    computed. A chunk that fails names its files: the step scores many, and the person must know which. Each
    chunk is reported to the progress display as ``what``."""
    hit = cache.get(rows["record_id"]) if rows.height else None
    missing = rows if hit is None else rows.join(hit.select("record_id"), on="record_id", how="anti")
    missing = missing.unique("record_id", keep="first", maintain_order=True)  # the same text in two files
    fresh = []
    if missing.height:
        report_progress(what, 0, missing.height)
    for start in range(0, missing.height, chunk_rows):
        chunk = missing.slice(start, chunk_rows)
        try:
            fresh.append(score(chunk))
        except Exception as exc:
            files = chunk["corpus"].unique(maintain_order=True).to_list()
            raise RuntimeError(f"scoring {chunk.height} rows of {', '.join(files[:3])}"
                               f"{f' and {len(files) - 3} more files' if len(files) > 3 else ''}: {exc}") from exc
        cache.put(fresh[-1])
        report_progress(what, start + chunk.height, missing.height)
    parts = [f for f in (hit, *fresh) if f is not None and f.height]
    frame = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=schema)
    return (rows.select("record_id", "corpus").join(frame, on="record_id", how="left", maintain_order="left"),
            missing["record_id"])


def _computed(table: pl.DataFrame, computed: pl.Series) -> int:
    return int(table["record_id"].is_in(computed.implode()).sum())


@scored_per_file(
    group_name="uncertainty",
    kinds={"pytorch", "parquet"},
    description="Perplexity of each surviving SFT answer given its prompt (prompt tokens masked, chat "
    "template), the answer's perplexity without the prompt, and their ratio (IFD). Rows removed by exact "
    "or near dedup, failing a quality rule or (by default) outside the diverse subset are not scored. "
    "Cached by (model, record_id).",
)
def ppl_scores(context: dg.AssetExecutionContext, config: UncertaintyConfig, raw_records: pl.DataFrame,
               near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame, quality_labels: pl.DataFrame,
               language_model: LanguageModel):
    rows, counts = ppl_rows(raw_records, near_duplicates, diverse_subset, quality_labels, config.only_diverse_subset)

    def score(missing: pl.DataFrame) -> pl.DataFrame:
        prompts = missing.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list()
        result = answer_perplexity(language_model.load(), prompts, missing["output"].to_list(),
                                   max_tokens=language_model.max_tokens, batch_size=language_model.batch_size)
        return pl.DataFrame({"record_id": missing["record_id"], **{
            k: pl.Series(np.ma.filled(result[k].astype(np.float64), np.nan)).fill_nan(None)
            if k in ("ppl", "ppl_unconditioned", "ifd") else result[k] for k in PPL_SCHEMA if k != "record_id"}},
            schema=PPL_SCHEMA)

    started = time.perf_counter()
    frame, computed = cached_scores(rows, language_model.cache("ppl"), PPL_SCHEMA, score, what="ppl_scores")
    seconds = time.perf_counter() - started
    instructions = raw_records.select("record_id", "instruction").unique("record_id")
    context.add_asset_metadata({  # the step's figures, on every file it scored
        "files_in_step": len(context.partition_keys),
        "precision": language_model.precision_in_use(),
        "rows_per_s": round(computed.len() / seconds, 2) if computed.len() else 0.0,
        "ppl_distribution": dg.MetadataValue.md(png_markdown(
            histogram_png(np.log10(frame["ppl"].drop_nulls().to_numpy()), "log10 PPL"), "PPL in this step")),
    })

    def finish(key: str, table: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        ranked = table.join(instructions, on="record_id").drop_nulls("ppl").sort("ppl")
        stages = counts.filter(pl.col("corpus") == key).drop("corpus").to_dicts()
        return table, {
            **table_metadata(table),
            **(stages[0] if stages else {"sft_rows": 0}),
            "computed_rows": _computed(table, computed),
            "truncated": int(table["truncated"].sum() or 0),
            "lowest_ppl": dg.MetadataValue.md(markdown_table(ranked.select("ppl", "instruction"), rows=5)),
            "highest_ppl": dg.MetadataValue.md(markdown_table(ranked.reverse().select("ppl", "instruction"), rows=5)),
        }

    return per_file_tables(context, frame, finish)


@scored_per_file(
    group_name="uncertainty",
    kinds={"pytorch", "parquet"},
    description="For multiple-choice rows that survived dedup and (by default) are in the diverse subset "
    "(exam CSVs, and SFT items whose lettered options parse reliably, e.g. AQuA): the probability of each "
    "option letter, their sum (option mass: low = the model is unsure), the model's choice and whether it is "
    "right, and per file whether the model beats chance there (`option_gate`).",
)
def option_probabilities(context: dg.AssetExecutionContext, config: UncertaintyConfig, raw_records: pl.DataFrame,
                         near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame, language_model: LanguageModel):
    items = option_items(raw_records, near_duplicates, diverse_subset, config.only_diverse_subset)

    def score(missing: pl.DataFrame) -> pl.DataFrame:
        result = score_options(language_model.load(), missing["question"].to_list(), missing["options"].to_list(),
                               answers=missing["answer"].to_list(), batch_size=language_model.batch_size)
        return pl.DataFrame({
            "record_id": missing["record_id"], "option_probs": [list(p[:n]) for p, n in
                                                                 zip(result["option_probs"], result["n_options"])],
            "option_mass": result["option_mass"], "choice": result["choice"], "answer": missing["answer"],
            "correct": result["correct"], "truncated": result["truncated"]}, schema=OPTION_SCHEMA)

    frame, computed = cached_scores(items, language_model.cache("options"), OPTION_SCHEMA, score,
                                    what="option_probabilities")
    files = raw_records.group_by("corpus").len()
    context.add_asset_metadata({
        "files_in_step": len(context.partition_keys),
        "precision": language_model.precision_in_use(),
        "option_mass": dg.MetadataValue.md(png_markdown(
            histogram_png(frame["option_mass"].to_numpy(), "option mass"), "option mass in this step")),
    })

    def finish(key: str, table: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        # the gate belongs to this file's items as scored now, so it is not cached with the rows
        test = chance_test(table["correct"].fill_null(False), table["option_probs"].list.len())
        table = table.with_columns(option_gate=pl.lit(test.gate, dtype=pl.String))
        records = files.filter(pl.col("corpus") == key)["len"]
        return table, {
            **table_metadata(table),
            "option_signal": "used" if test.gate is None else "not used: " + test.gate.removeprefix("gate="),
            "chance_accuracy": round(test.chance, 4),
            "binomial_p_value": round(test.p_value, 4),
            "not_scored": (int(records[0]) if records.len() else 0) - table.height,
            "computed_rows": _computed(table, computed),
            "model_accuracy": float(table["correct"].mean()) if table.height else None,
        }

    return per_file_tables(context, frame, finish)


assets = [ppl_scores, option_probabilities]
