"""Self-instruct: a generation round writes its surviving rows as a raw file, which becomes a corpus.

A round is a partition of ``self_instruct_round`` keyed by its number ("1",
"2", ...; add one in the UI's materialize dialog). Its table keeps every
candidate, kept or dropped with its reason, prompts and raw model texts. The
kept rows go to ``generated/self_instruct-round-<N>.jsonl`` under the raw
root with their lineage fields; ``raw_files_sensor`` then ingests that file
like any other, and a later round compares its instructions with it.
"""

import re
import time
from pathlib import Path

import dagster as dg
import polars as pl

from sft_assets.core.embed import embed_texts
from sft_assets.core.embedding_cache import embed_with_cache
from sft_assets.core.readers import read_file
from sft_assets.core.records import embedding_texts, empty_records
from sft_assets.core.self_instruct import (
    SIMILARITY_METHODS, Reference, RoundConfig, lineage_rows, round_seed, run_round, write_jsonl_atomic,
)
from sft_assets.defs.diversity import ALL_CORPORA
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel, LanguageModel
from sft_assets.defs.resources import RawRoot

round_partitions = dg.DynamicPartitionsDefinition(name="self_instruct_round")
ROUND_KEY = re.compile(r"[1-9][0-9]*")  # one key per number: "01" would write round 1's file again
GENERATED_FOLDER = "generated"
REFERENCE_COLUMNS = ["record_id", "kind", "instruction", "input", "origin"]


def generated_relpath(round_number: int) -> str:
    return f"{GENERATED_FOLDER}/self_instruct-round-{round_number}.jsonl"


class SelfInstructConfig(dg.Config):
    count: int = 32
    """Candidate instructions in the round (each from its own few-shot prompt)."""
    temperature: float = 0.7
    """0 means greedy decoding."""
    top_p: float = 0.9
    max_new_tokens: int = 256
    """Per generation step; a text that reaches it unfinished is dropped as too_long."""
    seed: int = 0
    """Base seed: a round's seed comes from it and the round number, so rounds differ and each repeats."""
    few_shot_tasks: int = 8
    """Seed instructions listed in each instruction prompt."""
    few_shot_examples: int = 3
    """Seed tasks with input and output shown in each input prompt."""
    similarity: str = "rouge"
    """`rouge` (ROUGE-L F1 on instructions, as Self-Instruct) or `embedding` (cosine of sentence vectors)."""
    similarity_threshold: float | None = None
    """At or above it an instruction is too similar; empty: 0.7 for rouge, 0.9 for embedding."""
    seed_folder: str = ""
    """A folder of seed task files under the raw root, read with the ingest readers; empty: the curated_root
    resource."""
    use_chat_template: bool = True
    """Answer under the model's chat template when it has one."""

    def round_config(self, round_number: int, batch_size: int) -> RoundConfig:
        if self.similarity not in SIMILARITY_METHODS:
            raise dg.Failure(f"similarity must be one of {SIMILARITY_METHODS}, not {self.similarity!r}")
        return RoundConfig(
            count=self.count, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
            seed=round_seed(self.seed, round_number), few_shot_tasks=self.few_shot_tasks,
            few_shot_examples=self.few_shot_examples, batch_size=batch_size, similarity=self.similarity,
            similarity_threshold=self.similarity_threshold, use_chat_template=self.use_chat_template,
        )


def _seed_root(seed_folder: str, raw_root: RawRoot, curated_root: RawRoot) -> RawRoot:
    """The configured seed folder, confined to the raw root as every path from run config is; else the curated
    root (a resource, set by the deployment, not by whoever launches a run)."""
    if not seed_folder:
        return curated_root
    try:
        folder, _ = raw_root.confine(seed_folder)
    except PermissionError as exc:
        raise dg.Failure(description=f"seed_folder: {exc}") from exc
    return RawRoot(root=str(folder), category_globs=[])


def seed_tasks(root: RawRoot) -> pl.DataFrame:
    """SFT records of every file under ``root``, one per instruction, with ``origin`` = file#row."""
    records, _ = root.read_all()
    tasks = records.filter(pl.col("kind") == "sft").unique("instruction", keep="first", maintain_order=True)
    return tasks.with_columns(origin=pl.format("seed:{}#{}", "source", "source_row"))


def pool_instructions(raw_records: pl.DataFrame, own_corpus: str) -> pl.DataFrame:
    """The pool's SFT rows, one per instruction, without the round's own earlier file
    (a re-run must not find its rows too similar to themselves)."""
    if "instruction" not in raw_records.columns:  # no corpus partition materialized yet
        return empty_records().with_columns(origin=pl.lit(None, pl.String))
    return raw_records.filter((pl.col("kind") == "sft") & (pl.col("corpus") != own_corpus)).unique(
        "instruction", keep="first", maintain_order=True).with_columns(
        origin=pl.format("{}#{}", "corpus", "source_row"))


def _reference(seeds: pl.DataFrame, pool: pl.DataFrame, config: RoundConfig,
               embedding_model: EmbeddingModel) -> Reference:
    """Seed and pool instructions; for cosine, their cached prompt vectors (instruction + input,
    what the embeddings asset stores), so the pool is not embedded again."""
    both = pl.concat([seeds.select(REFERENCE_COLUMNS), pool.select(REFERENCE_COLUMNS)])
    vectors = None
    if config.similarity == "embedding" and both.height:
        vectors, _ = embed_with_cache(both["record_id"].to_list(), embedding_texts(both), embedding_model.load(),
                                      embedding_model.model, embedding_model.cache())
    return Reference(both["instruction"].to_list(), both["origin"].to_list(), vectors)


