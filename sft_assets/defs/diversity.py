"""Diversity: embeddings per corpus, then exact and near dedup, topics and K-Center over the pool."""

import time

import dagster as dg
import numpy as np
import polars as pl

from sft_assets.core.embed import count_truncated
from sft_assets.core.dedup import (
    TEXT_ONLY_METHODS, clustering_key, exact_duplicate_of, near_duplicate_clusters, previous_clusters,
)
from sft_assets.core.embedding_cache import embed_with_cache, embeddings_frame
from sft_assets.core.kcenter import (
    balanced_caps, covering_radius, extend_k_center, k_center_greedy, random_radius,
)
from sft_assets.core.plots import histogram_png, png_markdown
from sft_assets.core.quality import hard_rule_failures, quality_rules
from sft_assets.core.records import embedding_texts
from sft_assets.core.selection import SelectionPolicy, not_wanted_by_novelty, novelty_cut
from sft_assets.core.topics import centroids_of, topic_clusters as cluster_topics
from sft_assets.core.vectors import EmbeddingVectors, MissingVectors
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.resources import WarehouseResource
from sft_assets.defs.versions import CODE_VERSIONS, ids_version

ALL_CORPORA = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())
SELECTABLE = ("sft", "multiple_choice")


def pool_vectors(pool: pl.DataFrame, embeddings: EmbeddingVectors) -> np.ndarray:
    """The pool's vectors in pool order (the same record in two files has one vector): only these rows
    are read, from memory-mapped matrices on a local warehouse."""
    try:
        return embeddings.gather(pool["record_id"])
    except MissingVectors as exc:
        raise dg.Failure(f"{exc.count} pool rows have no embedding: materialize embeddings for every "
                         "corpus first") from exc


def survivors(records: pl.DataFrame, near_duplicates: pl.DataFrame, diverse_subset: pl.DataFrame | None = None
              ) -> pl.DataFrame:
    """This corpus's rows that passed exact and near dedup (the cascade: cheap filters first), and, when a
    diverse subset is given, that K-Center picked."""
    leaders = near_duplicates.filter(pl.col("near_duplicate_of").is_null()).select("record_id", "corpus")
    kept = records.join(leaders, on=["record_id", "corpus"], how="semi", maintain_order="left")
    if diverse_subset is not None:
        kept = kept.join(diverse_subset.select("record_id"), on="record_id", how="semi", maintain_order="left")
    return kept


@dg.asset(
    partitions_def=corpus_partitions,
    group_name="diversity",
    kinds={"sentence_transformers", "parquet", "numpy"},
    io_manager_key="embeddings_io_manager",
    description="L2-normalized float32 sentence embeddings of what each record asks (SFT: instruction "
    "+ input; preference: prompt; multiple choice: question + options), cached by (model, record_id). "
    "Stored as parquet and as a float32 .npy beside it, which pool-wide steps memory-map.",
)
def embeddings(context: dg.AssetExecutionContext, raw_records: pl.DataFrame,
               embedding_model: EmbeddingModel):
    texts = embedding_texts(raw_records)
    started = time.perf_counter()

    def progress(done: int, total: int, rate: float) -> None:
        context.log.info(f"embedded {done}/{total} new rows, {rate:.0f} rows/s, ETA {(total - done) / rate:.0f} s")

    vectors, computed = embed_with_cache(
        raw_records["record_id"].to_list(), texts, embedding_model.load(), embedding_model.model,
        embedding_model.cache(), batch_size=embedding_model.batch_size, progress=progress,
    )
    seconds = time.perf_counter() - started
    frame = embeddings_frame(raw_records["record_id"].to_list(), vectors, embedding_model.model)
    model = embedding_model.load()
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": frame.height,
            "model": embedding_model.model,
            "precision": embedding_model.precision_in_use(),
            "dimension": int(vectors.shape[1]),
            "computed_rows": computed,
            "truncated_rows": dg.MetadataValue.int(count_truncated(model, texts)),
            "max_tokens": model.max_seq_length,
            "cache_hits": frame.height - computed,
            "seconds": round(seconds, 2),
            "rows_per_s": round(computed / seconds, 1) if computed and seconds else 0.0,
        },
    )


