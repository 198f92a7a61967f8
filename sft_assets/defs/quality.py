"""Quality: the helpfulness judge (trained once, gated on held-out data) and per-corpus quality labels."""

import hashlib

import dagster as dg
import numpy as np
import polars as pl
from upath import UPath

from sft_assets.core.embedding_cache import embed_with_cache
from sft_assets.core.datasets import user_prompt
from sft_assets.core.plots import histogram_png, png_markdown
from sft_assets.core.quality import (
    DEFAULT_C, UntrustedModelFile, harmlessness_scores, load_model, quality_rules, quality_scores, save_model,
    self_supervised_pool, show_accuracy, train_harmlessness_model, train_quality_model,
)
from sft_assets.core.readers import UnreadableFile, read_file
from sft_assets.core.vectors import EmbeddingVectors
from sft_assets.defs.diversity import ALL_CORPORA, pool_vectors, survivors
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.partitions import per_file_tables, scored_per_file
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
    """More preference files to train on, relative to the raw root (e.g. alpaca_eval/alpaca-7b.json);
    a path that resolves outside the raw root is refused."""
    harmlessness_datasets: list[str] = ["hh_rlhf"]
    """Preference datasets (first folder under the raw root) that judge harmlessness, not helpfulness: left out
    of the helpfulness judge (on HH harmless-base the chosen answer is often the shorter, evasive one) and
    trained into the separate harmlessness score."""
    self_supervised_rows: int = 3000
    """SFT rows (passing the rules) sampled for self-supervised negatives: another question's answer, a
    topically close one, the answer cut, shuffled or duplicated."""
    C: float = DEFAULT_C
    test_fraction: float = 0.25
    seed: int = 0


class ModelStore(dg.ConfigurableResource):
    """Where trained model files go; only files written here, with their recorded hash, are loaded."""

    path: str

    def file(self, name: str) -> UPath:
        """Any fsspec URI: on Kubernetes the store must be shared by the pods (e.g. s3://)."""
        return UPath(self.path) / name


def held_out_table(report: dict) -> pl.DataFrame:
    """One row per held-out source: pairs, the judge's accuracy, the length baseline."""
    held = report.get("held_out", {})
    return pl.DataFrame({"source": list(held), "pairs": [v["n"] for v in held.values()],
                         "accuracy": [show_accuracy(v["accuracy"], v["n"]) for v in held.values()],
                         "length_baseline": [show_accuracy(v["length_baseline"], v["n"]) for v in held.values()]},
                        schema={"source": pl.String, "pairs": pl.Int64, "accuracy": pl.String,
                                "length_baseline": pl.String})


