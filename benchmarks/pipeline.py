"""The whole pipeline through Dagster: every asset on the shared corpora from an empty warehouse, then one new file.

    .venv/bin/python benchmarks/pipeline.py [--files N] [--work DIR [--force]] [--no-incremental] [--baseline COMMIT]

Copies the corpus files (all but ``--hold-out``) into ``<work>/raw`` (the raw
root refuses links that point outside it), then runs ``python -m sft_assets
run`` in a child process on an empty warehouse, row cache and Dagster
instance, all under ``<work>``. The child's own peak RSS and CPU time come from
``os.wait4``; its output is streamed to the console and to
``<work>/run-full.log``. Afterwards the instance's event log gives, per asset
(per step: the multi-assets ``ingest`` and ``ppo_dataset`` count as one),
the seconds summed over its runs and partitions, the rows materialized
(``dagster/row_count``) and rows/s, and how much of each run's wall time no
step accounts for (Dagster's per-run overhead; ``update_corpus`` has one run per
file, ``score_corpus`` one step per asset over every file that needs it). Then
the held-out ``alpaca_en`` chunk is copied in and ``run`` goes again on the same
instance: the incremental rebuild, whose target is under 10 % of the full run's
wall time.

Writes benchmarks/results/pipeline.json and prints markdown tables for the
README. The whole corpora take half an hour to an hour on a 2-core machine without
AMX (the last run's figures: benchmarks/results/pipeline.json). A smoke run takes the
``--files N`` smallest files plus ``hh_rlhf`` (the quality model cannot train
without its pairs); with a small hold-out as well it takes about 6 minutes
under load, mostly model loading and the quality model's training:

    .venv/bin/python benchmarks/pipeline.py --files 3 --hold-out zh_categories/建议类问题.json \
        --work /tmp/pipebench_smoke --force --out /tmp/pipebench_smoke.json

(With the default hold-out the incremental step of a smoke run scores most of
its 2,916 rows with the language model: half an hour or more.)

``--baseline COMMIT`` first runs the same full run with that commit's code (``git archive`` into
``<work>/baseline/code``, its own empty warehouse under ``<work>/baseline``), on the same files, in the same
invocation, then this checkout's: the speed-up of this checkout over an earlier main, measured side by side
(``baseline`` and ``speedup`` in the results; the baseline part is written as soon as it ends).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from fnmatch import fnmatch
from pathlib import Path

import bench_env  # first: offline models, the package on sys.path
from bench_env import CORPORA, HERE, REPO

import dagster as dg  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from sft_assets.core.novelty import FALSE_NOVEL_RATE  # noqa: E402
from sft_assets.core.rawfiles import scan_root  # noqa: E402

HOLD_OUT = "alpaca_en/alpaca_data-27270-30186.json"
# The quality model trains on these pairs (the only preference data): a slice without them fails analyze_pool.
PREFERENCE_FILES = "hh_rlhf/*"
TARGET_FULL_S = 900
TARGET_INCREMENTAL_RATIO = 0.10
TARGET_SPEEDUP = 2.5  # over the main of the time the speed target was set (e00a9d6)
MARKER = ".pipeline-benchmark"  # --force wipes only a folder this benchmark made
# The CLI's progress line per phase ("score_corpus ━━━ 17/17 files …") and its summary's "elapsed" line.
PHASE_PROGRESS = re.compile(r"^(\w+) \S* ?(\d+)/(\d+) files\b")
PHASE_ELAPSED = re.compile(r"(\w+) ([0-9.]+) s")
STEP_EVENTS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.ASSET_MATERIALIZATION,
               dg.DagsterEventType.ASSET_CHECK_EVALUATION}


def corpus_files(corpora: Path, hold_out: str, smallest: int | None) -> list[str]:
    """Relative paths of the data files the raw root would register, less the hold-out, sorted; with
    ``smallest``, only that many of the smallest files plus the preference pairs the quality model needs."""
    base = corpora.resolve()
    sizes = {f.path.relative_to(base).as_posix(): f.size for f in scan_root(base).files.values()}
    if sizes.pop(hold_out, None) is None:
        raise SystemExit(f"the hold-out {hold_out} is not a data file under {corpora}")
    if smallest is None:
        return sorted(sizes)
    kept = set(sorted(sizes, key=lambda relpath: (sizes[relpath], relpath))[:smallest])
    return sorted(kept | {relpath for relpath in sizes if fnmatch(relpath, PREFERENCE_FILES)})


def prepare_work(work: Path, force: bool) -> None:
    """An empty work folder: a non-empty one is wiped only with --force and only if this benchmark made it."""
    if work.exists() and any(work.iterdir()):
        if not force:
            raise SystemExit(f"{work} is not empty: pass --force to wipe it")
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} was not made by this benchmark (no {MARKER}): not wiping it")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).touch()


def copy_files(corpora: Path, relpaths: list[str], raw: Path) -> None:
    for relpath in relpaths:
        target = raw / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpora / relpath, target)


def child_env(work: Path, corpora: Path, data: Path | None = None, code: Path = REPO) -> dict[str, str]:
    """The parent's environment without any SFT_ASSETS_* override, so warehouse, catalog, exports and the
    row cache all start empty under ``data`` (default ``<work>/data``); the package is imported from ``code``
    (put first on the path: an editable install of this checkout would otherwise win)."""
    data = data or work / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SFT_ASSETS_") and k not in ("DAGSTER_HOME", "PYTHONPATH")}
    env.update(
        SFT_ASSETS_DATA=str(data),
        SFT_ASSETS_RAW_ROOT=str(work / "raw"),
        SFT_ASSETS_CURATED_ROOT=str(corpora / "self_instruct"),
        DAGSTER_HOME=str(data / "dagster_home"),
        PYTHONPATH=str(code),
        PYTHONUNBUFFERED="1",  # the phase lines reach the console as they happen
    )
    return env


def run_cli(env: dict[str, str], log: Path) -> dict:
    """``python -m sft_assets run`` in a child (from ``env``'s PYTHONPATH): its output teed to ``log``; wall,
    CPU and peak RSS of that child."""
    command = [sys.executable, "-m", "sft_assets", "run"]
    started_at, started = time.time(), time.perf_counter()
    lines = []
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(command, cwd=env["PYTHONPATH"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, encoding="utf-8", errors="replace")
        for line in proc.stdout:
            sys.stdout.write(line)
            sink.write(line)
            lines.append(line.rstrip("\n"))
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed with exit code {proc.returncode}; see {log}")
    return {
        "started_at": started_at,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "phases": parse_phases(lines),
        "log": str(log),
    }


def parse_phases(lines: list[str]) -> list[dict]:
    """Per phase, in the order of the closing summary's ``elapsed`` line: its seconds there and the partitions
    (files) its progress display last counted. Progress lines repaint with carriage returns: each piece counts."""
    progress: dict[str, int] = {}
    elapsed: list[tuple[str, str]] = []
    for line in lines:
        for piece in line.split("\r"):
            piece = piece.strip()
            if piece.startswith("elapsed "):
                elapsed = PHASE_ELAPSED.findall(piece)
            elif match := PHASE_PROGRESS.match(piece):
                progress[match[1]] = int(match[2])
    phases = [{"phase": name, **({"partitions": progress.pop(name)} if name in progress else {}),
               "seconds": float(seconds)} for name, seconds in elapsed]
    return phases + [{"phase": name, "partitions": done} for name, done in progress.items()]


def row_count(metadata: dict) -> int | None:
    entry = metadata.get("dagster/row_count", metadata.get("rows"))
    return None if entry is None else int(entry.value)


def run_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Per successful step of one run: its seconds, what it materialized (asset -> rows, summed over the
    partitions of a step that writes many) and its partitions."""
    steps: dict[str, dict] = defaultdict(lambda: {"seconds": None, "assets": {}, "checks": [], "partitions": set()})
    for entry in instance.all_logs(run_id, of_type=STEP_EVENTS):
        event = entry.dagster_event
        step = steps[event.step_key]
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            step["seconds"] = event.event_specific_data.duration_ms / 1000
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            asset, rows = materialization.asset_key.to_user_string(), row_count(materialization.metadata)
            step["assets"][asset] = None if rows is None else (step["assets"].get(asset) or 0) + rows
            if materialization.partition is not None:
                step["partitions"].add(materialization.partition)
        else:
            step["checks"].append(event.event_specific_data.check_name)
    return {key: step for key, step in steps.items() if step["seconds"] is not None}


def step_label(step_key: str, step: dict) -> str:
    """The assets a step produced ('raw_records + quarantined_records'), or the check it ran."""
    if step["assets"]:
        return " + ".join(step["assets"])
    return f"check {step['checks'][0]}" if step["checks"] else step_key


def breakdown(instance: dg.DagsterInstance, run_ids: set[str]) -> dict:
    """Per asset over these runs: runs, partitions, seconds and rows (sums); and the run time no step covers."""
    records = sorted((r for r in instance.get_run_records() if r.dagster_run.run_id in run_ids),
                     key=lambda r: r.create_timestamp)
    assets: dict[str, dict] = {}
    run_seconds = step_seconds = 0.0
    for record in records:
        if record.start_time and record.end_time:
            run_seconds += record.end_time - record.start_time
        for step_key, step in run_steps(instance, record.dagster_run.run_id).items():
            row = assets.setdefault(step_label(step_key, step),
                                    {"runs": 0, "partitions": set(), "seconds": 0.0, "rows_by_asset": {}})
            row["runs"] += 1
            row["seconds"] += step["seconds"]
            step_seconds += step["seconds"]
            row["partitions"] |= step["partitions"]
            for asset, rows in step["assets"].items():
                if rows is not None:
                    row["rows_by_asset"][asset] = row["rows_by_asset"].get(asset, 0) + rows
    return {
        "runs": len(records),
        "first_run_start": min((r.start_time for r in records if r.start_time), default=None),
        "run_s": run_seconds,
        "run_overhead_s": run_seconds - step_seconds,
        "assets": [asset_row(name, row) for name, row in assets.items()],
    }


def asset_row(name: str, row: dict) -> dict:
    """rows: every output of the step (for ``ingest``, records plus quarantine: the rows read)."""
    rows = sum(row["rows_by_asset"].values()) if row["rows_by_asset"] else None
    rows_per_s = rows / row["seconds"] if rows is not None and row["seconds"] > 0 else None
    return {"asset": name, "runs": row["runs"], "partitions": len(row["partitions"]), "seconds": row["seconds"],
            "rows": rows, "rows_per_s": rows_per_s, "rows_by_asset": row["rows_by_asset"]}


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {record.dagster_run.run_id for record in instance.get_run_records()}


def open_instance(env: dict[str, str]) -> dg.DagsterInstance:
    """The child's persistent instance, opened here after the child has ended."""
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def measured_run(env: dict[str, str], log: Path, earlier_runs: set[str]) -> tuple[dict, set[str]]:
    """One CLI invocation with its per-asset breakdown (its runs only), and every run id so far. The time
    outside runs splits into start-up (imports, partition sync, until the first run starts) and the gaps
    between runs (each run's planning and set-up, and finding what the next phase must run)."""
    result = run_cli(env, log)
    with open_instance(env) as instance:
        runs = run_ids(instance)
        result |= breakdown(instance, runs - earlier_runs)
    first_run_start = result.pop("first_run_start") or result["started_at"]
    result["startup_s"] = first_run_start - result["started_at"]
    result["between_runs_s"] = result["wall_s"] - result["run_s"] - result["startup_s"]
    return result, runs


def asset_rows(result: dict, asset: str) -> int | None:
    return next((a["rows_by_asset"][asset] for a in result["assets"] if asset in a["rows_by_asset"]), None)


def outcome(data: Path) -> dict:
    """What the run produced, from its warehouse: the figures the README quotes beside the timings."""
    from sft_assets.core.storage import Warehouse

    store = Warehouse(data / "warehouse")
    decisions = store.read("selection_decisions")
    dropped = decisions.filter(~pl.col("kept"))
    options = store.read_partitions("option_probabilities")
    correct = options["correct"].drop_nulls() if options is not None else pl.Series([], dtype=pl.Boolean)
    judge = store.read("quality_model").row(0, named=True)
    novelty = store.read("novelty_scores")
    novelty_gate = novelty["novelty_gate"].drop_nulls()
    novel_by_folder = (store.read("candidate_pool").select("record_id", "corpus").join(novelty, on="record_id")
                       .group_by(folder=pl.col("corpus").str.split("/").list.first())
                       .agg(novel=(pl.col("novelty_prob") <= FALSE_NOVEL_RATE + 1e-12).mean().round(3))
                       .sort("folder"))
    return {
        "quality_judge": {key: judge.get(key) for key in ("gate", "n_pairs", "preference_accuracy",
                                                           "preference_length_baseline", "other_answer_accuracy")},
        "novelty_filtering": "on" if novelty_gate.is_empty() else f"off: {novelty_gate[0]}",
        "called_novel_by_folder": dict(novel_by_folder.iter_rows()),
        "pool_rows": decisions.height,
        "kept": {name: store.read(name).height for name in ("sft_dataset", "rm_dataset", "ppo_prompts")},
        "dropped": dropped.height,
        "first_reason": dict(dropped.group_by(pl.col("first_reason").str.split(":").list.first())
                             .len().sort("len", descending=True).iter_rows()),
        "diverse_subset_picks": dict(decisions.filter(pl.col("diverse_rank").is_not_null())
                                     .group_by(pl.col("first_reason").str.split(":").list.first().fill_null("kept"))
                                     .len().sort("len", descending=True).iter_rows()),
        "exam_items_scored": correct.len(),
        "exam_accuracy": round(float(correct.mean()), 4) if correct.len() else None,
    }


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    total_kib = int(re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M)[1])
    return {"nproc": os.cpu_count(), "cpu": model[1] if model else None, "memory_gb": round(total_kib / 2**20, 1),
            "load_average_start": os.getloadavg()}


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def markdown(title: str, result: dict) -> str:
    """The per-asset and per-phase tables of one invocation, ready for the README."""
    wall = result["wall_s"]
    lines = [f"### {title}: {fmt(wall)} s wall, peak RSS {fmt(result['peak_rss_mb'], 0)} MB, "
             f"CPU {fmt(result['cpu_s'])} s", "",
             "| asset | runs | partitions | seconds | rows | rows/s | share of wall |", "|---|---|---|---|---|---|---|"]
    for a in result["assets"]:
        lines.append(f"| `{a['asset']}` | {a['runs']} | {a['partitions'] or '–'} | {fmt(a['seconds'])} | "
                     f"{fmt(a['rows'])} | {fmt(a['rows_per_s'])} | {a['seconds'] / wall:.1%} |")
    lines.append(f"| Dagster per-run overhead ({result['runs']} runs) | | | {fmt(result['run_overhead_s'])} | | | "
                 f"{result['run_overhead_s'] / wall:.1%} |")
    for label, key in (("start-up, until the first run", "startup_s"),
                       ("between runs (set-up of each run, what to run next)", "between_runs_s")):
        lines.append(f"| {label} | | | {fmt(result[key])} | | | {result[key] / wall:.1%} |")
    lines += ["", "| phase | partitions run | seconds | share of wall |", "|---|---|---|---|"]
    for p in result["phases"]:
        seconds = p.get("seconds")
        share = f"{seconds / wall:.1%}" if seconds is not None else "–"
        lines.append(f"| `{p['phase']}` | {fmt(p.get('partitions'))} | {fmt(seconds)} | {share} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a fresh temp folder, kept afterwards)")
    parser.add_argument("--force", action="store_true", help="wipe --work first if this benchmark made it")
    parser.add_argument("--hold-out", default=HOLD_OUT, help="the file added for the incremental run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pipeline.json")
    parser.add_argument("--no-incremental", action="store_true")
    parser.add_argument("--files", type=int, help="a smoke run: only the N smallest files, plus hh_rlhf "
                        "(the quality model's preference pairs); default all")
    parser.add_argument("--baseline", metavar="COMMIT", help="first the full run with this commit's code "
                        "(e.g. e00a9d6, the main when the speed target was set), then this checkout's: the speed-up")
    parser.add_argument("--outcome-of", type=Path, metavar="WORK", help="run nothing: write only what the "
                        "warehouse a run left under WORK holds (no timings), e.g. after a run resumed by hand")
    return parser.parse_args()