@dg.asset(
    group_name="diversity",
    kinds={"polars", "parquet"},
    ins={"raw_records": ALL_CORPORA},
    description="Every SFT and multiple-choice record of every corpus once, with exact duplicates "
    "(same text after case, punctuation and white space are folded) pointing at the row they copy. "
    "Records of the curated reference set are not candidates (they are what novelty compares against), "
    "even when the curated folder lies inside the raw root.",
)
def candidate_pool(raw_records: pl.DataFrame, curated_reference: pl.DataFrame):
    rows = raw_records.filter(pl.col("kind").is_in(SELECTABLE)).sort(["corpus", "source_row"])
    curated = pl.col("record_id").is_in(curated_reference["record_id"].implode())
    in_reference, rows = rows.filter(curated), rows.filter(~curated)
    occurrences = rows.group_by("record_id", maintain_order=True).agg(
        also_in=pl.struct("corpus", "source_row").slice(1)
    )
    pool = rows.unique("record_id", keep="first", maintain_order=True).join(
        occurrences, on="record_id", maintain_order="left")
    full_text = [t + "\n" + (o or "") for t, o in zip(embedding_texts(pool), _answers(pool))]
    pool = pool.with_columns(
        text=pl.Series(embedding_texts(pool)),
        exact_duplicate_of=pl.Series(exact_duplicate_of(pool["record_id"].to_list(), full_text), dtype=pl.String),
    )
    per_corpus = pool.group_by("dataset").agg(
        rows=pl.len(), exact_duplicates=pl.col("exact_duplicate_of").is_not_null().sum()
    ).join(in_reference.group_by("dataset").agg(in_curated_reference=pl.len()), on="dataset", how="full",
           coalesce=True).with_columns(pl.col("rows", "exact_duplicates", "in_curated_reference").fill_null(0)
                                       ).sort("dataset")
    return dg.Output(pool, metadata={
        **table_metadata(pool, ["record_id", "corpus", "kind", "category", "text", "exact_duplicate_of"]),
        "in_curated_reference": dg.MetadataValue.int(in_reference.height),
        "exact_duplicates": int(pool["exact_duplicate_of"].is_not_null().sum()),
        "same_record_in_several_files": int(pool["also_in"].list.len().gt(0).sum()),
        "per_dataset": dg.MetadataValue.md(markdown_table(per_corpus, rows=100)),
    })


def _answers(pool: pl.DataFrame) -> list[str | None]:
    return pool.select(pl.coalesce("output", pl.col("answer"))).to_series().to_list()


class NearDedupConfig(dg.Config):
    threshold: float = 0.9
    """Cosine similarity at or above which a row joins an earlier leader."""
    method: str = "auto"
    """`embedding` (sentence vectors), `tfidf` (character n-gram TF-IDF, the seed's bag-of-words option), or
    `auto`: tfidf for Chinese rows, embeddings for the rest. The default MiniLM does not read Chinese: on
    alpaca_zh it puts unrelated instructions at cosine 0.93-0.98 and would drop a third of them."""

    def methods(self, lang: pl.Series) -> dict[str, np.ndarray]:
        """Rows (indices, pool order) that each method clusters; languages never mix in a cluster under auto."""
        if self.method != "auto":
            return {self.method: np.arange(lang.len())}
        zh = (lang == "zh").to_numpy()
        return {"tfidf": np.flatnonzero(zh), "embedding": np.flatnonzero(~zh)}