@dg.asset(
    group_name="quality",
    kinds={"scikitlearn", "skops"},
    ins={"raw_records": ALL_CORPORA},
    description="The helpfulness judge: calibrated P(an acceptable answer to this question) from (prompt, answer) "
    "embeddings and structure features, trained on helpfulness preference pairs (e.g. alpaca_eval) and "
    "self-supervised negatives from the pool, measured on held-out instructions against the length baseline. "
    "`gate` says why it is not used (null: used). Beside it, the separate harmlessness score, trained on the "
    "harmlessness datasets' pairs (HH) with its own gate (`harmlessness_gate`). Both saved with skops; their "
    "SHA-256 is recorded and checked on load.",
)
def quality_model(context: dg.AssetExecutionContext, config: QualityModelConfig, raw_records: pl.DataFrame,
                  embedding_model: EmbeddingModel, model_store: ModelStore, raw_root: RawRoot):
    extra = extra_preference_records(config.extra_preference_files, raw_root)
    pairs = pl.concat([raw_records, *extra], how="diagonal_relaxed").filter(pl.col("kind") == "preference")
    pairs = pairs.unique("record_id", keep="first", maintain_order=True)
    is_harmlessness = pl.col("dataset").is_in(config.harmlessness_datasets)
    helpful, harmful = pairs.filter(~is_harmlessness), pairs.filter(is_harmlessness)
    pool = self_supervised_pool(raw_records, config.self_supervised_rows, config.seed)
    embedders = (lambda texts: embed_strings(embedding_model, texts), lambda texts: embed_answers(embedding_model, texts))
    fit = dict(test_fraction=config.test_fraction, C=config.C, seed=config.seed)
    model, report = train_quality_model(helpful, pool, *embedders, **fit)
    harm_model, harm = train_harmlessness_model(harmful.select("prompt", "chosen", "rejected"), *embedders, **fit)
    path, sha = _saved(model, model_store, "quality_model.skops")
    harm_path, harm_sha = _saved(harm_model, model_store, "harmlessness_model.skops")
    held = report.get("held_out", {})
    metrics = {f"{source}_{what}": v[what] for source, v in held.items() for what in ("accuracy", "length_baseline")}
    metrics |= {f"harmlessness_{what}": harm[what] for what in ("accuracy", "length_baseline")}
    counts = {k: v for k, v in report.items() if isinstance(v, int)}
    frame = pl.DataFrame({"path": [path], "sha256": [sha], "embedding_model": [embedding_model.model],
                          "gate": [report["gate"]], **{k: [v] for k, v in counts.items()},
                          **{k: [v] for k, v in metrics.items()},
                          "harmlessness_path": [harm_path], "harmlessness_sha256": [harm_sha],
                          "harmlessness_gate": [harm["gate"]], "harmlessness_test_pairs": [harm["n_test_pairs"]]},
                         schema_overrides={"path": pl.String, "sha256": pl.String, "gate": pl.String,
                                           "harmlessness_path": pl.String, "harmlessness_sha256": pl.String,
                                           "harmlessness_gate": pl.String, **{k: pl.Float64 for k in metrics}})
    table = held_out_table(report)
    harm_line = (f"harmlessness score, {harm['n_test_pairs']} held-out pairs: "
                 f"{show_accuracy(harm['accuracy'], harm['n_test_pairs'])} "
                 f"(length {show_accuracy(harm['length_baseline'], harm['n_test_pairs'])})"
                 + (f"; not used: {harm['gate']}" if harm["gate"] else ""))
    context.log.info("quality judge, held out:\n" + markdown_table(table)
                     + (f"\nnot used: {report['gate']}" if report["gate"] else "") + "\n" + harm_line)
    # a retrain to the same weights changes nothing downstream
    judge_version = model_version(model).value if model is not None else f"refused:{report['gate']}"
    harm_version = model_version(harm_model).value if harm_model is not None else f"refused:{harm['gate']}"
    version = dg.DataVersion(f"{judge_version}/{harm_version}")
    return dg.Output(frame, data_version=version, metadata={
        **counts, "gate": report["gate"] or "passed: the judge is used",
        "held_out": dg.MetadataValue.md(markdown_table(table, rows=20)),
        "harmlessness_datasets_left_out": harmful.height,
        "harmlessness": harm_line,
        **({"model_file": dg.MetadataValue.path(path), "sha256": sha} if path is not None else {})})


def _saved(model, model_store: ModelStore, name: str) -> tuple[str | None, str | None]:
    """The model written to the store: its path and SHA-256 (None, None for no model)."""
    if model is None:
        return None, None
    path = model_store.file(name)
    return str(path), save_model(model, path)


@dg.asset_check(asset=quality_model, blocking=True,
                description="the judge beats the length baseline on held-out helpfulness pairs and ranks a question's "
                "own answer above another question's >= 0.9; else it is refused (WARN: quality falls back to the "
                "rules), and a used judge whose file does not load with its hash stops the scoring (ERROR)")
