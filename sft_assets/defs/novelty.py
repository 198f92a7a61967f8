"""Novelty: what in the pool is unlike the already curated set (and, reversed, what is most like it)."""

import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl

from sft_assets.core.embedding_cache import embed_with_cache, embeddings_frame, vectors_of
from sft_assets.core.novelty import (
    NoveltyResult, most_like_reference, novelty_scores as score_novelty, out_of_fold_novelty,
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
    min_auc: float = 0.6
    """Below this cross-validated AUC the pool and the reference are indistinguishable: no novelty filtering."""
    method: Literal["embedding_logistic", "fine_tuned_classifier"] = "embedding_logistic"
    """fine_tuned_classifier: the seed's transformer judge, fine-tuned per fold on the texts (a GPU's job at
    pool scale); the default reads the embeddings the pool already has."""
    backbone: str | None = None
    """Sequence-classifier backbone, a local model directory; None: the bundled MiniLM."""
    fine_tune_steps: int = 200
    fine_tune_max_length: int = 128


def classify_novelty(config: NoveltyConfig, candidate_pool: pl.DataFrame, embeddings: EmbeddingVectors,
              curated_reference: pl.DataFrame) -> NoveltyResult:
    if config.method == "fine_tuned_classifier":
        texts = embedding_texts(curated_reference) + candidate_pool["text"].to_list()
        fit_predict = fine_tuned_fit_predict(texts, backbone=config.backbone, steps=config.fine_tune_steps,
                                             max_length=config.fine_tune_max_length, seed=config.seed)
        return out_of_fold_novelty(curated_reference.height, candidate_pool.height, fit_predict,
                                   k_folds=config.k_folds, seed=config.seed, min_auc=config.min_auc)
    reference = vectors_of(curated_reference) if curated_reference.height else np.zeros((0, 1), np.float32)
    return score_novelty(reference, pool_vectors(candidate_pool, embeddings), k_folds=config.k_folds,
                         seed=config.seed, min_auc=config.min_auc)


@dg.asset(
    group_name="novelty",
    kinds={"scikitlearn", "parquet"},
    ins={"embeddings": ALL_CORPORA},
    description="K-fold adversarial classifier (curated = 1, pool = 0; logistic regression on embeddings, or a "
    "fine-tuned sequence classifier by config): each pool row's out-of-fold "
    "probability of looking curated. Near 0 = novel; near 1 = like the seeds (the reverse search). Null for "
    "every row when the classifier cannot tell the sets apart.",
)
def novelty_scores(config: NoveltyConfig, candidate_pool: pl.DataFrame, embeddings: EmbeddingVectors,
                   curated_reference: pl.DataFrame):
    started = time.perf_counter()
    result = classify_novelty(config, candidate_pool, embeddings, curated_reference)
    usable = result.separable
    frame = candidate_pool.select("record_id").with_columns(
        novelty_prob=pl.Series(result.probability if usable else [None] * candidate_pool.height, dtype=pl.Float64),
        novelty_gate=pl.lit(None if usable else f"gate={result.message or 'not separable'}", dtype=pl.String))
    texts = candidate_pool["text"]
    like = most_like_reference(result.probability, 5) if usable else []
    novel = np.argsort(result.probability, kind="stable")[:5] if usable else []
    return dg.Output(frame, metadata={
        **table_metadata(frame),
        "cross_validated_auc": result.auc,
        "k_folds": result.k_folds,
        "method": config.method,
        "novelty_filtering": "on" if usable else "off",
        "message": result.message or "",
        "seconds": round(time.perf_counter() - started, 2),
        "score_histogram": dg.MetadataValue.md(png_markdown(
            histogram_png(result.probability, "P(looks curated), out of fold"), "novelty")) if usable else "",
        "most_like_reference": dg.MetadataValue.md(markdown_table(
            pl.DataFrame({"p": result.probability[like], "text": texts.gather(like)}), rows=5)) if usable else "",
        "most_novel": dg.MetadataValue.md(markdown_table(
            pl.DataFrame({"p": result.probability[novel], "text": texts.gather(novel)}), rows=5)) if usable else "",
    })


assets = [curated_reference, novelty_scores]
