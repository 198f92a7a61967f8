"""Accelerator benchmark of the model and pool-wide stages: MiniLM embeddings, answer perplexity, K-Center-Greedy.

Imports only ``sft_assets.core.embed``, ``.perplexity`` and ``.kcenter`` (numpy,
torch, transformers, sentence-transformers), so it runs on a GPU machine that
has neither the corpora nor Dagster, polars or DuckDB. Its texts come from a
small file that ``--prepare`` writes where the corpora are (git-ignored, a few MB):

    .venv/bin/python benchmarks/gpu.py --prepare     # beside ../shared/corpora: writes benchmarks/data/
    python benchmarks/gpu.py                          # on the GPU machine, benchmarks/data carried along
    .venv/bin/python benchmarks/gpu.py --embed-rows 500 --ppl-rows 16 --kcenter-rows 20000 \\
        --kcenter-budget 500 --out /tmp/gpu-smoke.json  # a CPU smoke run

With ``--device auto`` (CUDA when torch sees a GPU) it measures:
- embeddings: ``embed_texts`` rows/s over ``--embed-rows`` real alpaca_en
  instructions (all 30,186, repeated), per batch size, in fp32, bf16 and, on
  CUDA, fp16, with the largest cosine change each makes against fp32;
  target 50,000 rows/s on a GPU;
- perplexity: ``answer_perplexity`` rows/s on the first ``--ppl-rows`` SFT rows
  of alpaca_en/alpaca_data-0-3252.json (those of benchmarks/perplexity.py),
  in ``--ppl-precision`` (the pipeline's ``auto`` by default),
  batched at each of ``--ppl-batch-sizes`` vs one pair at a time, and the
  largest relative difference between the two;
- K-Center-Greedy: ``--kcenter-rows`` x 384 (the real vectors tiled, plus
  N(0, 0.02) noise, renormalized) to ``--kcenter-budget`` centers: the torch
  path on CUDA, the frontier path on CPU.
Writes benchmarks/results/gpu-<device>.json, <device> being the GPU's name (or cpu).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import sys
import time
from importlib.metadata import version
from pathlib import Path

import bench_env  # first: offline models, the package on sys.path
from bench_env import HERE, CORPORA

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sft_assets.core.embed import embed_texts, load_sentence_model, resolve_device  # noqa: E402
from sft_assets.core.kcenter import k_center_greedy  # noqa: E402
from sft_assets.core.perplexity import answer_perplexity, load_causal_lm  # noqa: E402

TEXTS = HERE / "data" / "gpu_texts.json.gz"
PPL_FILE = "alpaca_en/alpaca_data-0-3252.json"
TARGET_EMBED_ROWS_PER_S = 50_000


def prepare(corpora: Path, out: Path, ppl_rows: int) -> None:
    """Every alpaca_en record's embedding text, and the first SFT (prompt, answer) pairs of one file, as
    the pipeline builds them. Needs the corpora and polars, so it runs here, not on the GPU machine."""
    import polars as pl

    from sft_assets.core.datasets import user_prompt
    from sft_assets.core.readers import read_file
    from sft_assets.core.records import embedding_texts

    files = sorted((corpora / "alpaca_en").glob("*.json"))
    records = pl.concat([read_file(f, f"alpaca_en/{f.name}").records for f in files])
    sft = read_file(corpora / PPL_FILE, PPL_FILE).records.filter(pl.col("kind") == "sft").head(ppl_rows)
    texts = {
        "embed": {"source": f"alpaca_en, all {len(files)} files, embedding_texts", "texts": embedding_texts(records)},
        "ppl": {
            "source": f"{PPL_FILE}, SFT rows in file order (prompt = instruction\\ninput, answer = output)",
            "prompts": sft.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list(),
            "answers": sft["output"].to_list(),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        json.dump(texts, fh, ensure_ascii=False)
    print(f"wrote {out}: {len(texts['embed']['texts'])} texts to embed, {sft.height} PPL pairs, "
          f"{out.stat().st_size / 2**20:.1f} MiB")


def timed(device: str, fn):
    """(result, wall seconds), with the GPU's queue drained on both sides."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def bench_embeddings(texts: list[str], rows: int, batch_sizes: list[int], device: str, model_name: str
                     ) -> tuple[dict, np.ndarray]:
    """Rows/s per (precision, batch size); returns the fp32 vectors of the distinct texts too, for K-Center."""
    model = load_sentence_model(model_name, device, precision="float32")
    work = [texts[i % len(texts)] for i in range(rows)]
    precisions = ["fp32", "bf16", "fp16"] if device.startswith("cuda") else ["fp32", "bf16"]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    runs, first = [], {}
    for precision in precisions:
        model.to(dtypes[precision])
        embed_texts(model, work[: batch_sizes[0]], batch_sizes[0])  # warm-up: kernels, allocator
        for batch_size in batch_sizes:
            vectors, seconds = timed(device, lambda: embed_texts(model, work, batch_size))
            first.setdefault(precision, vectors)
            runs.append({"precision": precision, "batch_size": batch_size, "seconds": round(seconds, 3),
                         "rows_per_s": round(rows / seconds, 1)})
            print(f"  embeddings {precision} batch {batch_size}: {rows / seconds:,.0f} rows/s", flush=True)
    best = max(runs, key=lambda r: r["rows_per_s"])
    result = {
        "rows": rows, "distinct_texts": min(rows, len(texts)), "dimension": int(first["fp32"].shape[1]),
        "max_seq_length": model.max_seq_length, "runs": runs, "best": best,
        "target_rows_per_s": TARGET_EMBED_ROWS_PER_S,
        "target_met": bool(best["rows_per_s"] >= TARGET_EMBED_ROWS_PER_S) if device.startswith("cuda") else None,
    }
    for precision in precisions[1:]:
        cosine = (first[precision].astype(np.float64) * first["fp32"]).sum(axis=1)
        result[f"{precision}_cosine_change"] = {"max": float(1 - cosine.min()),
                                                "p99_9": float(1 - np.quantile(cosine, 0.001))}
    return result, first["fp32"][: result["distinct_texts"]]


