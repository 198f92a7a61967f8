"""What every benchmark sets up before its imports: models offline, the package importable from the
checkout without installing it, and where the shared corpora are; and what every results file records:
the commit its figures come from and whether the tree was clean (``write_result``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("SFT_ASSETS_CORPORA", REPO.parent / "shared" / "corpora"))


def source() -> dict:
    """The checkout's commit and whether it has changes beyond ``benchmarks/results/`` (which the run
    writes itself). ``clean`` is None where there is no git (a GPU machine given a copy of the tree)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changes = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "clean": None, "changes": []}
    return {"commit": commit, "clean": not changes, "changes": changes[:20]}


def _warn_if_dirty(state: dict) -> None:
    if state["clean"] is False:
        bar = "!" * 78
        print(f"{bar}\nWARNING: uncommitted changes; these figures will not match commit {state['commit'][:12]}:\n"
              + "\n".join(state["changes"]) + f"\nCommit first, then run the benchmark again.\n{bar}",
              file=sys.stderr, flush=True)


SOURCE = source()
_warn_if_dirty(SOURCE)


def write_result(path: Path, result: dict) -> None:
    """``result`` as JSON with the ``source`` it was measured on: clean only if the tree was clean both
    when the run started and when it ended."""
    end = source()
    state = {**SOURCE, "clean": SOURCE["clean"] and end["clean"] and end["commit"] == SOURCE["commit"]}
    _warn_if_dirty(state if state["clean"] is not False else {**state, "changes": SOURCE["changes"] or end["changes"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "source": state}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def alternating(options: dict, run, items: list, slices: int) -> tuple[dict, dict]:
    """Each option's outputs (one per slice) and seconds over the same items, slice by slice in turn, so a
    machine whose load changes during the run slows every option alike and the ratios stay fair."""
    import time

    import numpy as np

    outputs = {name: [] for name in options}
    seconds = dict.fromkeys(options, 0.0)
    for part in np.array_split(np.arange(len(items)), slices):
        for name, option in options.items():
            started = time.perf_counter()
            outputs[name].append(run(option, [items[i] for i in part]))
            seconds[name] += time.perf_counter() - started
    return outputs, seconds