def with_targets(full: dict, incremental: dict) -> dict:
    ratio = incremental["wall_s"] / full["wall_s"]
    return incremental | {"rows_ingested": asset_rows(incremental, "raw_records"), "ratio": ratio,
                          "target": TARGET_INCREMENTAL_RATIO, "target_met": ratio < TARGET_INCREMENTAL_RATIO}


def export_commit(commit: str, code: Path) -> str:
    """``commit``'s tracked files into ``code`` (made here); its full hash."""
    resolved = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    code.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", resolved], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return resolved


def baseline_run(commit: str, work: Path, corpora: Path) -> dict:
    """The full run with ``commit``'s code, exported from git, on its own empty warehouse."""
    code = work / "baseline" / "code"
    resolved = export_commit(commit, code)
    env, log = child_env(work, corpora, data=work / "baseline" / "data", code=code), work / "baseline" / "run-full.log"
    print(f"baseline: {resolved[:12]}'s code in {code}; log: {log}")
    full, _ = measured_run(env, log, set())
    return {"commit": resolved, "code": str(code), "full": full}


def speedup(baseline: dict, full: dict) -> dict:
    ratio = baseline["full"]["wall_s"] / full["wall_s"]
    return {"ratio": ratio, "target": TARGET_SPEEDUP, "target_met": ratio >= TARGET_SPEEDUP}