@dg.asset(
    group_name="diversity",
    kinds={"numpy", "parquet"},
    ins={"embeddings": ALL_CORPORA},
    description="One-pass (leader) clustering of the exact-deduplicated pool: every row gets its leader "
    "and its similarity to it; leaders are kept. Exact for the threshold (blocked matrix products). "
    "Chinese rows by character TF-IDF, the rest by sentence embeddings (config `method`).",
)
def near_duplicates(config: NearDedupConfig, candidate_pool: pl.DataFrame,
                    embeddings: EmbeddingVectors, warehouse: WarehouseResource):
    pool = candidate_pool.filter(pl.col("exact_duplicate_of").is_null())
    started = time.perf_counter()
    leader = np.arange(pool.height)
    similarity = np.ones(pool.height, dtype=np.float32)
    clustered_by = np.empty(pool.height, dtype=object)
    store = warehouse.warehouse()
    previous = store.read("near_duplicates") if store.exists("near_duplicates") else None
    reused = []
    for method, rows in config.methods(pool["lang"]).items():
        if rows.size == 0:
            continue
        part = pool[rows]
        texts = part["text"].to_list()
        clustered_by[rows] = key = clustering_key(method, config.threshold, CODE_VERSIONS["near_duplicates"], texts)
        same = previous_clusters(previous, key, part["record_id"]) if method in TEXT_ONLY_METHODS else None
        if same is not None:
            found, sims = same
            reused.append(method)
        else:
            found, sims = near_duplicate_clusters(
                method, threshold=config.threshold, texts=texts,
                embeddings=pool_vectors(part, embeddings) if method == "embedding" else None)
        leader[rows], similarity[rows] = rows[found], sims
    ids = pool["record_id"]
    frame = pool.select("record_id", "corpus", "dataset", "text").with_columns(
        leader_id=ids.gather(leader),
        similarity=pl.Series(similarity, dtype=pl.Float32),
        clustered_by=pl.Series(clustered_by.tolist(), dtype=pl.String),
    ).with_columns(
        near_duplicate_of=pl.when(pl.col("leader_id") != pl.col("record_id")).then("leader_id"),
    )
    dups = frame.filter(pl.col("near_duplicate_of").is_not_null())
    pairs = dups.join(frame.select(pl.col("record_id").alias("near_duplicate_of"), pl.col("text").alias("leader_text")),
                      on="near_duplicate_of").sort("similarity").select("similarity", "text", "leader_text")
    rate = frame.group_by("dataset").agg(near_duplicate_rate=pl.col("near_duplicate_of").is_not_null().mean()).sort("dataset")
    return dg.Output(frame.drop("text"), metadata={
        **table_metadata(frame.drop("text"), ["record_id", "leader_id", "similarity"]),
        "threshold": config.threshold,
        "method": config.method,
        "near_duplicates": dups.height,
        "seconds": round(time.perf_counter() - started, 2),
        "reused": ", ".join(reused) or "nothing: every part clustered anew",
        "rate_per_dataset": dg.MetadataValue.md(markdown_table(rate, rows=100)),
        "example_pairs_at_the_threshold": dg.MetadataValue.md(markdown_table(pairs, rows=8)),
    })


class TopicConfig(dg.Config):
    k: int | None = None
    """Clusters for rows without a known category; None: the rule in topics.py."""
    seed: int = 0
    keep_previous_topics: bool = True
    """New rows join the nearest of the previous run's topics (no refit, the same k) while the rows without a
    known category have grown by at most `refit_growth` since the topics were fitted and `k` is not set to
    another value: old rows keep their topic, so the diverse subset's per-category floors do not reshuffle its
    picks when one file is added."""
    refit_growth: float = 0.2
    fresh: bool = False
    """A reproducible release build: fit the topics anew, ignoring the previous run's."""


def previous_topics(store, config: TopicConfig, pool: pl.DataFrame, vectors: np.ndarray
                    ) -> tuple[np.ndarray | None, int | None]:
    """Centroids, in this pool's vectors, of the topics the previous run used, and how many rows they were
    fitted on; (None, None) when they are missing, off, or the pool has grown too much since."""
    if config.fresh or not (config.keep_previous_topics and store.exists("topic_clusters")):
        return None, None
    previous = store.read("topic_clusters")
    if "fitted_on_rows" not in previous.columns or previous.height == 0:  # written before topics were kept
        return None, None
    fitted_on = int(previous["fitted_on_rows"][0])
    if _uncategorized(pool) > fitted_on * (1 + config.refit_growth):
        return None, None
    rows = pool.select("record_id").with_row_index("row").join(previous.filter(pl.col("cluster_id") >= 0),
                                                               on="record_id")
    if rows.height == 0:
        return None, None
    return centroids_of(vectors[rows["row"].to_numpy()], rows["cluster_id"].to_numpy()), fitted_on


def _uncategorized(pool: pl.DataFrame) -> int:
    return int(pool.select((pl.col("category").fill_null("") == "").sum()).item())


