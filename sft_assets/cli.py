"""Command line: ``sft-assets run`` materializes every asset on the raw root.

It registers one partition per file (the same rule as the sensor), ingests
each file in its own run, then builds the pool-wide assets, all recorded in
the persistent Dagster instance under ``DAGSTER_HOME`` so the UI shows them.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg

from sft_assets.defs.partitions import corpus_partitions


DAGSTER_YAML = """\
# Written by sft-assets: a persistent local instance, no telemetry.
telemetry:
  enabled: false
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


def sync_partitions(instance: dg.DagsterInstance, defs: dg.Definitions) -> tuple[list[str], list[str]]:
    """Register a partition per file under the raw root; drop partitions whose file is gone."""
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
    return sorted(scan.files), removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sft-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every asset on the raw root")
    run.add_argument("--from", dest="start", metavar="JOB", help="start at this job (earlier results are reused)")
    run.add_argument("--until", metavar="JOB", help="stop after this job (ingest_corpus, embed_corpus, "
                     "analyze_pool, score_corpus, select_and_export)")
    sub.add_parser("home", help="create the persistent DAGSTER_HOME and print it")
    args = parser.parse_args(argv)
    if args.command == "home":
        print(ensure_home())
        return 0
    return run_all(start=args.start, until=args.until)


def run_all(start: str | None = None, until: str | None = None, defs: dg.Definitions | None = None,
            instance: dg.DagsterInstance | None = None) -> int:
    from sft_assets.definitions import PHASES, defs as default_defs

    defs = defs or default_defs
    instance = instance or _instance()
    keys, removed = sync_partitions(instance, defs)
    print(f"{len(keys)} corpus files under the raw root; {len(removed)} partitions dropped")
    failed: list[str] = []
    names = [phase[0] for phase in PHASES]
    for given in (start, until):
        if given is not None and given not in names:
            raise SystemExit(f"--from and --until take one of {names}, not {given!r}")
    first = names.index(start) if start else 0
    for name, per_corpus, _, _ in PHASES[first : names.index(until) + 1 if until else None]:
        started = time.perf_counter()
        job = defs.resolve_job_def(name)
        for key in keys if per_corpus else [None]:
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
