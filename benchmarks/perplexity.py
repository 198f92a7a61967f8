"""Answer perplexity: length-bucketed batches vs one pair at a time, on real Alpaca rows.

    .venv/bin/python benchmarks/perplexity.py [--device auto|cpu|cuda] [--rows 2000] [--single-rows 200]

Batched scoring runs on all ``--rows`` rows. One-at-a-time scoring runs on
``--single-rows`` of them, evenly spaced so they keep the same length mix
(all of them when ``--single-rows`` is 0 or at least ``--rows``), and its
rows/s is extrapolated; the output says which. Other jobs may share the
machine, so the two modes take turns: the rows go in ``--chunks`` slices (each
batched slice is length-bucketed on its own), and after each batched slice its
share of the one-at-a-time rows runs, so both modes see the same load. CPU
seconds are reported beside wall time. The values of both paths are compared
on the rows they share.
Writes benchmarks/results/perplexity.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import bench_env  # first: offline models, the package on sys.path
from bench_env import HERE, CORPORA

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from sft_assets.core.datasets import user_prompt  # noqa: E402
from sft_assets.core.perplexity import answer_perplexity, load_causal_lm  # noqa: E402
from sft_assets.core.readers import read_file  # noqa: E402

RELPATH = "alpaca_en/alpaca_data-0-3252.json"
TARGET_SPEEDUP = 3.0


def timed(lm, prompts, answers, rows, batch_size, max_tokens) -> tuple[dict, float, float]:
    """Scores of these rows, wall seconds, CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    scores = answer_perplexity(
        lm, [prompts[i] for i in rows], [answers[i] for i in rows], max_tokens=max_tokens, batch_size=batch_size
    )
    if lm.device.startswith("cuda"):
        torch.cuda.synchronize()
    return scores, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--model", default="default", help="language_model: 'default' or a local path")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--single-rows", type=int, default=200, help="rows scored one at a time (0: all)")
    parser.add_argument("--chunks", type=int, default=10, help="slices in which the two modes take turns")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "perplexity.json")
    args = parser.parse_args()

    records = read_file(CORPORA / RELPATH, RELPATH).records.filter(pl.col("kind") == "sft").head(args.rows)
    prompts = records.select(user_prompt(pl.col("instruction"), pl.col("input"))).to_series().to_list()
    answers = records["output"].to_list()
    rows = len(answers)
    single_rows = rows if args.single_rows <= 0 or args.single_rows >= rows else args.single_rows
    subset = np.linspace(0, rows - 1, single_rows).round().astype(int)

    started = time.perf_counter()
    lm = load_causal_lm(args.model, args.device)
    load_s = time.perf_counter() - started
    answer_perplexity(lm, prompts[:4], answers[:4], max_tokens=args.max_tokens, batch_size=4)  # warm-up

    modes = {
        f"batched (length-bucketed, batch_size={args.batch_size})": {
            "rows": rows, "wall_s": 0.0, "cpu_s": 0.0, "extrapolated": False, "batch_size": args.batch_size,
        },
        "one at a time (batch_size=1)": {
            "rows": single_rows, "wall_s": 0.0, "cpu_s": 0.0, "extrapolated": single_rows < rows, "batch_size": 1,
        },
    }
    scores: dict[str, list[dict]] = {name: [] for name in modes}
    for chunk in np.array_split(np.arange(rows), args.chunks):
        for (name, mode), chunk_rows in zip(modes.items(), (chunk, np.intersect1d(chunk, subset))):
            result, wall, cpu = timed(lm, prompts, answers, chunk_rows, mode["batch_size"], args.max_tokens)
            scores[name].append(result)
            mode["wall_s"] += wall
            mode["cpu_s"] += cpu
    batched, single = ({key: np.ma.concatenate([part[key] for part in parts]) for key in parts[0]}
                       for parts in scores.values())
    relative = np.ma.abs(single["ppl"] / batched["ppl"][subset] - 1)
    relative_free = np.ma.abs(single["ppl_unconditioned"] / batched["ppl_unconditioned"][subset] - 1)

    for mode in modes.values():
        mode["rows_per_s"] = mode["rows"] / mode["wall_s"]
        mode["cpu_s_per_row"] = mode["cpu_s"] / mode["rows"]
        mode[f"wall_s_for_{rows}_rows"] = rows / mode["rows_per_s"]
    batched_mode, single_mode = modes.values()
    speedup = batched_mode["rows_per_s"] / single_mode["rows_per_s"]
    result = {
        "benchmark": "answer_perplexity rows/s: length-bucketed batches vs one at a time",
        "data": f"{RELPATH}, first {rows} SFT rows (prompt = instruction\\ninput, answer = output)",
        "model": lm.model_id,
        "device": lm.device,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "max_tokens": args.max_tokens,
        "answer_tokens_scored": int(batched["answer_tokens"].sum()),
        "truncated_rows": int(batched["truncated"].sum()),
        "empty_answers": int((batched["status"] == "empty_answer").sum()),
        "load_s": load_s,
        "modes": modes,
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": bool(speedup >= TARGET_SPEEDUP),
        "one_at_a_time_rows": "all rows" if single_rows == rows else
        f"{single_rows} evenly spaced rows of the {rows}; its rows/s is extrapolated to all {rows}",
        "turns": f"{args.chunks} slices; each batched slice then its one-at-a-time rows, so both see the same load",
        "max_relative_difference_batched_vs_one_at_a_time": {
            "ppl": float(relative.max()), "ppl_unconditioned": float(relative_free.max()),
        },
    }
    bench_env.write_result(args.out, result)

    print(f"{result['data']}; model {lm.model_id} on {lm.device} ({result['machine']})")
    print(f"{'mode':<46}{'rows':>6}{'wall s':>9}{'rows/s':>9}{'CPU s/row':>11}")
    for name, mode in modes.items():
        mark = " (extrapolated)" if mode["extrapolated"] else ""
        print(f"{name:<46}{mode['rows']:>6}{mode['wall_s']:>9.1f}{mode['rows_per_s']:>9.2f}"
              f"{mode['cpu_s_per_row']:>11.3f}{mark}")
    print(f"speedup {speedup:.2f}x (target {TARGET_SPEEDUP:.0f}x: {'met' if result['target_met'] else 'NOT met'}); "
          f"one at a time on {result['one_at_a_time_rows']}")
    print(f"max relative difference batched vs one at a time: {result['max_relative_difference_batched_vs_one_at_a_time']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