@dg.asset(
    group_name="diversity",
    kinds={"scikitlearn", "parquet"},
    ins={"embeddings": ALL_CORPORA},
    description="A category for every pool row, for balancing: the known one (file or subject) where the "
    "data has it, otherwise a k-means cluster of the embeddings labelled by its top TF-IDF terms.",
)
def topic_clusters(config: TopicConfig, candidate_pool: pl.DataFrame, embeddings: EmbeddingVectors,
                   warehouse: WarehouseResource):
    vectors = pool_vectors(candidate_pool, embeddings)
    centroids, fitted_on = previous_topics(warehouse.warehouse(), config, candidate_pool, vectors)
    # the previous k stays with its topics (the default k grows with the pool) unless k is set to another
    reused = centroids is not None and config.k in (None, centroids.shape[0])
    category, cluster_id, label = cluster_topics(
        vectors, candidate_pool["category"].to_list(), candidate_pool["text"].to_list(),
        k=centroids.shape[0] if reused else config.k, seed=config.seed, centroids=centroids if reused else None)
    frame = candidate_pool.select("record_id").with_columns(
        topic=pl.Series(category, dtype=pl.String),
        cluster_id=pl.Series(cluster_id, dtype=pl.Int64),
        topic_label=pl.Series(label, dtype=pl.String),
        fitted_on_rows=pl.lit(fitted_on if reused else _uncategorized(candidate_pool), dtype=pl.Int64),
    )
    kept_topic = 0
    if reused:
        frame, kept_topic = _keep_previous_topics(frame, warehouse.warehouse().read("topic_clusters"))
    sizes = frame.group_by("topic", "topic_label").len().sort(["len", "topic"], descending=[True, False])
    png = histogram_png(np.log10(sizes["len"].to_numpy()), "cluster size (log10 rows)")
    return dg.Output(frame, metadata={
        **table_metadata(frame),
        "topics": sizes.height,
        "clusters": "the previous topics, new rows joined the nearest" if reused else "fitted anew (k-means)",
        "why": ("fresh: true" if config.fresh else "previous topics kept" if reused
                else "no previous topics, keep_previous_topics off, k changed, or the pool grew past refit_growth"),
        "rows_kept_previous_topic": kept_topic,
        "rows_joined_nearest_topic": int((frame["cluster_id"] >= 0).sum()) - kept_topic if reused else 0,
        "largest_topics": dg.MetadataValue.md(markdown_table(sizes, rows=15)),
        "size_distribution": dg.MetadataValue.md(png_markdown(png, "topic sizes")),
    })


