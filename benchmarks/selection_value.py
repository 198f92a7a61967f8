"""Does the selection train a better model than chance? Arms of k rows each, fine-tuned the same way.

Reads a materialized warehouse (``SFT_ASSETS_*`` settings, as ``sft-assets run`` writes it): the
selection decisions, the raw records, the curated reference and the quality model. Fine-tunes the
bundled SmolLM2-135M-Instruct on each arm and seed (see ``sft_assets.core.selection_value``), and writes
``benchmarks/results/selection_value.json`` and ``selection_value.png`` (loss per arm, error bars: std
over seeds).

Defaults follow the device (``selection_value.CPU_SCALE``, ``GPU_SCALE``): on CPU k=64, 3 seeds, one epoch
in batches of 4, 128 tokens, 30 evaluation rows per source dataset, sized for an hour on two cores; on a GPU
k=1,000, batches of 8, 256 tokens, 50 rows. ``--deadline`` stops after the last whole seed round that fits;
``--label`` marks a reduced run in the results.

    SFT_ASSETS_DATA=/tmp/sft python benchmarks/selection_value.py
    python benchmarks/selection_value.py --k 32 --seeds 0 1 --label "reduced: shared CPU"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "sft_assets", "benchmarks/selection_value.py"))}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, help="rows per arm (default: the device's scale, 64 on CPU, 1000 on a GPU)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=1.0, help="sets --steps when it is not given")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default: epochs * k / batch size)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, help="default: the device's scale")
    p.add_argument("--max-tokens", type=int, help="tokens per row, prompt and answer (default: the device's scale)")
    p.add_argument("--eval-per-dataset", type=int, help="held-out pool rows per source dataset (default: the scale)")
    p.add_argument("--eval-file", action="append", default=[], help="more evaluation files (any reader format)")
    p.add_argument("--no-curated-eval", action="store_true", help="leave the curated seed tasks out of evaluation")
    p.add_argument("--arms", nargs="+", help="arms to train (default: all)")
    p.add_argument("--judge-items", type=int, default=100, help="prompts for the judge's preference (0: off)")
    p.add_argument("--judge-max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="float32")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--deadline", help="UTC time HH:MM: start no seed round that would end after it")
    p.add_argument("--label", default="", help="what is reduced, if anything, for the results")
    p.add_argument("--out", type=Path, default=RESULTS / "selection_value.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import polars as pl
    import torch

    from sft_assets.core import selection_value as sv
    from sft_assets.core.embed import resolve_device
    from sft_assets.core.perplexity import load_causal_lm
    from sft_assets.core.plots import arm_losses_png
    from sft_assets.core.readers import read_file
    from sft_assets.core.rawfiles import scan_root
    from sft_assets.core.storage import Warehouse
    from sft_assets.settings import Settings

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    device = resolve_device(args.device)
    scale = sv.default_scale(device).given(k=args.k, batch_size=args.batch_size, max_tokens=args.max_tokens,
                                           eval_per_dataset=args.eval_per_dataset)
    k = scale.k
    recipe = sv.Recipe(steps=args.steps or max(1, math.ceil(args.epochs * k / scale.batch_size)), lr=args.lr,
                       batch_size=scale.batch_size, max_tokens=scale.max_tokens)
    store = Warehouse(settings.warehouse)
    decisions = store.read("selection_decisions")
    records = store.read_partitions("raw_records")
    curated = None
    if not args.no_curated_eval and Path(settings.curated_root).is_dir():
        files = scan_root(settings.curated_root).files
        curated = pl.concat([read_file(f.path, key).records for key, f in sorted(files.items())],
                            how="vertical_relaxed") if files else None
    eval_sets = sv.default_eval_sets(decisions, records, scale.eval_per_dataset, curated)
    for path in args.eval_file:
        eval_sets[f"file:{Path(path).name}"] = sv.eval_file_rows(path)
    held = set().union(*(set(rows["record_id"]) for rows in eval_sets.values()))
    experiment = sv.Experiment(
        decisions=decisions, records=records, eval_sets=eval_sets, excluded=sv.excluded_ids(decisions, held),
        k=k, seeds=args.seeds, recipe=recipe, arms=args.arms or sv.ARMS, judge_items=args.judge_items,
        judge_max_new_tokens=args.judge_max_new_tokens, deadline=deadline(args.deadline),
        log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
    )
    experiment.build_arms()
    judge, skipped = None, None
    if args.judge_items and store.exists("quality_model"):
        from sft_assets.core.embed import load_sentence_model

        row = store.read("quality_model").row(0, named=True)
        judge, skipped = sv.gated_judge(row, load_sentence_model(row["embedding_model"]))
    started = time.perf_counter()
    lm = load_causal_lm(device=device, precision=args.precision)
    report = experiment.run(lm, judge, skipped)
    if skipped:
        print(skipped)
    report["config"] = {
        **commit(), "label": args.label, "device": device, "precision": args.precision,
        "threads": torch.get_num_threads(), "model": lm.model_id, "warehouse": settings.warehouse,
        "eval_per_dataset": scale.eval_per_dataset, "eval_files": args.eval_file, "deadline": args.deadline,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": round(time.perf_counter() - started, 1),
        "pool_rows": decisions.height, "kept_rows": int(decisions["kept"].sum()),
        "curated_eval_bias": (
            "The curated seed tasks are also the novelty stage's reference: selection drops pool rows that look "
            "like them, so on the curated set the selected arm is pushed away from the evaluation distribution "
            "and no_novelty is favoured; read the pool sets as the headline."),
    }
    report["default_cost_estimate"] = default_cost(report, experiment, lm.tokenizer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    headline = sv.headline_set(report)
    png = arm_losses_png(report["loss"][headline], f"held-out answer loss ({headline}), mean ± std over seeds")
    args.out.with_suffix(".png").write_bytes(png)
    print(sv.arm_table(report))
    print(sv.verdict(report))
    return 0


def deadline(hhmm: str | None) -> float | None:
    if not hhmm:
        return None
    now = datetime.now(timezone.utc)
    hour, minute = map(int, hhmm.split(":"))
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return (at + timedelta(days=1) if at <= now else at).timestamp()  # 01:10 asked at 23:00 is tomorrow's


def default_cost(report: dict, experiment, tokenizer) -> dict:
    """What the CPU defaults (``CPU_SCALE``: 7 arms x 3 seeds, the same evaluation sets cut the same way) cost on
    two idle cores, from this run's CPU seconds per token (CPU time, not wall time: the shared machine's load
    inflates wall time, not the work) and the rows' real lengths at the default cut."""
    from sft_assets.core import selection_value as sv

    scale = sv.CPU_SCALE
    timing, tokens = report["timing_s"], report["tokens"]
    train_per_token = timing["train_cpu_s"] / max(tokens["train"], 1)
    eval_per_token = timing["eval_cpu_s"] / max(tokens["eval"], 1)
    frames = experiment.arm_frames.get("selected") or next(iter(experiment.arm_frames.values()))
    rows = next(iter(frames.values()))
    lengths = [len(e.prompt) + len(e.answer) for e in sv.encode(tokenizer, *sv.conversations(rows), scale.max_tokens)]
    evals = [len(e.prompt) + len(e.answer) for frame in experiment.eval_sets.values()
             for e in sv.encode(tokenizer, *sv.conversations(frame), scale.max_tokens)]
    mean = sum(lengths) / len(lengths)
    cpu_s = len(sv.ARMS) * 3 * (scale.k * mean * train_per_token + sum(evals) * eval_per_token)
    return {
        "train_cpu_s_per_token": round(train_per_token, 4), "eval_cpu_s_per_token": round(eval_per_token, 4),
        "scale": asdict(scale), f"mean_row_tokens_at_{scale.max_tokens}": round(mean, 1),
        "default_cpu_s": round(cpu_s), "default_wall_s_on_2_idle_cores": round(cpu_s / 2),
        "note": "per-token CPU cost measured in this run; every arm trained (no twin reuse); the judge's "
                "generation is not included",
    }


if __name__ == "__main__":
    raise SystemExit(main())