def judge_beats_baselines(quality_model: pl.DataFrame) -> dg.AssetCheckResult:
    """The gate as an asset check: WARN when the judge was refused (selection uses the rules alone),
    ERROR when a judge marked as used cannot be loaded with its recorded hash."""
    row = quality_model.row(0, named=True)
    if row["gate"] is not None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"refused": row["gate"]})
    try:
        load_model(row["path"], row["sha256"])
    except (UntrustedModelFile, OSError) as exc:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, metadata={"problem": str(exc)})
    return dg.AssetCheckResult(passed=True, metadata={"sha256": row["sha256"]})


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
    """Quality-model scores of each pair's chosen and rejected answers; null when the gate refused the judge."""
    model = _checked_model(quality_model, embedding_model)
    prompts = pairs["prompt"].fill_null("").to_list()
    prompt_emb = embed_strings(embedding_model, prompts) if model is not None else None
    scores = {side: quality_scores(model, prompt_emb, embed_answers(embedding_model, pairs[side].fill_null("").to_list()),
                                   prompts, pairs[side].fill_null("").to_list())
              if pairs.height and model is not None else [None] * pairs.height
              for side in ("chosen", "rejected")}
    return pairs.select("record_id").with_columns(
        chosen_score=pl.Series(scores["chosen"], dtype=pl.Float64),
        rejected_score=pl.Series(scores["rejected"], dtype=pl.Float64))


def _checked_model(quality_model: pl.DataFrame, embedding_model: EmbeddingModel, prefix: str = ""):
    """The judge (``prefix`` "harmlessness_": the harmlessness model), loaded only if its file still has the
    recorded hash and fits these embeddings; None when its gate refused it (or an older table has no such model)."""
    row = quality_model.row(0, named=True)
    if row.get(f"{prefix}gate") is not None or row.get(f"{prefix}path") is None:
        return None
    if row["embedding_model"] != embedding_model.model:
        raise dg.Failure(f"quality_model was trained on {row['embedding_model']!r} embeddings; "
                         f"rematerialize it for {embedding_model.model!r}")
    return load_model(row[f"{prefix}path"], row[f"{prefix}sha256"])


class QualityConfig(dg.Config):
    only_diverse_subset: bool = True
    """Score only rows K-Center picked: selection drops every other row as outside the subset whatever its
    score, and embedding every SFT answer for the model was the costliest step of a whole-corpora run. The
    cheap rules still judge every row. Off: every row that passed dedup."""


def quality_rows(records: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
                 only_diverse_subset: bool = True) -> pl.DataFrame:
    """The SFT rows the quality model scores."""
    sft = records.filter(pl.col("kind") == "sft")
    return survivors(sft, near_duplicates, diverse_subset if only_diverse_subset else None)


def label_rows(config: QualityConfig, raw_records: pl.DataFrame, embeddings: EmbeddingVectors,
               quality_model: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame,
               embedding_model: EmbeddingModel) -> tuple[pl.DataFrame, dict]:
    """``quality_labels`` for every SFT row of ``raw_records`` (any number of files; ``corpus`` says which),
    and the metadata of the step that labels them."""
    sft = raw_records.filter(pl.col("kind") == "sft")
    rows = quality_rows(raw_records, near_duplicates, diverse_subset, config.only_diverse_subset)
    model = _checked_model(quality_model, embedding_model)
    harm_model = _checked_model(quality_model, embedding_model, "harmlessness_")
    gate, sha = quality_model["gate"][0], quality_model["sha256"][0]
    scores = harm = np.zeros(0)
    if rows.height and (model is not None or harm_model is not None):
        prompts = rows.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list()
        answers = rows["output"].fill_null("").to_list()
        # An SFT record's embedding is of its user prompt (records.embedding_text): reused, not embedded again.
        inputs = (pool_vectors(rows, embeddings), embed_answers(embedding_model, answers), prompts, answers)
        nulls = np.full(rows.height, np.nan)
        scores = nulls if model is None else quality_scores(model, *inputs)
        harm = nulls if harm_model is None else harmlessness_scores(harm_model, *inputs)
    scored = rows.select("record_id").head(len(scores)).with_columns(
        quality_score=pl.Series(scores, dtype=pl.Float64, nan_to_null=True),
        quality_model_sha=pl.lit(sha, dtype=pl.String),
        harmlessness_score=pl.Series(harm, dtype=pl.Float64, nan_to_null=True),
    ).unique("record_id", keep="first")
    frame = sft.select("record_id", "corpus").join(scored, on="record_id", how="left", maintain_order="left"
                                                   ).with_columns(
        quality_reasons=quality_rules(sft),
        quality_gate=pl.lit(None if gate is None else f"gate={gate}", dtype=pl.String),
    )
    return frame, {
        "quality_gate": gate or "passed: the judge is used",
        "harmlessness_gate": (quality_model["harmlessness_gate"][0] or "passed: the score is given")
        if "harmlessness_gate" in quality_model.columns else "no harmlessness model in this quality_model table",
        "score_histogram": dg.MetadataValue.md(png_markdown(
            histogram_png(scores[np.isfinite(scores)], "P(acceptable answer)"), "quality in this step")),
    }


