"""Novelty stability benchmark: how many earlier rows change side of the novelty cut when one file is added?

A curator who adds a corpus file expects its rows to be judged, not the rest of the pool to be re-decided.
On a whole-corpora warehouse (the one ``benchmarks/pipeline.py`` leaves), ``core.novelty.novelty_scores``
runs on the candidate pool without the held-back file and with it, against the curated reference, and
counts the earlier rows whose decision (novel or not) changed and their mean |change of p-value|. Two ways
of drawing the held-out rows, folds and samples, in one run on the same vectors:
- ``record_ids``: draws from a hash of each row's record id (what the asset does);
- ``permutation``: draws from a seeded permutation of the row positions (the code before record ids),
  which starts over whenever the number of rows changes.

    python benchmarks/novelty_stability.py --warehouse /tmp/pipebench2/data/warehouse
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from urllib.parse import quote

from bench_env import HERE, write_result  # first: offline models, the package on sys.path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from sft_assets.core import novelty  # noqa: E402
from sft_assets.core.records import embedding_texts  # noqa: E402

HOLD_OUT = "alpaca_en/alpaca_data-27270-30186.json"  # benchmarks/pipeline.py's incremental file


def pool_and_reference(warehouse: Path) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """The candidate pool (record id, corpus, text length), its vectors in pool order, the reference's vectors and
    ids, and the reference's text lengths (what the asset passes to ``novelty_scores``)."""
    pool = pl.read_parquet(warehouse / "candidate_pool.parquet", columns=["record_id", "corpus", "text"])
    pool = pool.with_columns(length=pl.col("text").str.len_chars()).drop("text")
    reference = pl.read_parquet(warehouse / "curated_reference.parquet")
    vectors = {}
    for corpus in pool["corpus"].unique().to_list():
        name = quote(corpus, safe="")
        ids = pl.read_parquet(warehouse / "embeddings" / f"{name}.parquet", columns=["record_id"])["record_id"]
        vectors.update(zip(ids.to_list(), np.load(warehouse / "embeddings" / f"{name}.npy")))
    candidates = np.stack([vectors[r] for r in pool["record_id"].to_list()]).astype(np.float32)
    ref = np.ascontiguousarray(reference["embedding"].to_numpy(), dtype=np.float32)
    ref_lengths = np.array([len(text) for text in embedding_texts(reference.drop("embedding"))])
    return pool, candidates, ref, [f"reference:{k}" for k in reference["record_id"]], ref_lengths


def permutation_draws(n_ref: int, n_cand: int, keys=None, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_ref + n_cand).astype(np.uint64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warehouse", type=Path, required=True, help="a whole-corpora warehouse that holds "
                        "the held-back file (benchmarks/pipeline.py's work folder, data/warehouse)")
    parser.add_argument("--hold-out", default=HOLD_OUT)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "novelty_stability.json")
    args = parser.parse_args()
    pool, candidates, reference, ref_keys, ref_lengths = pool_and_reference(args.warehouse)
    lengths = pool["length"].to_numpy()
    earlier = (pool["corpus"] != args.hold_out).to_numpy()
    if earlier.all():
        raise SystemExit(f"{args.hold_out} is not in the pool of {args.warehouse}")
    ids = pool["record_id"].to_list()
    row_draws = novelty.row_draws
    results = {}
    for way, draws in (("record_ids", row_draws), ("permutation", permutation_draws)):
        novelty.row_draws = draws
        runs = {}
        for step, rows in (("without", earlier), ("with", np.ones(len(ids), bool))):
            started = time.perf_counter()
            result = novelty.novelty_scores(reference, candidates[rows],
                                            keys=ref_keys + [i for i, r in zip(ids, rows) if r],
                                            lengths=np.r_[ref_lengths, lengths[rows]])
            p_value = np.ones(len(ids))
            p_value[rows] = result.p_value
            runs[step] = {"result": result, "p": p_value, "seconds": time.perf_counter() - started}
        novelty.row_draws = row_draws
        before, after = runs["without"], runs["with"]
        novel = {s: novelty.novel_mask(r["p"]) & r["result"].usable for s, r in runs.items()}
        changed = int((novel["without"] != novel["with"])[earlier].sum())
        results[way] = {
            "earlier_rows": int(earlier.sum()),
            "changed_side": changed,
            "changed_share": changed / int(earlier.sum()),
            "mean_abs_p_change": float(np.abs(before["p"] - after["p"])[earlier].mean()),
            **{f"{s}_file": {"view": r["result"].view, "usable": r["result"].usable, "gate_p": r["result"].gate_p,
                             "novel_share": float(novel[s][rows].mean()), "seconds": round(r["seconds"], 1)}
               for s, r, rows in (("without", before, earlier), ("with", after, np.ones(len(ids), bool)))},
        }
        print(way, results[way], flush=True)
    write_result(args.out, {
        "benchmark": "novelty decisions of the earlier pool rows, before and after one more corpus file",
        "command": f"python benchmarks/novelty_stability.py --warehouse {args.warehouse}",
        "machine": {"nproc": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
        "data": {"pool_rows": len(ids), "reference_rows": len(reference), "held_back_file": args.hold_out,
                 "held_back_rows": int((~earlier).sum())},
        "results": results,
    })


if __name__ == "__main__":
    main()
