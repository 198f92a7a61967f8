"""Quality: a reward-style classifier trained on preference pairs, and per-corpus quality labels."""

import hashlib

import dagster as dg
import numpy as np
import polars as pl
from upath import UPath

from sft_assets.core.embedding_cache import embed_with_cache
from sft_assets.core.datasets import user_prompt
from sft_assets.core.plots import histogram_png, png_markdown
from sft_assets.core.quality import (
    hard_rule_failures, load_model, quality_rules, quality_scores, save_model, train_quality_model,
)
from sft_assets.core.readers import UnreadableFile, read_file
from sft_assets.core.vectors import EmbeddingVectors
from sft_assets.defs.diversity import ALL_CORPORA, pool_vectors, survivors
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.resources import RawRoot
from sft_assets.defs.versions import model_version


def _text_key(text: str) -> str:
    return "t:" + hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()


def embed_strings(embedding_model: EmbeddingModel, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
    """Vectors for free texts, cached by a hash of the text (per token limit: a cut text is another vector)."""
    purpose = "text" if max_tokens is None else f"text-{max_tokens}tok"
    vectors, _ = embed_with_cache([_text_key(t) for t in texts], texts, embedding_model.load(), embedding_model.model,
                                  embedding_model.cache(purpose), batch_size=embedding_model.batch_size,
                                  max_tokens=max_tokens)
    return vectors


def embed_answers(embedding_model: EmbeddingModel, texts: list[str]) -> np.ndarray:
    """Vectors of answers' first ``answer_max_tokens`` tokens: what the quality model reads of an answer."""
    return embed_strings(embedding_model, texts, embedding_model.answer_max_tokens)


class QualityModelConfig(dg.Config):
    extra_preference_files: list[str] = []
    """More preference files to train on, relative to the raw root (e.g. hh_rlhf/harmless_base_test.jsonl.gz);
    a path that resolves outside the raw root is refused."""
    C: float = 0.3
    test_fraction: float = 0.25
    seed: int = 0


class ModelStore(dg.ConfigurableResource):
    """Where trained model files go; only files written here, with their recorded hash, are loaded."""

    path: str

    def file(self, name: str) -> UPath:
        """Any fsspec URI: on Kubernetes the store must be shared by the pods (e.g. s3://)."""
        return UPath(self.path) / name


@dg.asset(
    group_name="quality",
    kinds={"scikitlearn", "skops"},
    ins={"raw_records": ALL_CORPORA},
    description="A chosen-vs-rejected classifier on (prompt, response) features, trained on the preference "
    "partitions (and any extra preference files). Saved with skops; its SHA-256 is recorded and checked on load, "
    "so a pool rebuild reuses it instead of retraining.",
)
def quality_model(context: dg.AssetExecutionContext, config: QualityModelConfig, raw_records: pl.DataFrame,
                  embedding_model: EmbeddingModel, model_store: ModelStore, raw_root: RawRoot):
    extra = extra_preference_records(config.extra_preference_files, raw_root)
    pairs = raw_records.filter(pl.col("kind") == "preference")
    pairs = pl.concat([pairs, *extra], how="vertical_relaxed").filter(pl.col("kind") == "preference")
    pairs = pairs.unique("record_id", keep="first", maintain_order=True)
    prompts = pairs["prompt"].to_list()
    model, report = train_quality_model(
        embed_strings(embedding_model, prompts), embed_answers(embedding_model, pairs["chosen"].to_list()),
        embed_answers(embedding_model, pairs["rejected"].to_list()), pairs,
        test_fraction=config.test_fraction, C=config.C, seed=config.seed)
    path = model_store.file("quality_model.skops")
    sha = save_model(model, path)
    frame = pl.DataFrame({"path": [str(path)], "sha256": [sha], "embedding_model": [embedding_model.model],
                          **{k: [float(v)] for k, v in report.items() if isinstance(v, (int, float))}})
    context.log.info(f"quality model: held-out pairwise accuracy {report['pairwise_accuracy']:.3f}, "
                     f"AUC {report['roc_auc']:.3f} on {report['n_test_pairs']} pairs")
    return dg.Output(frame, data_version=model_version(model),  # a retrain to the same weights changes nothing
                     metadata={**{k: v for k, v in report.items() if isinstance(v, (int, float))},
                               "model_file": dg.MetadataValue.path(str(path)), "sha256": sha})


def extra_preference_records(paths: list[str], raw_root: RawRoot) -> list[pl.DataFrame]:
    """Records of the configured extra files; run config must not read files outside the raw root."""
    frames = []
    for given in paths:
        try:
            path, relpath = raw_root.confine(given)
            frames.append(read_file(path, relpath, raw_root.reader_options()).records)
        except (PermissionError, UnreadableFile) as exc:
            raise dg.Failure(description=f"extra_preference_files: {exc}") from exc
    return frames


def reward_margins(pairs: pl.DataFrame, quality_model: pl.DataFrame, embedding_model: EmbeddingModel) -> pl.DataFrame:
    """Quality-model scores of each pair's chosen and rejected answers (texts cached from training)."""
    model = _checked_model(quality_model, embedding_model)
    prompts = pairs["prompt"].fill_null("").to_list()
    prompt_emb = embed_strings(embedding_model, prompts)
    scores = {side: quality_scores(model, prompt_emb, embed_answers(embedding_model, pairs[side].fill_null("").to_list()),
                                   prompts, pairs[side].fill_null("").to_list()) if pairs.height else []
              for side in ("chosen", "rejected")}
    return pairs.select("record_id").with_columns(
        chosen_score=pl.Series(scores["chosen"], dtype=pl.Float64),
        rejected_score=pl.Series(scores["rejected"], dtype=pl.Float64))


def _checked_model(quality_model: pl.DataFrame, embedding_model: EmbeddingModel):
    """The quality model, loaded only if its file still has the recorded hash and fits these embeddings."""
    row = quality_model.row(0, named=True)
    if row["embedding_model"] != embedding_model.model:
        raise dg.Failure(f"quality_model was trained on {row['embedding_model']!r} embeddings; "
                         f"rematerialize it for {embedding_model.model!r}")
    return load_model(row["path"], row["sha256"])


class QualityConfig(dg.Config):
    threshold: float = 0.5
    """Rows whose score is below this fail quality (the score is P(good answer))."""
    only_diverse_subset: bool = True
    """Score only rows K-Center picked: selection drops every other row as outside the subset whatever its
    score, and embedding every SFT answer for the model was the costliest step of a whole-corpora run. The
    cheap rules still judge every row. Off: every row that passed dedup."""


def quality_rows(records: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
                 only_diverse_subset: bool = True) -> pl.DataFrame:
    """The SFT rows the quality model scores."""
    sft = records.filter(pl.col("kind") == "sft")
    return survivors(sft, near_duplicates, diverse_subset if only_diverse_subset else None)


@dg.asset(
    partitions_def=corpus_partitions,
    group_name="quality",
    kinds={"scikitlearn", "parquet"},
    description="For every SFT row of the corpus: cheap rule reasons (empty or one-word answer, copies the "
    "question, refusal, wrong language, broken encoding); for rows that survived dedup and (by default) are in "
    "the diverse subset, the quality model's score and pass/fail.",
)
def quality_labels(config: QualityConfig, raw_records: pl.DataFrame, embeddings: EmbeddingVectors,
                   quality_model: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
                   embedding_model: EmbeddingModel):
    sft = raw_records.filter(pl.col("kind") == "sft")
    rows = quality_rows(raw_records, near_duplicates, diverse_subset, config.only_diverse_subset)
    model = _checked_model(quality_model, embedding_model)
    scores = np.zeros(0)
    if rows.height:
        prompts = rows.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list()
        answers = rows["output"].fill_null("").to_list()
        # An SFT record's embedding is of its user prompt (records.embedding_text): reused, not embedded again.
        scores = quality_scores(model, pool_vectors(rows, embeddings), embed_answers(embedding_model, answers),
                                prompts, answers)
    scored = rows.select("record_id").with_columns(quality_score=pl.Series(scores, dtype=pl.Float64)).unique(
        "record_id", keep="first")
    frame = sft.select("record_id").join(scored, on="record_id", how="left", maintain_order="left").with_columns(
        quality_reasons=quality_rules(sft),
    ).with_columns(
        quality_pass=(pl.col("quality_score") >= config.threshold)
        & hard_rule_failures(pl.col("quality_reasons")).list.len().eq(0),
    )
    reasons = frame.select(pl.col("quality_reasons").explode()).drop_nulls().group_by("quality_reasons").len()
    ranked = frame.drop_nulls("quality_score").join(sft.select("record_id", "instruction", "output"), on="record_id"
                                                     ).sort("quality_score")
    return dg.Output(frame, metadata={
        **table_metadata(frame),
        "scored_rows": rows.height,
        "not_scored_rows": sft.height - rows.height,
        "passed": int(frame["quality_pass"].sum()),
        "rule_reasons": dg.MetadataValue.md(markdown_table(reasons.sort("len", descending=True), rows=20)),
        "score_histogram": dg.MetadataValue.md(png_markdown(histogram_png(scores, "quality score"), "quality")),
        "lowest_scores": dg.MetadataValue.md(markdown_table(ranked.select("quality_score", "instruction", "output"))),
        "highest_scores": dg.MetadataValue.md(markdown_table(
            ranked.reverse().select("quality_score", "instruction", "output"))),
    })


assets = [quality_model, quality_labels]