def file_label_metadata(table: pl.DataFrame, texts: pl.DataFrame) -> dict:
    """One file's ``quality_labels`` metadata: counts, rule reasons, its lowest and highest scores
    (``texts``: instruction and output by record id)."""
    reasons = table.select(pl.col("quality_reasons").explode()).drop_nulls().group_by("quality_reasons").len()
    shown = table.join(texts, on="record_id")
    ranked = shown.drop_nulls("quality_score").sort("quality_score")
    scored_rows = int(table["quality_score"].is_not_null().sum())
    return {
        **table_metadata(table),
        "scored_rows": scored_rows,
        "not_scored_rows": table.height - scored_rows,
        "harmlessness_scored_rows": int(table["harmlessness_score"].is_not_null().sum()),
        "least_harmless": dg.MetadataValue.md(markdown_table(
            shown.drop_nulls("harmlessness_score").sort("harmlessness_score").select(
                "harmlessness_score", "instruction", "output"))),
        "rule_reasons": dg.MetadataValue.md(markdown_table(reasons.sort("len", descending=True), rows=20)),
        "lowest_scores": dg.MetadataValue.md(markdown_table(ranked.select("quality_score", "instruction", "output"))),
        "highest_scores": dg.MetadataValue.md(markdown_table(
            ranked.reverse().select("quality_score", "instruction", "output"))),
    }


@scored_per_file(
    group_name="quality",
    kinds={"scikitlearn", "parquet"},
    description="For every SFT row of the corpus: cheap rule reasons (empty, one-word, cut-off or repeated answer, "
    "unbalanced fences, copies the question, refusal, wrong language, broken encoding); for rows that survived "
    "dedup and (by default) are in the diverse subset, the judge's calibrated P(acceptable answer) and the "
    "model's SHA-256. When the gate refused the judge, scores are null and `quality_gate` says why; selection "
    "then judges by the rules alone. Pass or fail is decided by the selection policy, not here.",
)
def quality_labels(context: dg.AssetExecutionContext, config: QualityConfig, raw_records: pl.DataFrame,
                   embeddings: EmbeddingVectors, quality_model: pl.DataFrame, near_duplicates: pl.DataFrame,
                   diverse_subset: pl.DataFrame, embedding_model: EmbeddingModel):
    frame, metadata = label_rows(config, raw_records, embeddings, quality_model, near_duplicates, diverse_subset,
                                 embedding_model)
    context.add_asset_metadata({"files_in_step": len(context.partition_keys), **metadata})  # on every file
    texts = raw_records.select("record_id", "instruction", "output").unique("record_id", keep="first")
    return per_file_tables(context, frame, lambda key, table: (table, file_label_metadata(table, texts)))


assets = [quality_model, quality_labels]
checks = [judge_beats_baselines]
