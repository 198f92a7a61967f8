"""Self-Instruct: one real round with the bundled SmolLM2 (tokens/s, survivors per filter) and the ROUGE-L check.

    .venv/bin/python benchmarks/self_instruct.py [--count 32] [--max-new-tokens 128] [--threads 0] [--device cpu]

The round takes the 175 Self-Instruct seed tasks and compares its
instructions with the seeds and every SFT instruction of ../shared/corpora
(the pool the round would join). The ROUGE-L part times the indexed check
against ``rouge_scorer`` on every pool instruction (brute force, on
``--brute-queries`` queries, extrapolated) and checks both find the same
matches. ``--threads`` sets torch's CPU threads (0: torch's default); on a
machine shared with other jobs, fewer threads than cores can be faster.
Writes benchmarks/results/self_instruct.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import bench_env  # first: offline models, the package on sys.path
from bench_env import HERE, CORPORA

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402

from sft_assets.core.perplexity import load_causal_lm  # noqa: E402
from sft_assets.core.rawfiles import scan_root  # noqa: E402
from sft_assets.core.readers import read_file  # noqa: E402
from sft_assets.core.self_instruct import Reference, RougeIndex, RoundConfig, run_round  # noqa: E402

SEED_FILE = "self_instruct/seed_tasks.jsonl"


def pool_and_seeds() -> tuple[pl.DataFrame, pl.DataFrame]:
    frames = [read_file(f.path, key).records for key, f in sorted(scan_root(CORPORA).files.items())]
    records = pl.concat(frames, how="vertical_relaxed").filter(pl.col("kind") == "sft")
    seeds = records.filter(pl.col("corpus") == SEED_FILE).unique("instruction", keep="first", maintain_order=True)
    pool = records.filter(pl.col("corpus") != SEED_FILE).unique("instruction", keep="first", maintain_order=True)
    return (pool.with_columns(origin=pl.format("{}#{}", "corpus", "source_row")),
            seeds.with_columns(origin=pl.format("seed:{}#{}", "source", "source_row")))


def funnel(rows: pl.DataFrame) -> list[dict]:
    """Candidates left after each filter, in the order the round applies them."""
    stage = pl.when(pl.col("input_prompt").is_null()).then(pl.lit("instruction")).otherwise(pl.lit("instance"))
    drops = rows.filter(~pl.col("kept")).group_by(stage.alias("stage"), "reason", maintain_order=True).len()
    order = ["unparsable", "too_long", "too_short", "starts_with_punctuation", "starts_with_non_english",
             "wrong_language", "blacklisted", "duplicate_in_round", "too_similar"]
    left, out = rows.height, []
    for stage_name in ("instruction", "instance"):
        for reason in order:
            dropped = drops.filter((pl.col("stage") == stage_name) & (pl.col("reason") == reason))["len"].sum()
            if dropped:
                left -= dropped
                out.append({"stage": stage_name, "filter": reason, "dropped": int(dropped), "left": left})
    return out


def rouge_benchmark(pool: list[str], queries: list[str], brute_queries: int, threshold: float) -> dict:
    started = time.perf_counter()
    index = RougeIndex(pool)
    build = time.perf_counter() - started
    started = time.perf_counter()
    for query in queries:
        index.matches(query, threshold)
    indexed = time.perf_counter() - started
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = queries[:: max(1, len(queries) // brute_queries)][:brute_queries]
    started = time.perf_counter()
    brute = [{j for j, text in enumerate(pool) if scorer.score(text, q)["rougeL"].fmeasure >= threshold}
             for q in sample]
    brute_seconds = time.perf_counter() - started
    same = all({j for j, _ in index.matches(q, threshold)} == b for q, b in zip(sample, brute))
    per_query_brute = brute_seconds / len(sample)
    return {
        "pool_instructions": len(pool), "queries": len(queries), "threshold": threshold,
        "index_build_s": round(build, 2), "indexed_ms_per_query": round(1000 * indexed / len(queries), 2),
        "brute_force_s_per_query": round(per_query_brute, 2), "brute_force_queries": len(sample),
        "speedup": round(per_query_brute / (indexed / len(queries)), 0),
        "mean_rows_scored_per_query": round(float(np.mean([len(index.candidates(q, threshold)) for q in queries])), 1),
        "same_matches_as_brute_force": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--rouge-queries", type=int, default=500)
    parser.add_argument("--brute-queries", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pool, seeds = pool_and_seeds()
    reference = Reference(seeds["instruction"].to_list() + pool["instruction"].to_list(),
                          seeds["origin"].to_list() + pool["origin"].to_list())
    lm = load_causal_lm(device=args.device)
    config = RoundConfig(count=args.count, max_new_tokens=args.max_new_tokens, seed=args.seed,
                         batch_size=args.batch_size)
    started = time.perf_counter()
    result = run_round(lm, seeds, reference, config)
    wall = time.perf_counter() - started
    rng = np.random.default_rng(0)
    english = pool.filter(pl.col("lang") == "en")["instruction"]
    queries = english.gather(rng.choice(english.len(), args.rouge_queries, replace=False)).to_list()
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_1m": os.getloadavg()[0], "device": lm.device},
        "round": {"count": args.count, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                  "batch_size": args.batch_size, "reference_instructions": len(reference.texts),
                  "wall_s": round(wall, 1), **result.stats, "kept": result.kept.height,
                  "survivors": funnel(result.rows),
                  "kept_examples": result.kept.select("instruction", "input", "output").head(5).to_dicts()},
        # pool rows against the pool itself: each query scores at least its own row
        "rouge": rouge_benchmark(pool["instruction"].to_list(), queries, args.brute_queries, 0.7),
    }
    out = HERE / "results" / "self_instruct.json"
    bench_env.write_result(out, report)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
