"""Selection and the final datasets: every pool row kept or dropped with its reasons, then the exports."""

import dagster as dg
import polars as pl

from sft_assets.core.datasets import (
    ppo_dataset as build_ppo, rm_dataset as build_rm, rm_problems, sft_dataset as build_sft, sft_problems,
)
from sft_assets.core.exports import publish_exports
from sft_assets.core.quality import hard_rule_failures
from sft_assets.core.plots import bar_png, png_markdown
from sft_assets.core.selection import (
    SIGNAL_COLUMNS, SelectionPolicy, decide, novelty_cut, quality_margin, reason_counts,
)
from sft_assets.defs.diversity import ALL_CORPORA
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.quality import reward_margins
from sft_assets.defs.resources import WarehouseResource, missing_partitions

# The per-file tables selection reads: a partition missing from one of them must not go unnoticed.
PER_FILE_INPUTS = ("raw_records", "quality_labels", "ppl_scores", "option_probabilities")


class SelectionConfig(dg.Config):
    """The selection policy; every field is editable in the Launchpad."""

    quality_threshold: float = 0.2
    """An SFT row whose judged P(acceptable answer) is below this fails quality (see SelectionPolicy for why 0.2)."""
    uncertainty_signal: str = "ppl"
    uncertainty_keep_fraction: float | None = 0.8
    min_uncertainty: float | None = None
    max_option_mass: float | None = None
    category_cap: int | None = None
    diverse_budget_rows: int | None = None
    diverse_budget_fraction: float | None = 1.0
    """Share of the rows reaching the diverse stage that may stay; 1.0 keeps every row K-Center picked."""
    missing_quality: str = "drop"
    """A row that passed every stage without its score, and no gate saying why: `drop` (missing_signal:...) or
    `keep` (named in missing_signals). Gated signals (quality_gate, novelty_gate, option_gate) never drop."""
    missing_novelty: str = "drop"
    missing_uncertainty: str = "drop"

    def policy(self, novelty: dict | None = None) -> SelectionPolicy:
        """The policy, with the novelty cut (``novelty_cut``) that novelty_scores' config set: the novelty
        stage owns it, so the diverse subset and the selection cannot disagree about what is novel."""
        fields = self.model_dump()
        rows, fraction = fields.pop("diverse_budget_rows"), fields.pop("diverse_budget_fraction")
        return SelectionPolicy(**fields, **(novelty or {}), diverse_budget=rows if rows is not None else fraction)


class ExportFolder(dg.ConfigurableResource):
    path: str


def _signals(pool: pl.DataFrame, *tables: pl.DataFrame) -> pl.DataFrame:
    """The pool with every signal column, null where no stage produced it (a gate column an upstream
    table lacks: no gate, the signal is usable)."""
    frame = pool.rename({"category": "known_category"})
    for table in tables:
        frame = frame.join(table, on="record_id", how="left", maintain_order="left")
    frame = frame.with_columns(category=pl.coalesce("topic", "known_category"))
    return frame.with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in SIGNAL_COLUMNS.items() if name not in frame.columns]
    ).select(list(SIGNAL_COLUMNS)).with_columns([pl.col(n).cast(t) for n, t in SIGNAL_COLUMNS.items()])


