"""``sft-assets judge FILE...``: how the materialized quality judge does on a user's own labelled pairs.

Each file is read by the project's readers (any format they take as preference
records, AlpacaEval's ``{instruction, output_1, output_2, preference}``
included; draws are counted, not judged). The judge is the one ``quality_model``
last wrote, read from the warehouse and the model store the assets use (same
environment variables); it is never retrained here. When its gate refused it,
the pairs are judged by the rules alone, as selection would.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from sft_assets.core.quality import (
    hard_rule_failures, length_baseline, pairwise_accuracy, quality_rules, quality_scores, show_accuracy,
)
from sft_assets.core.readers import read_file

DRAW = "preference_draw"


def rules_score(prompts: list[str], answers: list[str]) -> np.ndarray:
    """The rules-only judge: 1 for an answer no hard rule fails, 0 otherwise."""
    frame = pl.DataFrame({"instruction": prompts, "input": [""] * len(prompts), "output": answers},
                         schema={"instruction": pl.String, "input": pl.String, "output": pl.String})
    failures = frame.select(hard_rule_failures(pl.lit(quality_rules(frame))).list.len()).to_series().to_numpy()
    return (failures == 0).astype(float)


def judge_file(path: Path, score) -> dict:
    """Decided pairs, the judge's pairwise accuracy, the length baseline and the draws skipped, for one file.

    ``score(prompts, answers)`` gives one number per answer, higher = better."""
    result = read_file(path, path.name)
    pairs = result.records.filter(pl.col("kind") == "preference")
    draws = int((result.quarantine["reason"] == DRAW).sum())
    prompts = pairs["prompt"].fill_null("").to_list()
    chosen, rejected = pairs["chosen"].fill_null("").to_list(), pairs["rejected"].fill_null("").to_list()
    good = score(prompts, chosen) if pairs.height else np.zeros(0)
    bad = score(prompts, rejected) if pairs.height else np.zeros(0)
    return {"file": str(path), "decided_pairs": pairs.height, "pairwise_accuracy": pairwise_accuracy(good, bad),
            "length_baseline": length_baseline(chosen, rejected), "draws_skipped": draws,
            "other_rows_skipped": result.quarantine.height - draws + result.records.height - pairs.height}


def current_judge(defs=None):
    """(name, score function) of the materialized judge, or the rules when its gate refused it."""
    if defs is None:
        from sft_assets.definitions import build_defs
        from sft_assets.settings import Settings

        defs = build_defs(Settings.from_env())
    from sft_assets.defs.quality import _checked_model, embed_answers, embed_strings

    store = defs.resources["warehouse"].warehouse()
    if not store.exists("quality_model"):
        raise SystemExit("no quality_model in the warehouse: materialize it first (sft-assets run --until analyze_pool)")
    table = store.read("quality_model")
    embedding_model = defs.resources["embedding_model"]
    model = _checked_model(table, embedding_model)
    if model is None:
        return f"rules only (the judge was refused: {table['gate'][0]})", rules_score

    def score(prompts: list[str], answers: list[str]) -> np.ndarray:
        return quality_scores(model, embed_strings(embedding_model, prompts), embed_answers(embedding_model, answers),
                              prompts, answers)

    return f"quality model {table['sha256'][0][:12]}", score


def main(argv: list[str] | None = None, defs=None) -> int:
    parser = argparse.ArgumentParser(prog="sft-assets judge", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    name, score = current_judge(defs)
    results = [judge_file(path, score) for path in args.files]
    if args.json:
        print(json.dumps({"judge": name, "files": results}, indent=2))
        return 0
    print(f"judge: {name}")
    for r in results:
        n = r["decided_pairs"]
        print(f"{r['file']}: {n} decided pairs, pairwise accuracy {show_accuracy(r['pairwise_accuracy'], n)}, "
              f"length baseline {show_accuracy(r['length_baseline'], n)}, {r['draws_skipped']} draws skipped")
    return 0
