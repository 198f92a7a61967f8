"""On request only: does the selection train a better model than random rows of the same size?"""

import json
import math
from datetime import datetime, timezone

import dagster as dg
import polars as pl

from sft_assets.core import selection_value as sv
from sft_assets.core.exports import SELECTION_REPORT, refresh_selection_value_section
from sft_assets.core.plots import arm_losses_png, png_markdown
from sft_assets.core.storage import atomic_write
from sft_assets.defs.diversity import ALL_CORPORA
from sft_assets.defs.metadata import markdown_table
from sft_assets.defs.models import EmbeddingModel, LanguageModel
from sft_assets.defs.resources import RawRoot
from sft_assets.defs.selection import ExportFolder


class SelectionReportConfig(dg.Config):
    k: int | None = None
    """Rows per arm. None here and below: the device's scale (`selection_value.CPU_SCALE`, sized for 3 seeds
    in an hour on two cores, or `GPU_SCALE`, k = 1,000)."""
    seeds: list[int] = [0, 1, 2]
    steps: int | None = None
    """Optimizer steps per run; None: one epoch of k rows."""
    lr: float = 5e-5
    batch_size: int | None = None
    max_tokens: int | None = None
    eval_per_dataset: int | None = None
    eval_files: list[str] = []
    """More evaluation files, relative to the raw root, in any format the readers accept."""
    curated_eval: bool = True
    """Evaluate on the curated seed tasks too (they are also the novelty reference: see the report)."""
    judge_items: int = 100


@dg.asset(
    group_name="evaluation",
    kinds={"pytorch", "json"},
    ins={"raw_records": ALL_CORPORA},
    description="Run on request, never by automation: fine-tunes the language model on k random, k dedup and "
    "k selected rows and on the selected rows with one stage off, and compares held-out answer loss (paired "
    "across seeds and items) and the quality judge's preference. Writes the report into the export folder; "
    "the dataset card gets its table.",
)
def selection_report(context: dg.AssetExecutionContext, config: SelectionReportConfig,
                     selection_decisions: pl.DataFrame, raw_records: pl.DataFrame, quality_model: pl.DataFrame,
                     language_model: LanguageModel, embedding_model: EmbeddingModel, raw_root: RawRoot,
                     curated_root: RawRoot, export_folder: ExportFolder):
    lm = language_model.load()
    scale = sv.default_scale(lm.device).given(k=config.k, batch_size=config.batch_size,
                                              max_tokens=config.max_tokens, eval_per_dataset=config.eval_per_dataset)
    k = scale.k
    recipe = sv.Recipe(steps=config.steps or math.ceil(k / scale.batch_size), lr=config.lr,
                       batch_size=scale.batch_size, max_tokens=scale.max_tokens)
    curated = curated_root.read_all()[0] if config.curated_eval else None
    eval_sets = sv.default_eval_sets(selection_decisions, raw_records, scale.eval_per_dataset, curated)
    for name in config.eval_files:
        path, _ = raw_root.confine(name)
        eval_sets[f"file:{name}"] = sv.eval_file_rows(path, raw_root.reader_options())
    held = set().union(*(set(rows["record_id"]) for rows in eval_sets.values()))
    experiment = sv.Experiment(
        decisions=selection_decisions, records=raw_records, eval_sets=eval_sets,
        excluded=sv.excluded_ids(selection_decisions, held), k=k, seeds=config.seeds, recipe=recipe,
        judge_items=config.judge_items, log=context.log.info,
    )
    judge, skipped = None, None
    if config.judge_items and quality_model.height:
        judge, skipped = sv.gated_judge(quality_model.row(0, named=True), embedding_model.load(),
                                        embedding_model.answer_max_tokens)
    report = experiment.run(lm, judge, skipped)
    report["config"] = {"label": "", "device": lm.device, "model": lm.model_id, "run_id": context.run_id,
                        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "eval_per_dataset": scale.eval_per_dataset, "eval_files": config.eval_files}
    folder = export_folder.path
    atomic_write(f"{folder}/{SELECTION_REPORT}", lambda fh: fh.write(json.dumps(report, indent=2).encode()))
    refresh_selection_value_section(folder)
    headline = sv.headline_set(report)
    return dg.MaterializeResult(metadata={
        "verdict": dg.MetadataValue.md(sv.verdict(report)),
        "arms": dg.MetadataValue.md(markdown_table(sv.arm_table(report), rows=20)),
        "loss_per_arm": dg.MetadataValue.md(png_markdown(
            arm_losses_png(report["loss"][headline], f"held-out answer loss ({headline})"), "loss per arm")),
        "judge": dg.MetadataValue.json(report.get("judge", {})),
        "recipe": dg.MetadataValue.json({"k": k, "seeds": list(config.seeds), **recipe.to_dict()}),
        "report": dg.MetadataValue.path(f"{folder}/{SELECTION_REPORT}"),
    })


assets = [selection_report]
