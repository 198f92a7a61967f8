"""Command line: ``sft-assets run`` brings every asset up to date with the raw root.

It registers one partition per file (the same rule as the sensor) and records each file's content
hash as the data version of its ``raw_files`` partition. Then, phase by phase, it materializes what
Dagster marks unsynced (missing, a new code version, or an input with a new data version): the UI's
"unsynced" marks and this command agree. A rerun with nothing changed runs nothing; after one new
file it ingests, embeds and scores that file and rebuilds the pool-wide assets whose inputs changed.
Everything is recorded in the persistent Dagster instance under ``DAGSTER_HOME``, so the UI shows it.

A person sees one progress display per phase and a summary at the end; Dagster's event stream goes
to a log file under ``data/logs/`` (``-v``: to the terminal as well).
"""

import argparse
import contextlib
import importlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.temporal_context import TemporalContext
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sft_assets.core.rawfiles import content_hash
from sft_assets.defs.ingest import observe_raw_file, observed_version
from sft_assets.defs.partitions import corpus_partitions, step_progress
from sft_assets.defs.versions import USER_VERSIONED


DAGSTER_YAML = """\
# Written by sft-assets: a persistent local instance, no telemetry.
telemetry:
  enabled: false
# 2 cores: a burst of new files queues instead of running one ingest each at once.
concurrency:
  runs:
    max_concurrent_runs: 2
"""
RESUME = "Fix the cause and run `make run` (python -m sft_assets run) again: finished work is kept and not redone."


def ensure_home() -> Path:
    """The persistent DAGSTER_HOME under data/ (never a temp dir), with its dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster_home").absolute())))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    return home


def _instance() -> dg.DagsterInstance:
    ensure_home()
    return dg.DagsterInstance.get()


def sync_partitions(instance: dg.DagsterInstance, defs: dg.Definitions, say=print) -> tuple[dict[str, Path], list[str]]:
    """Register a partition per file under the raw root, drop partitions whose file is gone, and record
    the content hash of each new or changed file. Returns the files by partition key and the keys dropped."""
    scan = defs.resources["raw_root"].scan()
    for relpath, why in scan.refused.items():
        say(f"  refused {relpath}: {why}")
    existing = set(instance.get_dynamic_partitions(corpus_partitions.name))
    instance.add_dynamic_partitions(corpus_partitions.name, sorted(set(scan.files) - existing))
    removed = sorted(existing - set(scan.files))
    store = defs.resources["warehouse"].warehouse()
    for key in removed:
        store.delete_partition(key)
        instance.delete_dynamic_partition(corpus_partitions.name, key)
    for key, raw in sorted(scan.files.items()):
        sha = content_hash(raw.path)
        if observed_version(instance, key) != sha:
            instance.report_runless_asset_event(observe_raw_file(key, sha))
    return {key: scan.files[key].path for key in sorted(scan.files)}, removed


def _resolver(instance: dg.DagsterInstance, graph) -> CachingStaleStatusResolver:
    """Dagster's own staleness rules, as the UI evaluates them, on the instance as it is now."""
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def unsynced(instance: dg.DagsterInstance, graph, keys: list[dg.AssetKey], partition: str | None,
             forced: set[dg.AssetKey] = frozenset(), resolver: CachingStaleStatusResolver | None = None
             ) -> set[dg.AssetKey]:
    """Which of ``keys`` (one phase's assets) Dagster marks missing or unsynced for ``partition``, plus
    ``forced``, widened to whole multi-assets (they materialize together)."""
    resolver = resolver or _resolver(instance, graph)
    found = {k for k in keys if k in forced
             or resolver.get_status(k, partition) in (StaleStatus.MISSING, StaleStatus.STALE)}
    return {member for k in found for member in graph.get(k).execution_set_asset_keys if member in keys}


