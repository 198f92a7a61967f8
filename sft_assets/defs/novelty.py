"""Novelty: what in the pool is unlike the already curated set (and, reversed, what is most like it)."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl

from sft_assets.core.embedding_cache import embed_with_cache, embeddings_frame, vectors_of
from sft_assets.core.novelty import (
    FALSE_NOVEL_RATE, GATE_SIGNIFICANCE, HOLDOUT_FRACTION, NoveltyResult, most_like_reference,
    novelty_scores as score_novelty,
)
from sft_assets.core.plots import histogram_png, png_markdown
from sft_assets.core.records import embedding_texts
from sft_assets.core.seqclass import fine_tuned_fit_predict
from sft_assets.core.vectors import EmbeddingVectors
from sft_assets.defs.diversity import ALL_CORPORA, pool_vectors
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.resources import RawRoot
from sft_assets.defs.versions import ids_version


@dg.asset(
    group_name="novelty",
    kinds={"sentence_transformers", "parquet"},
    description="The already curated set (default data/curated/, any folder by the curated_root resource), "
    "read with the ingest readers and embedded like the pool.",
)
def curated_reference(context: dg.AssetExecutionContext, curated_root: RawRoot, embedding_model: EmbeddingModel):
    records, files = curated_root.read_all()
    records = records.unique("record_id", keep="first", maintain_order=True)
    if records.height:
        vectors, _ = embed_with_cache(records["record_id"].to_list(), embedding_texts(records), embedding_model.load(),
                                      embedding_model.model, embedding_model.cache())
        records = records.join(embeddings_frame(records["record_id"].to_list(), vectors, embedding_model.model)
                               .select("record_id", "embedding"), on="record_id", maintain_order="left")
    else:
        context.log.warning(f"no curated records under {curated_root.root}: novelty filtering is off")
    # read from files outside Dagster: versioned by content (record ids are content hashes) and model
    return dg.Output(records, data_version=ids_version(records["record_id"], embedding_model.model),
                     metadata={**table_metadata(records, ["record_id", "kind", "instruction"]),
                               "folder": curated_root.root, "files": files})


class NoveltyConfig(dg.Config):
    k_folds: int = 5
    seed: int = 0
    false_novel_rate: float = FALSE_NOVEL_RATE
    """Novel = less like the reference than (1 - this) of the old rows in the view used (the combined view's
    are the held-out reference rows; a single view's also every reference row it compares with, scored
    against the others): about this share of rows like the reference is wrongly called novel. The diverse
    subset and the selection cut here."""
    keep: Literal["novel", "like_reference", "all"] = "novel"
    """Which side of the cut the datasets want: novel rows, rows like the reference ("find more like my
    seeds"), or all (novelty scored and shown, never filtering). K-Center draws only from the wanted side."""
    gate_significance: float = GATE_SIGNIFICANCE
    """Novelty filtering is on only when more candidates lie beyond the old rows than old rows would put
    there, at this significance."""
    holdout_fraction: float = HOLDOUT_FRACTION
    """Share of the reference held out and scored as candidates (at most 2,000 rows): the old rows of the
    combined view and the classifier views (the kNN views' also include the reference rows they compare with,
    each against the others, which makes their excess, tested by the gate, easier to prove)."""
    method: Literal["embedding_logistic", "fine_tuned_classifier"] = "embedding_logistic"
    """fine_tuned_classifier: the seed's transformer judge, fine-tuned per fold on the texts (a GPU's job at
    pool scale); the default reads the embeddings the pool already has."""
    backbone: str | None = None
    """Sequence-classifier backbone, a local model directory; None: the bundled MiniLM."""
    fine_tune_steps: int = 200
    fine_tune_max_length: int = 128


def classify_novelty(config: NoveltyConfig, candidate_pool: pl.DataFrame, embeddings: EmbeddingVectors,
                     curated_reference: pl.DataFrame) -> NoveltyResult:
    reference = vectors_of(curated_reference) if curated_reference.height else np.zeros((0, 1), np.float32)
    candidates = pool_vectors(candidate_pool, embeddings)
    reference_texts = embedding_texts(curated_reference)
    lengths = np.r_[[len(text) for text in reference_texts], candidate_pool["text"].str.len_chars().to_numpy()]
    fit_predict = None
    if config.method == "fine_tuned_classifier":
        texts = reference_texts + candidate_pool["text"].to_list()
        fit_predict = fine_tuned_fit_predict(texts, backbone=config.backbone, steps=config.fine_tune_steps,
                                             max_length=config.fine_tune_max_length, seed=config.seed)
    if not len(reference):
        reference = np.zeros((0, candidates.shape[1]), np.float32)
    keys = [f"reference:{k}" for k in curated_reference["record_id"]] if curated_reference.height else []
    return score_novelty(reference, candidates, k_folds=config.k_folds, seed=config.seed,
                         false_novel_rate=config.false_novel_rate, gate_significance=config.gate_significance,
                         holdout_fraction=config.holdout_fraction, fit_predict=fit_predict,
                         keys=keys + candidate_pool["record_id"].to_list(), lengths=lengths)


def novelty_frame(record_ids: pl.Series, result: NoveltyResult, keep: str = "novel") -> pl.DataFrame:
    """One row per candidate: ``novelty_prob`` (the p-value the selection cuts on) and ``novelty_score`` while
    the gate lets the signal through; otherwise both null and ``novelty_gate`` says why. ``novelty_cut`` (the
    false-novel rate) and ``novelty_keep`` carry the cut to the diverse subset and the selection."""
    usable, n = result.usable, len(record_ids)
    return pl.DataFrame({
        "record_id": record_ids,
        "novelty_prob": pl.Series(result.p_value if usable else [None] * n, dtype=pl.Float64),
        "novelty_score": pl.Series(result.score if usable else [None] * n, dtype=pl.Float64),
        "novelty_gate": pl.Series([None if usable else result.gate] * n, dtype=pl.String),
        "novelty_cut": pl.Series([result.false_novel_rate] * n, dtype=pl.Float64),
        "novelty_keep": pl.Series([keep] * n, dtype=pl.String),
    })


@dg.asset(
    group_name="novelty",
    kinds={"scikitlearn", "parquet"},
    ins={"embeddings": ALL_CORPORA},
    description="Which pool rows are unlike the curated set: an out-of-fold adversarial classifier (curated = 1, "
    "pool = 0; or a fine-tuned sequence classifier by config), the same trained on the rows least like the "
    "curated set, and the kNN similarity and neighbour share to the curated rows, each read against old rows: "
    "held-out curated rows scored as candidates, and for the kNN views every compared curated row scored against "
    "the others. A combined view adds up the last three views' evidence and a text length view's (how far a row's "
    "length lies from the curated rows' median) and ranks and cuts once the curated set "
    "holds enough held-out rows (about 1,000 curated rows); below that the view the gate tests does. "
    "novelty_prob = the share of old rows at most as like the reference (novel when <= false_novel_rate); null, "
    "with the reason in novelty_gate, when in no single view more candidates lie beyond the old rows than old "
    "rows would put there.",
)
def novelty_scores(config: NoveltyConfig, candidate_pool: pl.DataFrame, embeddings: EmbeddingVectors,
                   curated_reference: pl.DataFrame):
    started = time.perf_counter()
    result = classify_novelty(config, candidate_pool, embeddings, curated_reference)
    frame = novelty_frame(candidate_pool["record_id"], result, config.keep)
    texts = candidate_pool["text"]
    like = most_like_reference(result.score, 5)
    novel = np.argsort(result.score, kind="stable")[:5]
    preview = {
        "score_histogram": dg.MetadataValue.md(png_markdown(histogram_png(
            result.score, f"{result.view} score (higher = more like the reference)"), "novelty")),
        "most_like_reference": dg.MetadataValue.md(markdown_table(
            pl.DataFrame({"score": result.score[like], "text": texts.gather(like)}), rows=5)),
        "most_novel": dg.MetadataValue.md(markdown_table(
            pl.DataFrame({"score": result.score[novel], "text": texts.gather(novel)}), rows=5)),
    } if result.view else {}
    return dg.Output(frame, metadata={
        **table_metadata(frame),
        "novelty_filtering": (f"off: {result.gate}" if not result.usable else "off: keep is all"
                              if config.keep == "all" else f"on: keep {config.keep}"),
        "view": result.view or "",
        "gate_view": result.gate_view or "",
        "called_novel": round(result.novel_share, 4),
        "false_novel_rate": result.false_novel_rate,
        "gate_p": result.gate_p,
        "classifier_cv_auc": result.auc,
        "k_folds": result.k_folds,
        "method": config.method,
        "message": result.message or "",
        "seconds": round(time.perf_counter() - started, 2),
        **preview,
    })


assets = [curated_reference, novelty_scores]