def _with_file_rows(rows: pl.DataFrame, written: pl.DataFrame) -> pl.DataFrame:
    """Kept rows get the corpus, source_row and record_id the ingest reader gave them on reading the
    written file back: the keys that join a pool row to its generation."""
    position = pl.when(pl.col("kept")).then(pl.col("kept").cast(pl.Int64).cum_sum() - 1)
    return rows.with_columns(source_row=position).join(
        written.select("source_row", "record_id", "corpus"), on="source_row", how="left", maintain_order="left")


@dg.asset(
    partitions_def=round_partitions,
    group_name="self_instruct",
    kinds={"transformers", "parquet"},
    ins={"raw_records": ALL_CORPORA},
    description="One Self-Instruct round: new instructions, inputs and outputs from few-shot prompts of seed "
    "tasks, cleaned (length, blacklist, language, ROUGE-L against seeds, pool and round). Every candidate "
    "with its reason and prompts; the kept rows are also written to generated/self_instruct-round-<N>.jsonl "
    "under the raw root, where the sensor ingests them as a corpus.",
)
def generated_instructions(context: dg.AssetExecutionContext, config: SelfInstructConfig, raw_records: pl.DataFrame,
                           raw_root: RawRoot, curated_root: RawRoot, language_model: LanguageModel,
                           embedding_model: EmbeddingModel):
    key = context.partition_key
    if not ROUND_KEY.fullmatch(key):
        raise dg.Failure(f"round partitions are numbered 1, 2, ...; got {key!r}")
    round_number = int(key)
    relpath = generated_relpath(round_number)
    round_config = config.round_config(round_number, language_model.batch_size)
    seed_root = _seed_root(config.seed_folder, raw_root, curated_root)  # config checked before any model work
    run_id = context.run.run_id
    seeds = seed_tasks(seed_root)
    if seeds.is_empty():
        raise dg.Failure(f"no seed tasks under {seed_root.root}: set seed_folder or the curated root")
    pool = pool_instructions(raw_records, relpath)
    reference = _reference(seeds, pool, round_config, embedding_model)
    lm = language_model.load()
    embed = (lambda texts: embed_texts(embedding_model.load(), texts)) if config.similarity == "embedding" else None
    started = time.perf_counter()
    result = run_round(lm, seeds, reference, round_config, embed)
    context.log.info(f"round {round_number}: {result.kept.height}/{round_config.count} kept, "
                     f"{result.stats['tokens_per_s']} tokens/s, {time.perf_counter() - started:.1f} s")
    path = Path(raw_root.root) / relpath
    read_back = None
    try:
        if result.kept.height:
            write_jsonl_atomic(lineage_rows(result.kept, run_id=run_id, round=round_number), path)
            read_back = read_file(path, relpath, raw_root.reader_options())
        else:  # an empty file would be one quarantine row; a stale file from an earlier run must go
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise dg.Failure(f"cannot write {path} under the raw root {raw_root.root}: {exc}") from exc
    quarantined = read_back.quarantine.height if read_back else 0
    if quarantined:  # ingest will quarantine them too, with the reason; here they keep no record_id
        context.log.warning(f"{relpath}: the ingest reader quarantines {quarantined} kept rows: "
                            f"{read_back.quarantine['reason'].unique().to_list()}")
    rows = _with_file_rows(result.rows, read_back.records if read_back else empty_records()).with_columns(
        round=pl.lit(round_number), run_id=pl.lit(run_id))
    metadata = _metadata(rows, result.stats, relpath, lm.model_id, round_config, seeds.height, pool.height)
    return dg.Output(rows, metadata={**metadata, "quarantined_on_read_back": quarantined})


def _metadata(rows: pl.DataFrame, stats: dict, relpath: str, model_id: str, config: RoundConfig, seeds: int,
              pool: int) -> dict:
    outcome = pl.when(pl.col("kept")).then(pl.lit("kept")).otherwise("reason")
    reasons = rows.group_by(outcome.alias("outcome")).len("rows").sort(["rows", "outcome"], descending=[True, False])
    steps = pl.DataFrame([{"step": name, **values} for name, values in stats["steps"].items()])
    kept = rows.filter(pl.col("kept"))
    return {
        **table_metadata(rows, ["candidate", "kept", "reason", "instruction"]),
        "kept": kept.height,
        "dropped": rows.height - kept.height,
        "outcomes": dg.MetadataValue.md(markdown_table(reasons, rows=20)),
        "kept_examples": dg.MetadataValue.md(markdown_table(kept.select("instruction", "input", "output"))),
        "dropped_examples": dg.MetadataValue.md(markdown_table(
            rows.filter(~pl.col("kept")).unique("reason", keep="first", maintain_order=True)
            .select("reason", "instruction", "detail"), rows=20)),
        "tokens": stats["tokens"],
        "generation_seconds": stats["seconds"],
        "tokens_per_s": stats["tokens_per_s"],
        "steps": dg.MetadataValue.md(markdown_table(steps)),
        "raw_file": relpath if kept.height else "none (nothing kept)",
        "model": model_id,
        "round_seed": config.seed,
        "seed_tasks": seeds,
        "pool_instructions": pool,
    }


assets = [generated_instructions]
jobs = [dg.define_asset_job(
    "generate_instructions", selection=dg.AssetSelection.assets(generated_instructions),
    description="One Self-Instruct round (pick the round partition); the sensor then ingests its raw file.")]
