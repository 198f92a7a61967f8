"""float32 vs bfloat16 weights on this CPU: MiniLM embeddings and SmolLM2 perplexity, side by side.

The pipeline's ``precision: auto`` picks bfloat16 where the hardware runs it
natively (AMX CPUs, CUDA GPUs with bf16). This measures what that buys and
what it changes, on real rows of alpaca_en/alpaca_data-0-3252.json: rows/s
of both precisions in alternating slices (so both see the same machine load),
the cosine between the two vectors of each text, and the perplexity ratio
and rank correlation. About 4 minutes on 2 idle cores:

    .venv/bin/python benchmarks/precision.py

Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import bench_env

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from sft_assets.core.embed import embed_texts, load_sentence_model, resolve_precision  # noqa: E402
from sft_assets.core.perplexity import answer_perplexity, load_causal_lm  # noqa: E402

SLICE = "alpaca_en/alpaca_data-0-3252.json"
PRECISIONS = ("float32", "bfloat16")


def rates(rows: int, seconds: dict) -> dict:
    return {name: {"seconds": round(s, 2), "rows_per_s": round(rows / s, 1)} for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-rows", type=int, default=2000)
    parser.add_argument("--ppl-rows", type=int, default=128)
    parser.add_argument("--out", type=Path, default=bench_env.HERE / "results" / "precision.json")
    args = parser.parse_args()
    rows = json.loads((bench_env.CORPORA / SLICE).read_text(encoding="utf-8"))
    prompts = [(r["instruction"] + "\n" + r["input"]).strip() for r in rows]
    answers = [r["output"] for r in rows]
    result = {"benchmark": __doc__.splitlines()[0], "command": "python benchmarks/precision.py",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
              "auto_resolves_to": resolve_precision("auto", "cpu"), "data": SLICE}

    encoders = {p: load_sentence_model("default", "cpu", p) for p in PRECISIONS}
    for name, texts in (("prompts", prompts[: args.embed_rows]), ("answers", answers[: args.embed_rows])):
        out, seconds = bench_env.alternating(encoders, lambda m, t: embed_texts(m, t), texts, slices=4)
        vectors = {p: np.concatenate(v) for p, v in out.items()}
        cosine = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
        result[f"embeddings_{name}"] = {"rows": len(texts), **rates(len(texts), seconds),
                                        "speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
                                        "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
        print(f"embeddings {name}: {result[f'embeddings_{name}']}", flush=True)

    models = {p: load_causal_lm(precision=p) for p in PRECISIONS}
    pairs = list(zip(prompts[: args.ppl_rows], answers[: args.ppl_rows]))
    out, seconds = bench_env.alternating(models, lambda m, b: answer_perplexity(m, *zip(*b))["ppl"], pairs, slices=4)
    ppl = {p: np.concatenate([np.ma.filled(v, np.nan) for v in out[p]]) for p in PRECISIONS}
    ok = ~np.isnan(ppl["float32"])
    ratio = ppl["bfloat16"][ok] / ppl["float32"][ok]
    result["perplexity"] = {"rows": len(pairs), **rates(len(pairs), seconds),
                            "speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
                            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
                            "spearman": float(spearmanr(ppl["float32"][ok], ppl["bfloat16"][ok]).statistic)}
    print(f"perplexity: {result['perplexity']}", flush=True)
    result["load_average_end"] = os.getloadavg()[0]
    bench_env.write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
