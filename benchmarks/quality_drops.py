"""What the quality judge drops, before and after: the previous judge (HH-RLHF-trained, the lowest-scored
quarter dropped) against the current one (alpaca_eval + self-supervised, P(acceptable) < 0.5 dropped), on
``--rows`` alpaca_en rows that pass the rules and that neither judge trained on.

It also sweeps the current judge's cut: at each P(acceptable) threshold, the share of those real answers
dropped against the share of mismatched pairs (each prompt given another row's answer) it would catch, which
is what ``SelectionPolicy.quality_threshold`` trades.

The previous judge's code is read from git (``--old-commit``), trained on HH-RLHF harmless-base as its asset
did; the current judge is trained exactly as in benchmarks/quality.py (same seed, same embeddings cache).
Writes benchmarks/results/quality_drops.json with counts and examples each way.

``--warehouse DIR`` asks the same of a whole-corpora run instead (the warehouse ``sft-assets run`` or
benchmarks/pipeline.py built): its diverse subset's SFT rows, the previous judge against the run's own
``quality_model`` as the run applied it (its gate's decision) and as it would have applied it without the
gate (P(acceptable) below the selection's quality_threshold). Writes quality_drops_whole_corpora.json.

    nice -n 10 .venv/bin/python benchmarks/quality_drops.py
    nice -n 10 .venv/bin/python benchmarks/quality_drops.py --warehouse /tmp/pipebench/data/warehouse
"""

from __future__ import annotations

import argparse
import json
import subprocess
import types
from pathlib import Path

from bench_env import REPO, write_result  # first: offline models, the package on sys.path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from quality import Embedder, current_judge, records  # noqa: E402

from sft_assets.core.datasets import user_prompt  # noqa: E402
from sft_assets.core.quality import quality_rules, quality_scores  # noqa: E402
from sft_assets.core.storage import Warehouse  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


CUTS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)


def old_module(commit: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:sft_assets/core/quality.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_quality")
    exec(compile(source, f"{commit}:sft_assets/core/quality.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--old-commit", default="e00a9d6")
    parser.add_argument("--pool-rows", type=int, default=1200)
    parser.add_argument("--hh-pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/quality_bench"))
    parser.add_argument("--warehouse", type=Path, help="a whole-corpora run's warehouse (see above)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    embed = Embedder(args.scratch)
    prompts, answers = embed.prompts, embed.answers
    old = old_module(args.old_commit)
    hh = records("hh_rlhf/*.jsonl.gz").head(args.hh_pairs)
    old_model, _ = old.train_quality_model(prompts(hh["prompt"].to_list()), answers(hh["chosen"].to_list()),
                                           answers(hh["rejected"].to_list()), hh, seed=args.seed)
    if args.warehouse:
        result = whole_corpora(args, embed, old, old_model)
        embed.save()
        write_result(args.out or RESULTS / "quality_drops_whole_corpora.json", result)
        print(json.dumps({k: {n: x for n, x in v.items() if n != "examples"} if isinstance(v, dict) else v
                          for k, v in result.items()}, indent=1))
        return
    _, pool, new_model, report = current_judge(embed, args.pool_rows, args.seed)

    sft = records("alpaca_en/alpaca_data-27270-30186.json")
    sft = sft.filter(quality_rules(sft).list.len() == 0).with_columns(
        prompt=user_prompt(pl.col("instruction"), pl.col("input")))
    sft = sft.filter(~pl.col("prompt").is_in(pool["prompt"].implode())).head(args.rows)
    p_emb, a_emb = prompts(sft["prompt"].to_list()), answers(sft["output"].to_list())
    new = quality_scores(new_model, p_emb, a_emb, sft["prompt"], sft["output"])
    old_scores = old.quality_scores(old_model, p_emb, a_emb, sft["prompt"], sft["output"])
    # another row's answer for every prompt (a derangement by rotation): the failure the judge must catch
    mismatched = quality_scores(new_model, p_emb, np.roll(a_emb, 1, axis=0), sft["prompt"],
                                sft["output"].shift(1, fill_value=sft["output"][-1]))
    sweep = [{"cut": cut, "real_answers_dropped": round(float((new < cut).mean()), 4),
              "mismatched_caught": round(float((mismatched < cut).mean()), 4)} for cut in CUTS]
    old_cut = float(np.quantile(old_scores, 0.25, method="lower"))
    old_drop, new_drop = old_scores < old_cut, new < 0.5
    frame = sft.select("instruction", "input", "output").with_columns(
        old_score=pl.Series(old_scores).round(3), new_p=pl.Series(new).round(3))

    def examples(mask: np.ndarray, n: int = 5) -> list[dict]:
        return frame.filter(pl.Series(mask)).sort("new_p").head(n).with_columns(
            pl.col("instruction", "input", "output").str.slice(0, 300)).to_dicts()

    length = sft["output"].str.len_chars().to_numpy()
    result = {
        "rows": sft.height, "source": "alpaca_en/alpaca_data-27270-30186.json, rows passing the rules, "
        "none of them in the judge's training pool",
        "old": {"judge": f"{args.old_commit}: HH-RLHF-trained, first {args.hh_pairs} pairs", "cut":
                f"lowest-scored quarter (score < {old_cut:.3f})", "dropped": int(old_drop.sum()),
                "median_answer_chars_dropped": float(np.median(length[old_drop]))},
        "new": {"judge": "alpaca_eval + self-supervised, calibrated", "gate": report["gate"],
                "cut": "P(acceptable) < 0.5", "dropped": int(new_drop.sum()),
                "median_answer_chars_dropped": float(np.median(length[new_drop])) if new_drop.any() else None},
        "median_answer_chars_all": float(np.median(length)),
        "dropped_by_both": int((old_drop & new_drop).sum()),
        "cut_sweep": sweep,
        "spearman_old_new": float(pl.DataFrame({"a": old_scores, "b": new}).select(
            pl.corr("a", "b", method="spearman")).item()),
        "dropped_only_by_old": examples(old_drop & ~new_drop),
        "dropped_only_by_new": examples(new_drop & ~old_drop),
        "command": "nice -n 10 .venv/bin/python benchmarks/quality_drops.py",
    }
    embed.save()
    write_result(args.out or RESULTS / "quality_drops.json", result)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("dropped_only")}, indent=1))