def bench_perplexity(prompts: list[str], answers: list[str], batch_sizes: list[int], single_rows: int, device: str,
                     model_name: str, gguf_file: str | None, max_tokens: int, precision: str) -> dict:
    """Batched at each batch size vs one pair at a time (on evenly spaced rows, extrapolated when fewer)."""
    lm, load_s = timed(device, lambda: load_causal_lm(model_name, device, gguf_file, precision))
    answer_perplexity(lm, prompts[:4], answers[:4], max_tokens=max_tokens, batch_size=4)  # warm-up
    rows = len(answers)
    modes, scores = [], []
    for batch_size in batch_sizes:
        result, seconds = timed(device, lambda: answer_perplexity(lm, prompts, answers, max_tokens=max_tokens,
                                                                  batch_size=batch_size))
        scores.append(result)
        modes.append({"batch_size": batch_size, "rows": rows, "seconds": round(seconds, 3),
                      "rows_per_s": round(rows / seconds, 2)})
        print(f"  perplexity batch {batch_size}: {rows / seconds:,.1f} rows/s", flush=True)
    subset = np.linspace(0, rows - 1, min(single_rows, rows)).round().astype(int)
    single, seconds = timed(device, lambda: answer_perplexity(
        lm, [prompts[i] for i in subset], [answers[i] for i in subset], max_tokens=max_tokens, batch_size=1))
    one = {"batch_size": 1, "rows": int(subset.size), "seconds": round(seconds, 3),
           "rows_per_s": round(subset.size / seconds, 2), "extrapolated": bool(subset.size < rows)}
    print(f"  perplexity one at a time: {one['rows_per_s']:,.1f} rows/s", flush=True)
    best, batched = max(modes, key=lambda m: m["rows_per_s"]), scores[0]
    return {
        "rows": rows, "model": lm.model_id, "dtype": str(next(lm.model.parameters()).dtype), "load_s": round(load_s, 2),
        "max_tokens": max_tokens, "answer_tokens_scored": int(batched["answer_tokens"].sum()),
        "batched": modes, "one_at_a_time": one, "speedup_best_batched_vs_one_at_a_time":
        round(best["rows_per_s"] / one["rows_per_s"], 2),
        "max_relative_difference_batched_vs_one_at_a_time": {
            key: float(np.ma.abs(single[key] / batched[key][subset] - 1).max()) for key in ("ppl", "ppl_unconditioned")
        },
    }


