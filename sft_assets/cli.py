"""Command line: ``sft-assets run`` brings every asset up to date with the raw root.

It registers one partition per file (the same rule as the sensor), ingests and
embeds each new or changed file in one run, then builds the pool-wide assets, all
recorded in the persistent Dagster instance under ``DAGSTER_HOME`` so the UI
shows them. A second run after adding one file ingests, embeds and scores that
file (and any rows that entered the diverse subset), not the whole pool.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg

from sft_assets.core.rawfiles import content_hash
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.uncertainty import partitions_missing_scores


DAGSTER_YAML = """\
# Written by sft-assets: a persistent local instance, no telemetry.
telemetry:
  enabled: false
# 2 cores: a burst of new files queues instead of running one ingest each at once.
concurrency:
  runs:
    max_concurrent_runs: 2
"""


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


def ingested_hashes(instance: dg.DagsterInstance) -> dict[str, str]:
    """The content hash each partition was last ingested from, as recorded on its materialization."""
    hashes: dict[str, str] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_records")),
                                               limit=1000, cursor=cursor, ascending=True)
        for record in page.records:
            sha = record.asset_materialization.metadata.get("content_sha256")
            if sha is not None:
                hashes[record.asset_materialization.partition] = sha.value
        if not page.has_more:
            return hashes
        cursor = page.cursor


def sync_partitions(instance: dg.DagsterInstance, defs: dg.Definitions) -> tuple[dict[str, Path], list[str]]:
    """Register a partition per file under the raw root; drop partitions whose file is gone.
    Returns the files by partition key and the keys dropped."""
    scan = defs.resources["raw_root"].scan()
    for relpath, why in scan.refused.items():
        print(f"  refused {relpath}: {why}", file=sys.stderr)
    existing = set(instance.get_dynamic_partitions(corpus_partitions.name))
    instance.add_dynamic_partitions(corpus_partitions.name, sorted(set(scan.files) - existing))
    removed = sorted(existing - set(scan.files))
    store = defs.resources["warehouse"].warehouse()
    for key in removed:
        store.delete_partition(key)
        instance.delete_dynamic_partition(corpus_partitions.name, key)
    return {key: scan.files[key].path for key in sorted(scan.files)}, removed


def changed_files(files: dict[str, Path], instance: dg.DagsterInstance, store) -> list[str]:
    """Files never ingested, or whose content changed since they were."""
    hashes = ingested_hashes(instance)
    return [key for key, path in files.items()
            if not store.exists("raw_records", key) or hashes.get(key) != content_hash(path)]


def partitions_to_run(phase: str, files: dict[str, Path], changed: list[str], defs: dg.Definitions) -> list[str]:
    """The partitions a per-file phase must run: changed files, and those whose output is missing
    (a run that failed or was killed before it got there)."""
    store = defs.resources["warehouse"].warehouse()
    if phase == "update_corpus":
        return sorted(set(changed) | {key for key in files if not store.exists("embeddings", key)})
    return sorted(set(changed) | set(partitions_missing_scores(store, list(files))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sft-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every asset on the raw root")
    run.add_argument("--from", dest="start", metavar="JOB", help="start at this job (earlier results are reused)")
    run.add_argument("--until", metavar="JOB", help="stop after this job (update_corpus, analyze_pool, "
                     "score_corpus, select_and_export)")
    run.add_argument("--every-partition", action="store_true",
                     help="run the per-file jobs for every file, not only new or changed ones")
    sub.add_parser("home", help="create the persistent DAGSTER_HOME and print it")
    sub.add_parser("judge", add_help=False, help="score preference files with the materialized quality judge")
    args, rest = parser.parse_known_args(argv)
    if args.command == "judge":
        from sft_assets.judge import main as judge

        return judge(rest)
    args = parser.parse_args(argv)
    if args.command == "home":
        print(ensure_home())
        return 0
    return run_all(start=args.start, until=args.until, every_partition=args.every_partition)


def run_all(start: str | None = None, until: str | None = None, defs: dg.Definitions | None = None,
            instance: dg.DagsterInstance | None = None, every_partition: bool = False) -> int:
    from sft_assets.definitions import PHASES, defs as default_defs

    defs = defs or default_defs
    instance = instance or _instance()
    files, removed = sync_partitions(instance, defs)
    print(f"{len(files)} corpus files under the raw root; {len(removed)} partitions dropped")
    failed: list[str] = []
    names = [phase[0] for phase in PHASES]
    for given in (start, until):
        if given is not None and given not in names:
            raise SystemExit(f"--from and --until take one of {names}, not {given!r}")
    first = names.index(start) if start else 0
    # Later phases take changed files only when this call ingests them (--from a later phase: what is missing).
    changed = changed_files(files, instance, defs.resources["warehouse"].warehouse()) if first == 0 else []
    for name, per_corpus, _, _ in PHASES[first : names.index(until) + 1 if until else None]:
        started = time.perf_counter()
        job = defs.resolve_job_def(name)
        keys = [None]
        if per_corpus:
            keys = list(files) if every_partition else partitions_to_run(name, files, changed, defs)
            print(f"{name}: {len(keys)} of {len(files)} partitions to run")
        for key in keys:
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
            if not result.success:
                failed.append(f"{name}[{key}]" if key else name)
                print(f"  FAILED {failed[-1]}", file=sys.stderr)
        print(f"{name}: {time.perf_counter() - started:.1f} s")
        if failed and not per_corpus:
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