def _per_record(scores: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """One row per record_id (the same record in two corpora has the same score), with those of ``columns``
    the table has (a gate column is absent from tables written before gates)."""
    present = [c for c in columns if c in scores.columns]
    if scores.height == 0:
        return pl.DataFrame(schema={"record_id": pl.String, **{c: SIGNAL_COLUMNS[c] for c in present}})
    return scores.select("record_id", *present).unique("record_id", keep="first")


@dg.asset(
    group_name="selection",
    kinds={"polars", "parquet"},
    ins={"quality_labels": ALL_CORPORA, "ppl_scores": ALL_CORPORA, "option_probabilities": ALL_CORPORA},
    description="One row per pool candidate: kept or dropped, with the ordered reasons "
    "(exact/near duplicate, quality, novelty, uncertainty, category cap, diversity) and the signals behind them.",
    check_specs=[dg.AssetCheckSpec("counts_add_up", asset="selection_decisions", blocking=True,
                                   description="one decision per pool row: kept + dropped = pool"),
                 dg.AssetCheckSpec("every_file_loaded", asset="selection_decisions",
                                   description="every file has its records and scores; a file without them is "
                                   "listed (its rows are missing from the pool, or dropped as missing_signal)")],
)
def selection_decisions(context: dg.AssetExecutionContext, config: SelectionConfig, warehouse: WarehouseResource,
                        candidate_pool: pl.DataFrame, near_duplicates: pl.DataFrame,
                        topic_clusters: pl.DataFrame, diverse_subset: pl.DataFrame, novelty_scores: pl.DataFrame,
                        quality_labels: pl.DataFrame, ppl_scores: pl.DataFrame,
                        option_probabilities: pl.DataFrame):
    policy = config.policy(novelty_cut(novelty_scores))
    signals = _signals(
        candidate_pool.select("record_id", "corpus", "kind", "category", "exact_duplicate_of"),
        near_duplicates.select("record_id", "near_duplicate_of"),
        topic_clusters.select("record_id", "topic"),
        diverse_subset.select("record_id", "diverse_rank"),
        novelty_scores,
        _per_record(quality_labels.with_columns(quality_reasons=hard_rule_failures(pl.col("quality_reasons"))),
                    "quality_score", "quality_reasons", "quality_gate"),
        _per_record(ppl_scores, "ppl", "ifd"),
        _per_record(option_probabilities, "option_mass", "option_gate"),
    )
    decisions = decide(signals, policy)
    counts = reason_counts(decisions)
    by_stage = counts.group_by("stage").agg(pl.col("first").sum()).sort("first", descending=True)
    yield dg.Output(decisions, metadata={
        **table_metadata(decisions, ["record_id", "kept", "first_reason", "reasons"]),
        "kept": int(decisions["kept"].sum()),
        "dropped": int((~decisions["kept"]).sum()),
        "policy": dg.MetadataValue.json(policy.to_dict()),
        "reasons": dg.MetadataValue.md(markdown_table(counts, rows=50)),
        "at_the_quality_cut": dg.MetadataValue.md(markdown_table(
            quality_margin(decisions, policy).join(candidate_pool.select("record_id", "instruction", "output"),
                                                   on="record_id", how="left", maintain_order="left"), rows=20)),
        "dropped_by_first_reason": dg.MetadataValue.md(
            png_markdown(bar_png(by_stage["stage"].to_list(), by_stage["first"].to_list(), "rows dropped, by first reason"),
                         "dropped by first reason")),
    })
    files = context.instance.get_dynamic_partitions(corpus_partitions.name)
    gaps = {asset: missing_partitions(warehouse.warehouse(), asset, files) for asset in PER_FILE_INPUTS}
    yield dg.AssetCheckResult(
        check_name="every_file_loaded", passed=not any(gaps.values()), severity=dg.AssetCheckSeverity.WARN,
        metadata={"not_materialized": dg.MetadataValue.json({a: keys for a, keys in gaps.items() if keys}),
                  "dropped_as_missing_signal": int(decisions["first_reason"].str.starts_with("missing_signal:").sum())})
    yield dg.AssetCheckResult(
        check_name="counts_add_up",
        passed=decisions.height == candidate_pool.height and decisions["record_id"].n_unique() == decisions.height,
        metadata={"pool": candidate_pool.height, "kept": int(decisions["kept"].sum()),
                  "dropped": int((~decisions["kept"]).sum())})


@dg.asset(
    group_name="selection",
    kinds={"polars", "parquet"},
    ins={"raw_records": ALL_CORPORA},
    description="The kept SFT rows (instruction, input, output, history) with lineage to file and row; "
    "kept multiple-choice items as SFT with their options.",
)
def sft_dataset(selection_decisions: pl.DataFrame, raw_records: pl.DataFrame):
    frame = build_sft(raw_records.unique(["record_id", "corpus"], keep="first"), selection_decisions)
    per = frame.group_by("corpus").len().sort("corpus")
    return dg.Output(frame, metadata={**table_metadata(frame, ["record_id", "corpus", "instruction", "output"]),
                                      "per_corpus": dg.MetadataValue.md(markdown_table(per, rows=200))})


@dg.asset(
    group_name="selection",
    kinds={"polars", "parquet"},
    ins={"raw_records": ALL_CORPORA},
    description="Reward-model pairs (prompt, chosen, rejected, history) from the preference corpora, "
    "deduplicated, with the quality model's margin (score of chosen - score of rejected); pairs with an "
    "empty side or chosen == rejected are counted and left out.",
)
def rm_dataset(raw_records: pl.DataFrame, quality_model: pl.DataFrame, embedding_model: EmbeddingModel):
    preference = raw_records.filter(pl.col("kind") == "preference").unique(["record_id", "corpus"], keep="first")
    pairs, dropped = build_rm(preference, margins=reward_margins(preference, quality_model, embedding_model))
    reasons = dropped.group_by("reason").len().sort("reason")
    return dg.Output(pairs, metadata={**table_metadata(pairs, ["record_id", "prompt", "chosen", "rejected"]),
                                      "dropped_pairs": dropped.height,
                                      "dropped_by_reason": dg.MetadataValue.md(markdown_table(reasons, rows=20))})


class PPOConfig(dg.Config):
    ptx_fraction: float = 0.1
    """Share of sft_dataset mixed into PPO for the ptx loss."""
    seed: int = 0


@dg.multi_asset(
    group_name="selection",
    outs={
        "ppo_prompts": dg.AssetOut(kinds={"polars", "parquet"}, description=(
            "PPO prompts: the selected SFT prompts plus the preference prompts, deduplicated on (prompt, history).")),
        "ppo_ptx": dg.AssetOut(kinds={"polars", "parquet"}, description=(
            "The SFT mix for PPO's ptx loss: a deterministic fraction of sft_dataset.")),
    },
)
def ppo_dataset(config: PPOConfig, sft_dataset: pl.DataFrame, rm_dataset: pl.DataFrame):
    prompts, ptx = build_ppo(sft_dataset, rm_dataset, ptx_fraction=config.ptx_fraction, seed=config.seed)
    yield dg.Output(prompts, "ppo_prompts", metadata=table_metadata(prompts, ["prompt", "origins"]))
    yield dg.Output(ptx, "ppo_ptx", metadata=table_metadata(ptx, ["record_id", "instruction"]))


@dg.asset(
    group_name="export",
    kinds={"json"},
    description="Training files in data/exports: Alpaca JSON and messages JSONL (SFT), TRL preference JSONL (RM), "
    "prompts JSONL (PPO) and ptx, LLaMA-Factory's dataset_info.json, and a dataset card with plots. Written and "
    "checked in a staging folder, then swapped in with one rename (the set it replaces: exports.previous); a set "
    "that fails the checks is not published.",
    check_specs=[dg.AssetCheckSpec("exports_parse", asset="exports", blocking=True,
                                   description="every file parses and has the keys its loaders need, "
                                   "checked before the set is published")],
)
def exports(config: SelectionConfig, export_folder: ExportFolder, selection_decisions: pl.DataFrame,
            sft_dataset: pl.DataFrame, rm_dataset: pl.DataFrame, ppo_prompts: pl.DataFrame, ppo_ptx: pl.DataFrame,
            candidate_pool: pl.DataFrame, novelty_scores: pl.DataFrame):
    written, problems = publish_exports(export_folder.path, sft_dataset, rm_dataset, ppo_prompts, ppo_ptx,
                                        selection_decisions, config.policy(novelty_cut(novelty_scores)),
                                        texts=candidate_pool)
    yield dg.MaterializeResult(metadata={
        "folder": dg.MetadataValue.path(export_folder.path),
        "published": not problems,
        "files": dg.MetadataValue.md("\n".join(f"- `{name}`" for name in sorted(written))
                                     or "none: the checks refused the new set, the folder keeps the last good one"),
        "sft_rows": sft_dataset.height, "rm_pairs": rm_dataset.height, "ppo_prompts": ppo_prompts.height,
    })
    yield dg.AssetCheckResult(check_name="exports_parse", passed=not problems,
                              metadata={"problems": dg.MetadataValue.md("\n".join(problems) or "none")})


@dg.asset_check(asset=sft_dataset, blocking=True, additional_ins={"near_duplicates": dg.AssetIn("near_duplicates")},
                description="no repeated record_id, every row traces to its file and row, no near-duplicate pair")
def sft_dataset_is_clean(sft_dataset: pl.DataFrame, near_duplicates: pl.DataFrame) -> dg.AssetCheckResult:
    problems = sft_problems(sft_dataset, near_duplicates)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none"})


@dg.asset_check(asset=rm_dataset, blocking=True, description="every pair has a prompt, two answers, and they differ")
def rm_pairs_are_valid(rm_dataset: pl.DataFrame) -> dg.AssetCheckResult:
    problems = rm_problems(rm_dataset)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none"})


assets = [selection_decisions, sft_dataset, rm_dataset, ppo_dataset, exports]
checks = [sft_dataset_is_clean, rm_pairs_are_valid]