def bench_kcenter(base: np.ndarray, rows: int, budget: int, device: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, len(base), rows)]
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.02)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    (order, radius), seconds = timed(device, lambda: k_center_greedy(x, budget, device=device))
    print(f"  k-center {rows} x {x.shape[1]} -> {order.size}: {seconds:.2f} s", flush=True)
    return {
        "rows": rows, "dim": int(x.shape[1]), "budget": budget, "picked": int(order.size),
        "path": "torch, one pass per pick" if device != "cpu" else "numpy frontier",
        "synthesis": f"{len(base)} real MiniLM vectors tiled + N(0, 0.02) per dimension, renormalized",
        "seconds": round(seconds, 3), "radius_first": round(float(radius[0]), 4),
        "radius_last": round(float(radius[-1]), 4), "radius_never_increases": bool((np.diff(radius) <= 0).all()),
    }


def describe_device(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "transformers": version("transformers"),
            "sentence_transformers": version("sentence-transformers"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info["name"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    return info


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write --texts from --corpora, then stop")
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--texts", type=Path, default=TEXTS)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--embedding-model", default="default", help="'default' (bundled MiniLM) or a local path")
    parser.add_argument("--embed-rows", type=int, default=300_000)
    parser.add_argument("--embed-batch-sizes", type=_ints, default=[128, 1024, 4096])
    parser.add_argument("--language-model", default="default", help="'default' (bundled SmolLM2) or a local path")
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--ppl-rows", type=int, default=2000)
    parser.add_argument("--ppl-single-rows", type=int, default=2000, help="rows scored one at a time")
    parser.add_argument("--ppl-batch-sizes", type=_ints, default=[16, 64])
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--ppl-precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the pipeline's setting; auto: bfloat16 where the hardware runs it natively")
    parser.add_argument("--kcenter-rows", type=int, default=1_000_000)
    parser.add_argument("--kcenter-budget", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/gpu-<device>.json")
    args = parser.parse_args(argv)

    if args.prepare:
        prepare(args.corpora, args.texts, args.ppl_rows)
        return
    if not args.texts.exists():
        raise SystemExit(f"{args.texts} is missing: run `benchmarks/gpu.py --prepare` where the corpora are, "
                         "then bring the file along")
    with gzip.open(args.texts, "rt", encoding="utf-8") as fh:
        texts = json.load(fh)
    if args.ppl_rows > len(texts["ppl"]["answers"]):
        raise SystemExit(f"{args.texts} holds {len(texts['ppl']['answers'])} PPL pairs; --prepare --ppl-rows more")
    device = resolve_device(args.device)
    info = describe_device(device)
    print(f"device: {info['name']}", flush=True)

    embedding, vectors = bench_embeddings(texts["embed"]["texts"], args.embed_rows, args.embed_batch_sizes, device,
                                          args.embedding_model)
    embedding["data"] = texts["embed"]["source"]
    ppl = texts["ppl"]
    perplexity = bench_perplexity(ppl["prompts"][: args.ppl_rows], ppl["answers"][: args.ppl_rows],
                                  args.ppl_batch_sizes, args.ppl_single_rows, device, args.language_model,
                                  args.gguf_file, args.max_tokens, args.ppl_precision)
    perplexity["data"] = ppl["source"]
    results = {
        "benchmark": __doc__.splitlines()[0],
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": info,
        "embedding": embedding,
        "perplexity": perplexity,
        "k_center": bench_kcenter(vectors, args.kcenter_rows, args.kcenter_budget, device),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", info["name"].lower()).strip("-") if device != "cpu" else "cpu"
    out = args.out or HERE / "results" / f"gpu-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    bench_env.write_result(out, results)
    best, k = embedding["best"], results["k_center"]
    print(f"embeddings: best {best['rows_per_s']:,.0f} rows/s ({best['precision']}, batch {best['batch_size']}); "
          f"target {TARGET_EMBED_ROWS_PER_S:,} on a GPU: {embedding['target_met']}")
    print(f"perplexity: {perplexity['speedup_best_batched_vs_one_at_a_time']}x batched vs one at a time; "
          f"max relative difference {perplexity['max_relative_difference_batched_vs_one_at_a_time']}")
    print(f"k-center: {k['rows']} x {k['dim']} -> {k['picked']} centers in {k['seconds']} s ({k['path']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