def whole_corpora(args, embed: Embedder, old, old_model) -> dict:
    """The previous judge and the run's own judge over the SFT rows of a whole-corpora run's diverse subset."""
    from sft_assets.core.quality import load_model
    from sft_assets.core.selection import SelectionPolicy

    store = Warehouse(str(args.warehouse))
    subset = store.read("diverse_subset").select("record_id", "diverse_rank")
    sft = store.read("candidate_pool").filter(pl.col("kind") == "sft").join(subset, on="record_id").sort(
        "diverse_rank").with_columns(prompt=user_prompt(pl.col("instruction"), pl.col("input")))
    p_emb, a_emb = embed.prompts(sft["prompt"].to_list()), embed.answers(sft["output"].to_list())
    row = store.read("quality_model").row(0, named=True)
    judge = load_model(row["path"], row["sha256"])
    new = quality_scores(judge, p_emb, a_emb, sft["prompt"], sft["output"])
    old_scores = old.quality_scores(old_model, p_emb, a_emb, sft["prompt"], sft["output"])
    old_cut = float(np.quantile(old_scores, 0.25, method="lower"))
    threshold = SelectionPolicy().quality_threshold
    old_drop, ungated_drop = old_scores < old_cut, new < threshold
    applied_drop = ungated_drop & (not row["gate"])
    length = sft["output"].str.len_chars().to_numpy()
    frame = sft.select("corpus", "instruction", "input", "output").with_columns(
        old_score=pl.Series(old_scores).round(3), new_p=pl.Series(new).round(3))

    def dropped(mask: np.ndarray, what: str, by: str, n: int = 5) -> dict:
        """The rows ``mask`` drops: counts, and the ``n`` its judge scored lowest (``by``)."""
        rows = frame.filter(pl.Series(mask))
        return {"what": what, "dropped": int(mask.sum()),
                "median_answer_chars_dropped": float(np.median(length[mask])) if mask.any() else None,
                "by_corpus": dict(rows.group_by(pl.col("corpus").str.split("/").list.first()).len().sort(
                    "len", descending=True).iter_rows()),
                "examples": rows.sort(by).head(n).with_columns(
                    pl.col("instruction", "input", "output").str.slice(0, 300)).to_dicts()}

    return {
        "warehouse": str(args.warehouse), "rows": sft.height,
        "source": "the SFT rows of the run's diverse subset (they passed dedup, the rules and, where on, novelty)",
        "median_answer_chars_all": float(np.median(length)) if sft.height else None,
        "before": dropped(old_drop, f"{args.old_commit}: HH-RLHF-trained judge, first {args.hh_pairs} pairs, "
                          f"lowest-scored quarter (score < {old_cut:.3f})", "old_score"),
        "after_as_run": dropped(applied_drop, f"the run's quality_model as selection applied it: gate "
                                f"{row['gate'] or 'passed'}", "new_p"),
        "after_without_gate": dropped(ungated_drop, f"the run's quality_model had its gate let it through: "
                                      f"P(acceptable) < {threshold:g}", "new_p"),
        "gate": row["gate"], "held_out": {k: row[k] for k in ("preference_accuracy", "preference_length_baseline",
                                                              "other_answer_accuracy", "n_preference_test")},
        "dropped_before_and_without_gate": int((old_drop & ungated_drop).sum()),
        "command": f"nice -n 10 .venv/bin/python benchmarks/quality_drops.py --warehouse {args.warehouse}",
    }


if __name__ == "__main__":
    main()