def with_followers(graph, keys: list[dg.AssetKey], selection: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """``selection`` and the phase's assets downstream of it whose data version is computed from their inputs':
    a rebuilt input surely makes them unsynced, so they go in the same run. Below an asset that states its own
    data version (e.g. the diverse subset's picks), only a changed version does: the next round decides."""
    selected = set(selection)
    for key in graph.toposorted_asset_keys:
        if key in keys and key not in selected and any(
                p in selected and p.to_user_string() not in USER_VERSIONED for p in graph.get(key).parent_keys):
            selected.add(key)
    return selected


def settled(graph, keys: list[dg.AssetKey], selection: set[dg.AssetKey]) -> bool:
    """Whether a run of ``selection`` leaves nothing of the phase to recheck: it holds every phase asset
    downstream of its members. Only an asset that states its own data version (``with_followers`` stops
    there) can leave a child out, and only then can the run make one unsynced."""
    return all(child in selection for key in selection for child in graph.get(key).child_keys if child in keys)


def _pool_inputs_moved(instance: dg.DagsterInstance, graph, keys: list[dg.AssetKey], removed: list[str]
                       ) -> set[dg.AssetKey]:
    """Pool-wide assets reading every partition of a file-partitioned input that Dagster cannot see change:
    a file was removed (no event), or, past 100 files, Dagster stops comparing the partitions' versions.
    Such an asset is rebuilt when a partition was removed or is newer than its own materialization."""
    moved = set()
    for key in keys:
        node = graph.get(key)
        parents = [p for p in node.parent_keys if graph.has(p) and graph.get(p).partitions_def is not None]
        if node.partitions_def is not None or not parents:
            continue
        own = instance.get_latest_materialization_event(key)
        newest = [instance.get_latest_materialization_event(p) for p in parents]
        if removed or (own and any(e and e.timestamp > own.timestamp for e in newest)):
            moved.add(key)
    return moved


@dataclass
class RunLog:
    """Where a run's details go: the log file (Dagster's events, model loading) and the person's terminal."""

    path: Path
    verbose: bool
    console: Console
    failures: list[str] = field(default_factory=list)
    elapsed: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def capture(self):
        """Dagster's event stream and library output into the log file (and, with -v, the terminal too)."""
        if self.verbose:
            yield
            return
        with open(self.path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            yield

    def failure(self, phase: str, keys: list[str | None], result) -> None:
        where = ("the pool-wide assets" if keys == [None] else f"file {keys[0]!r}" if len(keys) == 1
                 else f"{len(keys)} files in one step, {keys[0]!r} to {keys[-1]!r}")
        steps = [(e.step_key, _first_line(_raised(e.event_specific_data.error).message))
                 for e in result.get_step_failure_events()] or [("run", "failed before any step, see the log")]
        for step, why in steps:
            self.failures.append(f"{phase}: {where}, step {step}: {why}")
            self.console.print(f"[red]FAILED[/red] {self.failures[-1]}")


def _raised(error):
    """The error the step's own code raised, under the Dagster error that wraps it (whose first line only
    says that an op failed)."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error


def _first_line(message: str) -> str:
    """An error's first line, without the module path of its class (and without the class of a dg.Failure,
    whose description already says what went wrong)."""
    line = message.strip().splitlines()[0]
    return re.sub(r"^(?:\w+\.)+(\w+): ", lambda m: "" if m.group(1) == "Failure" else f"{m.group(1)}: ", line)


def _rows(result, asset: str) -> int:
    """Rows the run wrote to ``asset`` (from its materializations' metadata, summed over partitions), 0 if none."""
    rows = 0
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            count = materialization.metadata.get("dagster/row_count")
            rows += int(count.value) if count is not None else 0
    return rows


def step_line(what: str, done: int, of: int, seconds: float) -> str:
    """The progress line's text for a step over many files: rows scored, and the time left at the rate so far
    (the bar itself moves only when the step ends)."""
    left = f", {timedelta(seconds=round((of - done) * seconds / done))} left" if 0 < done < of else ""
    return f"{what}: {done:,}/{of:,} rows scored{left}"


def _batches(graph, keys: list[dg.AssetKey], todo: dict, order: list[str]) -> list[tuple[list[str], set]]:
    """The runs of a per-file phase, as (files, assets). One per file; but where every asset of the phase
    takes many files in one step (a single-run backfill policy), one per stretch of files that are next to
    each other in the instance's partition order (a run takes a range) and need the same assets: after the
    pool moved, that is one run over every file."""
    one_step = all(graph.get(k).backfill_policy == dg.BackfillPolicy.single_run() for k in keys)
    if not one_step:
        return [([p], s) for p, s in todo.items()]
    batches, previous, ordered = [], None, set(order)
    for partition in [*order, *(p for p in todo if p not in ordered)]:
        if partition in todo and previous in todo and batches[-1][1] == todo[partition]:
            batches[-1][0].append(partition)
        elif partition in todo:
            batches.append(([partition], todo[partition]))
        previous = partition
    return batches


def _execute(job, instance: dg.DagsterInstance, files: list[str], selection: set[dg.AssetKey]):
    """One run of ``job`` over ``files`` (a partition, or a range of them) for ``selection``."""
    where = {"partition_key": files[0]} if len(files) == 1 else {"tags": {
        ASSET_PARTITION_RANGE_START_TAG: files[0], ASSET_PARTITION_RANGE_END_TAG: files[-1]}}
    return job.execute_in_process(instance=instance, asset_selection=sorted(selection, key=lambda k: k.path),
                                  raise_on_error=False, **where)


def _run_phase(name: str, per_corpus: bool, defs: dg.Definitions, instance: dg.DagsterInstance,
               files: dict[str, Path], removed: list[str], every_partition: bool, log: RunLog) -> bool:
    """Materialize the phase's unsynced assets (per file, or pool-wide) until none is left; False on a failure."""
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(name)
    keys = sorted(job.asset_layer.selected_asset_keys, key=lambda k: k.to_user_string())
    partitions = list(files) if per_corpus else [None]
    forced = set(keys) if every_partition else set()
    if not per_corpus:  # a volatile root (reads files outside Dagster, e.g. the curated set) always reruns
        forced |= {k for k in keys if not graph.get(k).parent_keys} | _pool_inputs_moved(instance, graph, keys, removed)
    resolver = _resolver(instance, graph)  # one for the whole scan: it caches what the partitions share
    todo = {p: with_followers(graph, keys, s) for p in partitions
            if (s := unsynced(instance, graph, keys, p, forced, resolver))}
    if not todo:
        log.console.print(f"{name}: up to date")
        return True
    batches = _batches(graph, keys, todo, instance.get_dynamic_partitions(corpus_partitions.name)) \
        if per_corpus else [([None], todo[None])]
    unit = "files" if per_corpus else "steps"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  TextColumn("{task.fields[step]}"), console=log.console, transient=False) as progress:
        total = len(todo) if per_corpus else sum(len(s) for s in todo.values())
        task = progress.add_task(name, total=total, rate="", step="")

        step_started: dict[str, float] = {}

        def step_done(what: str, done: int, of: int) -> None:  # a step over many files moves the bar only at its end
            now = time.perf_counter()
            if done == 0:
                step_started[what] = now
            progress.update(task, step=step_line(what, done, of, now - step_started.get(what, now)))

        rows, started = 0, time.perf_counter()
        for batch, selection in batches:
            while selection:  # what the run made unsynced downstream within the phase (a new data version)
                reporting = step_progress.set(step_done)
                try:
                    with log.capture():
                        result = _execute(job, instance, batch, selection)
                finally:
                    step_progress.reset(reporting)
                if not result.success:
                    log.failure(name, batch, result)
                    break
                rows += _rows(result, "raw_records" if name == "update_corpus" else "quality_labels")
                if not per_corpus:
                    progress.advance(task, len(selection))
                if settled(graph, keys, selection):
                    break
                done, after = selection, _resolver(instance, graph)
                selection = set().union(*(with_followers(graph, keys, unsynced(instance, graph, keys, p, resolver=after)
                                                         - done) for p in batch))
                if not per_corpus:
                    progress.update(task, total=progress.tasks[0].total + len(selection))
            if per_corpus:
                progress.advance(task, len(batch))
            seconds = time.perf_counter() - started
            progress.update(task, rate=f"{rows / seconds:,.0f} rows/s" if per_corpus and rows else "")
    return not log.failures


def run_all(start: str | None = None, until: str | None = None, defs: dg.Definitions | None = None,
            instance: dg.DagsterInstance | None = None, every_partition: bool = False, verbose: bool = False,
            log_dir: Path | None = None, console: Console | None = None) -> int:
    from sft_assets.definitions import PHASES, defs as default_defs

    defs = defs or default_defs
    instance = instance or _instance()
    console = console or Console(file=sys.stdout, highlight=False, soft_wrap=True)
    names = [phase[0] for phase in PHASES]
    for given in (start, until):
        if given is not None and given not in names:
            raise SystemExit(f"--from and --until take one of {names}, not {given!r}")
    exports = defs.resources["export_folder"].path  # its parent is data/ unless moved to object storage
    log_dir = log_dir or (Path(exports).parent if "://" not in exports
                          else Path(os.environ.get("SFT_ASSETS_DATA", "data")).absolute()) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(log_dir / f"run-{datetime.now():%Y%m%d-%H%M%S}.log", verbose, console)
    console.print(f"Dagster's event log: {log.path}" + ("" if verbose else " (-v: on the terminal too)"))

    files, removed = sync_partitions(instance, defs, say=console.print)
    console.print(f"{len(files)} corpus files under the raw root; {len(removed)} partitions dropped")
    for name, per_corpus, _, _ in PHASES[names.index(start) if start else 0: names.index(until) + 1 if until else None]:
        started = time.perf_counter()
        ok = _run_phase(name, per_corpus, defs, instance, files, removed if not per_corpus else [], every_partition, log)
        log.elapsed[name] = time.perf_counter() - started
        if not ok:
            # the pool-wide phases would work from an incomplete set of files, and selection would decide
            # on rows without their scores: stop here rather than export them
            console.print(f"[red]Stopped after {name}[/red]: {len(log.failures)} failure(s), nothing exported.")
            console.print(f"Details: {log.path}\n{RESUME}")
            return 1
    summary(defs, log)
    return 0


def _count(con, table: str) -> int | None:
    try:
        return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    except Exception:  # the table does not exist yet (a partial run with --until)
        return None


def summary(defs: dg.Definitions, log: RunLog) -> None:
    """What the run produced and where, from the warehouse's DuckDB catalog."""
    import duckdb
    import polars as pl

    from sft_assets.core.selection import reason_counts

    warehouse = defs.resources["warehouse"]
    warehouse.refresh_catalog()
    print_ = log.console.print
    print_("\n[bold]Summary[/bold]")
    if Path(warehouse.catalog_path).exists():
        con = duckdb.connect(warehouse.catalog_path, read_only=True)
        try:
            normalized, quarantined = _count(con, "raw_records"), _count(con, "quarantined_records")
            if normalized is not None:
                print_(f"  rows read       {normalized + (quarantined or 0):,} ({quarantined or 0:,} quarantined)")
            print_(f"  pool            {_count(con, 'candidate_pool') or 0:,} rows")
            print_("  kept            " + ", ".join(f"{label} {_count(con, table) or 0:,}" for label, table in (
                ("SFT", "sft_dataset"), ("RM", "rm_dataset"), ("PPO", "ppo_prompts"))))
        finally:
            con.close()
    store = warehouse.warehouse()
    if store.exists("selection_decisions"):
        top = reason_counts(store.read("selection_decisions", columns=["record_id", "reasons"])).filter(
            pl.col("first") > 0).sort("first", descending=True).head(5)
        print_("  top drop reasons " + ", ".join(f"{r} {n:,}" for r, n in zip(top["reason"], top["first"])))
    print_("  elapsed         " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in log.elapsed.items()))
    print_(f"  exports         {defs.resources['export_folder'].path}")
    print_(f"  event log       {log.path}")
    print_("  inspect         make ui (Dagster UI on http://127.0.0.1:3000)")