def _keep_previous_topics(frame: pl.DataFrame, previous: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Old rows keep their previous cluster, and every reused cluster its previous name, so only new rows
    (joined to the nearest centroid) differ from the last build. Returns the frame and the rows kept."""
    old = previous.filter(pl.col("cluster_id") >= 0)
    names = old.group_by("cluster_id").agg(pl.col("topic", "topic_label").first())
    joined = frame.join(old.select("record_id", previous_id="cluster_id"), on="record_id", how="left",
                        maintain_order="left")
    kept = int(joined.select((pl.col("cluster_id") >= 0) & pl.col("previous_id").is_not_null()).to_series().sum())
    joined = joined.with_columns(cluster_id=pl.when(pl.col("cluster_id") >= 0)
                                 .then(pl.coalesce("previous_id", "cluster_id")).otherwise("cluster_id"))
    named = joined.join(names, on="cluster_id", how="left", suffix="_previous", maintain_order="left")
    return named.with_columns(
        topic=pl.coalesce("topic_previous", "topic"), topic_label=pl.coalesce("topic_label_previous", "topic_label"),
    ).select(frame.columns), kept


class DiverseSubsetConfig(dg.Config):
    budget: int | None = None
    """How many rows K-Center picks; None: `budget_fraction` of the eligible pool, at most `max_budget`."""
    budget_fraction: float = 0.5
    max_budget: int | None = 2000
    """Ceiling on the default budget: perplexity, the costliest signal, is computed only for this subset."""
    balance_corpora: bool = True
    """Cap each corpus (the top folder of its files) at its share of the budget, so one large corpus (67 CMMLU
    subject files, say) cannot crowd out the others; what a small corpus cannot use goes to the rest."""
    corpus_shares: dict[str, float] = {}
    """Weight of a corpus's share, by top folder (e.g. {"cmmlu": 0.5}); a corpus not named weighs 1, 0 leaves it out."""
    category_floor: int = 3
    """Picks every category within a corpus gets first (all its rows if fewer), so the long tail is present;
    the rest of the budget is plain farthest-first. On 20,000 alpaca_en rows (64 topics, 2,000 picks) per-topic
    caps left the covering radius at 0.917x that of random subsets, a floor of 3 at 0.800x with every topic
    present (benchmarks/results/kcenter_balance.json)."""
    keep_previous_picks: bool = True
    """Extend the previous subset rather than pick anew: its picks stay, new ones go only where rows now lie
    farther than its final radius, so the language-model scores computed for it stay in use (from scratch,
    one new file of 2,916 rows kept 817 of 2,000 picks). False: K-Center from scratch."""
    fresh: bool = False
    """A reproducible release build: ignore the previous subset in the warehouse (the same inputs give the
    same subset, whatever was built before)."""
    after_novelty: bool = True
    """Draw only from the rows the novelty cut keeps (novelty_scores' `keep` and `false_novel_rate`, while its
    gate lets the signal through): the pool-wide, cheap filter comes before the picks that the language model
    then scores. On the whole shared corpora, picking first and cutting after dropped 1,308 of 2,000 picks as
    not novel (623 kept); drawing from novel rows kept 1,711 (benchmarks/results/pipeline_outcome*.json).
    False: K-Center over every rule-eligible row (what selection_value's no_novelty arm needs)."""
    random_baselines: int = 5
    """Random subsets of the same size whose mean covering radius is reported next to the subset's."""


def corpus_of(partition: pl.Expr) -> pl.Expr:
    """The corpus a file belongs to: the top folder of its partition key (a file at the top is its own)."""
    return partition.str.split("/").list.first()


def rule_eligible(pool: pl.DataFrame) -> pl.DataFrame:
    """The pool rows the cheap quality rules let compete for the diverse subset: SFT rows without a hard
    rule failure (``quality_rules``, as ``quality_labels`` applies them) and every multiple-choice row
    (they have no answer-quality stage). Farthest-first favours outliers, and an empty answer, a refusal or
    broken encoding is one: without this, such rows take subset slots."""
    sft = pool.filter(pl.col("kind") == "sft")
    failed = sft.with_columns(rules=quality_rules(sft)).filter(hard_rule_failures(pl.col("rules")).list.len() > 0)
    return pool.join(failed.select("record_id"), on="record_id", how="anti", maintain_order="left")


def novelty_use(config: DiverseSubsetConfig, novelty_scores: pl.DataFrame) -> str:
    """What the novelty cut did to the subset's candidates, in words for the metadata."""
    if not config.after_novelty:
        return "not used: after_novelty is off"
    cut = SelectionPolicy(**novelty_cut(novelty_scores))
    gate = novelty_scores["novelty_gate"].drop_nulls()
    if not gate.is_empty():
        return f"not used: {gate[0]}"
    if not cut.require_novel:
        return "not used: novelty keep is all"
    side = "novel" if cut.novelty_keep == "novel" else "like the reference"
    return f"drew from rows called {side} (false-novel rate {cut.novelty_false_novel_rate:g})"


def _why_from_scratch(config: DiverseSubsetConfig, previous: pl.DataFrame | None, model: str) -> str | None:
    """Why the previous subset cannot be extended (None: it can). Its radius is a distance in the space of
    the embedding model that made it, so a subset from another model, or one that does not say, is not reused."""
    if config.fresh:
        return "fresh: true (a release build ignores the previous subset)"
    if not config.keep_previous_picks:
        return "keep_previous_picks is off"
    if previous is None or previous.height == 0:
        return "no previous subset"
    if "embedding_model" not in previous.columns:
        return "the previous subset does not record its embedding model"
    if (made_with := set(previous["embedding_model"])) != {model}:
        return f"the previous subset was made with embedding model {', '.join(sorted(made_with))}, not {model}"
    return None


@dg.asset(
    group_name="diversity",
    kinds={"numpy", "parquet"},
    ins={"embeddings": ALL_CORPORA},
    description="K-Center-Greedy over the deduplicated pool rows that pass the cheap quality rules and the "
    "novelty cut (config `after_novelty`): a minimal, "
    "maximally diverse subset, each chosen row with its rank and the covering radius when it was picked. Each "
    "corpus is capped at its share of the budget and every category within a corpus gets a few picks first. "
    "By default the previous subset is extended (its picks stay, new rows enter where they are not covered); "
    "config `fresh` ignores it. Metadata: the true covering radius over the eligible pool against random subsets.",
)
def diverse_subset(config: DiverseSubsetConfig, candidate_pool: pl.DataFrame, near_duplicates: pl.DataFrame,
                   topic_clusters: pl.DataFrame, novelty_scores: pl.DataFrame, embeddings: EmbeddingVectors,
                   embedding_model: EmbeddingModel, warehouse: WarehouseResource):
    deduplicated = near_duplicates.filter(pl.col("near_duplicate_of").is_null()).select("record_id")
    passed_rules = rule_eligible(candidate_pool.join(deduplicated, on="record_id", how="semi", maintain_order="left"))
    unwanted = not_wanted_by_novelty(novelty_scores) if config.after_novelty else novelty_scores["record_id"].clear()
    eligible = passed_rules.filter(~pl.col("record_id").is_in(unwanted.implode()))
    leaders = deduplicated.join(eligible.select("record_id", corpus=corpus_of(pl.col("corpus"))),
                                on="record_id", maintain_order="left").join(
        topic_clusters, on="record_id", how="left", maintain_order="left")
    budget = config.budget
    if budget is None:
        budget = int(round(leaders.height * config.budget_fraction))
        budget = budget if config.max_budget is None else min(budget, config.max_budget)
    budget = min(budget, leaders.height)
    corpora = leaders["corpus"].to_list()
    caps = balanced_caps(corpora, budget, config.corpus_shares) if config.balance_corpora else None
    store = warehouse.warehouse()
    previous = (store.read("diverse_subset").sort("diverse_rank")
                if store.exists("diverse_subset") and not config.fresh else None)
    why_from_scratch = _why_from_scratch(config, previous, embedding_model.model)
    started = time.perf_counter()
    vectors = pool_vectors(leaders, embeddings)
    categories = {"categories": corpora if caps else None, "caps": caps,
                  "groups": list(zip(corpora, leaders["topic"].to_list())), "floor": config.category_floor}
    if why_from_scratch is None:
        still_leaders = previous.select("record_id").join(
            leaders.select("record_id").with_row_index("row"), on="record_id", maintain_order="left")["row"]
        order, radius = extend_k_center(vectors, budget, still_leaders.to_numpy(), float(previous["radius"][-1]),
                                        **categories)
    else:
        order, radius = k_center_greedy(vectors, budget, **categories)
    frame = leaders.select("record_id", "topic")[order].with_columns(
        diverse_rank=pl.int_range(pl.len(), dtype=pl.Int64),
        radius=pl.Series(radius, dtype=pl.Float32),
        embedding_model=pl.lit(embedding_model.model, dtype=pl.String),
    )
    seconds = time.perf_counter() - started
    kept = int(frame["record_id"].is_in(previous["record_id"].implode()).sum()) if previous is not None else 0
    curve = frame.select("diverse_rank", "radius").gather_every(max(1, frame.height // 20))
    covering = covering_radius(vectors, order)
    baseline = random_radius(vectors, len(order), repeats=config.random_baselines) if len(order) else 0.0
    per_corpus = frame.join(leaders.select("record_id", "corpus"), on="record_id").group_by("corpus").agg(
        picks=pl.len(), categories=pl.col("topic").n_unique()).join(
        leaders.group_by("corpus").agg(eligible=pl.len(), categories_in_pool=pl.col("topic").n_unique()),
        on="corpus").sort("corpus")
    # the scores of the subset's rows depend on which rows it holds, not on their ranks or radii
    return dg.Output(frame, data_version=ids_version(frame["record_id"]), metadata={
        **table_metadata(frame),
        "budget": budget,
        "pool_after_dedup": deduplicated.height,
        "failed_quality_rule": deduplicated.height - passed_rules.height,
        "not_wanted_by_novelty": passed_rules.height - eligible.height,
        "novelty": novelty_use(config, novelty_scores),
        "eligible_pool": leaders.height,
        "seconds": round(seconds, 2),
        "covering_radius": round(covering, 4),
        "random_subset_radius": round(baseline, 4),
        "radius_vs_random": round(covering / baseline, 3) if baseline else None,
        "corpus_caps": dg.MetadataValue.json(caps or {}),
        "per_corpus": dg.MetadataValue.md(markdown_table(per_corpus, rows=100)),
        "final_radius": float(radius[-1]) if len(radius) else 0.0,
        "radius_vs_budget": dg.MetadataValue.md(markdown_table(curve, rows=25)),
        "mode": "full" if why_from_scratch else "extended",
        "mode_reason": why_from_scratch or "extended the previous subset",
        "kept_previous": kept,
        "new_picks": frame.height - kept,
        "dropped_previous": (previous.height if previous is not None else 0) - kept,
        "previous_subset_rows": previous.height if previous is not None else 0,
    })


assets = [embeddings, candidate_pool, near_duplicates, topic_clusters, diverse_subset]