def report(result: dict) -> str:
    """The tables and the verdicts on the targets."""
    full = result["full"]
    parts = [markdown(f"Full run, {result['files']} files", full)]
    if base := result.get("baseline"):
        parts.insert(0, markdown(f"Baseline full run, code at {base['commit'][:12]}", base["full"]))
    if inc := result.get("incremental"):
        parts.append(markdown(f"Incremental, + {result['hold_out']}", inc))
        parts.append(f"incremental / full = {inc['ratio']:.1%} (target < {inc['target']:.0%}: "
                     f"{'met' if inc['target_met'] else 'not met'})")
    parts.append(f"full run {fmt(full['wall_s'])} s (target < {TARGET_FULL_S} s: "
                 f"{'met' if result['target_met'] else 'not met'})")
    if up := result.get("speedup"):
        parts.append(f"speed-up over {result['baseline']['commit'][:12]}: {up['ratio']:.2f}x "
                     f"(target >= {up['target']}x: {'met' if up['target_met'] else 'not met'})")
    return "\n\n".join(parts)


def main() -> None:
    args = parse_args()
    if args.outcome_of:
        bench_env.write_result(args.out, {"benchmark": "what a run's warehouse holds (no timings)",
                                          "work": str(args.outcome_of), "outcome": outcome(args.outcome_of / "data")})
        print(f"results in {args.out}")
        return
    corpora = args.corpora.resolve()
    relpaths = corpus_files(corpora, args.hold_out, args.files)
    work = (args.work or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))).resolve()
    prepare_work(work, args.force)
    copy_files(corpora, relpaths, work / "raw")
    env = child_env(work, corpora)
    result = {
        "benchmark": "the whole graph from an empty warehouse, then one new file (incremental)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "child_command": "python -m sft_assets run",
        "machine": machine(),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()},
        "corpora": str(corpora),
        "files": len(relpaths),
        "hold_out": args.hold_out,
        "slice": relpaths if args.files is not None else None,
        "work": str(work),
        "target_full_s": TARGET_FULL_S,
    }
    print(f"{len(relpaths)} files copied to {work / 'raw'} ({args.hold_out} held out); log: {work / 'run-full.log'}")
    if args.baseline:
        result["baseline"] = baseline_run(args.baseline, work, corpora)
        bench_env.write_result(args.out, result)  # kept should the run below fail

    full, runs = measured_run(env, work / "run-full.log", set())
    result |= {"rows_ingested": asset_rows(full, "raw_records"), "full": full,
               "target_met": full["wall_s"] < TARGET_FULL_S, "outcome": outcome(work / "data")}
    if args.baseline:
        result["speedup"] = speedup(result["baseline"], full)
    if not args.no_incremental:
        copy_files(corpora, [args.hold_out], work / "raw")
        result["incremental"] = with_targets(full, measured_run(env, work / "run-incremental.log", runs)[0])
    result["machine"]["load_average_end"] = os.getloadavg()

    bench_env.write_result(args.out, result)
    print("\n" + report(result) + f"\n\nresults in {args.out}")


if __name__ == "__main__":
    main()
