"""The readers over every file of the shared corpora, and the sensor's file scan, timed.

    nice -n 5 .venv/bin/python benchmarks/readers.py

Reads each file under ../shared/corpora with ``core.readers.read_file`` (what ``raw_records`` runs per
partition) and counts rows read, records and quarantine reasons (``duplicate_in_file`` per file too).
Then times the raw-files sensor's own work, ``scan_root`` + ``diff_scan``: a first tick (no cursor,
every file hashed) and a later one (the cursor from the first, nothing changed: stat only). Best of
``--repeats`` for each timing. Writes benchmarks/results/readers.json.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import bench_env

from sft_assets.core.rawfiles import diff_scan, relpath_of, scan_root  # noqa: E402
from sft_assets.core.readers import read_file  # noqa: E402


def read_all(root: Path) -> tuple[float, dict]:
    files = scan_root(root).files
    started = time.perf_counter()
    results = {key: read_file(raw.path, relpath_of(key)) for key, raw in files.items()}
    seconds = time.perf_counter() - started
    reasons: Counter = Counter()
    duplicates: Counter = Counter()
    for key, result in results.items():
        counts = result.quarantine["reason"].value_counts() if result.quarantine.height else None
        for reason, n in (counts.iter_rows() if counts is not None else ()):
            reasons[reason] += n
            if reason == "duplicate_in_file":
                duplicates[relpath_of(key)] += n
    records = sum(r.records.height for r in results.values())
    quarantined = sum(r.quarantine.height for r in results.values())
    return seconds, {"files": len(files), "rows_read": sum(r.rows_read for r in results.values()), "records": records,
                     "quarantined": quarantined, "quarantine_reasons": dict(reasons.most_common()),
                     "duplicate_in_file_by_file": dict(duplicates.most_common(5))}


def best(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=bench_env.HERE / "results" / "readers.json")
    args = parser.parse_args()
    root = bench_env.CORPORA
    timings, counts = [], {}
    for _ in range(args.repeats):
        seconds, counts = read_all(root)
        timings.append(seconds)
    cursor = diff_scan({}, scan_root(root)).state
    result = {
        "benchmark": __doc__.splitlines()[0],
        "command": f"nice -n 5 python benchmarks/readers.py --repeats {args.repeats}",
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start",
        "corpora": str(root),
        "readers": {**counts, "seconds_best": round(min(timings), 2), "seconds_runs": [round(t, 2) for t in timings]},
        "sensor_tick": {
            "first_s_best": round(best(args.repeats, lambda: diff_scan({}, scan_root(root))), 4),
            "unchanged_s_best": round(best(args.repeats, lambda: diff_scan(cursor, scan_root(root))), 4),
        },
        "load_average_end": os.getloadavg()[0],
    }
    print(result)
    bench_env.write_result(args.out, result)


if __name__ == "__main__":
    main()