def _run_command(args: argparse.Namespace) -> int:
    return run_all(start=args.start, until=args.until, every_partition=args.every_partition, verbose=args.verbose)


def _home_command(args: argparse.Namespace) -> int:
    print(ensure_home())
    return 0


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", metavar="JOB", help="start at this job (earlier results are reused)")
    parser.add_argument("--until", metavar="JOB", help="stop after this job (update_corpus, analyze_pool, "
                        "score_corpus, select_and_export)")
    parser.add_argument("--every-partition", action="store_true",
                        help="rebuild every asset of the jobs run, for every file, synced or not")
    parser.add_argument("-v", "--verbose", action="store_true", help="Dagster's event stream on the terminal too")


# name -> (help, add its arguments, run it). A subcommand with a module of its own: (help, None, "module"),
# whose main(argv) gets the rest of the command line.
SUBCOMMANDS = {
    "run": ("materialize every asset on the raw root that is missing or unsynced", _run_arguments, _run_command),
    "home": ("create the persistent DAGSTER_HOME and print it", None, _home_command),
    "judge": ("score preference files with the materialized quality judge", None, "sft_assets.judge"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS and isinstance(SUBCOMMANDS[argv[0]][2], str):
        return importlib.import_module(SUBCOMMANDS[argv[0]][2]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="sft-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, arguments, _) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=text)
        if arguments:
            arguments(command)
    args = parser.parse_args(argv)
    return SUBCOMMANDS[args.command][2](args)


if __name__ == "__main__":
    raise SystemExit(main())
