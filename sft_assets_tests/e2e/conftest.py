"""A real ``dagster dev`` (webserver, daemon, code server) on the bundled sample, shared by the live
and browser tests: what ``make ui`` starts, on a free loopback port and a temporary instance."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sft_assets.sample import write_sample

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
BIN = Path(sys.executable).parent


def wait_for(check, timeout: float, what: str, interval: float = 2.0):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


@dataclass
class LiveDagster:
    url: str
    data: Path

    def graphql(self, query: str, **variables) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"query": query, "variables": variables}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def location_loaded(self) -> bool:
        try:
            entries = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
                loadStatus locationOrLoadError { __typename } } } } }""")["workspaceOrError"]["locationEntries"]
        except OSError:
            return False
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries) and all(
            e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def _started_by(process: subprocess.Popen) -> list[psutil.Process]:
    """Every process of the session ``process`` leads, and its descendants wherever they went."""
    try:
        leader = psutil.Process(process.pid)
        family = {p.pid: p for p in [leader, *leader.children(recursive=True)]}
    except psutil.NoSuchProcess:
        family = {}
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == process.pid:
                family.setdefault(p.pid, p)
        except (ProcessLookupError, PermissionError):
            pass
    return list(family.values())


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (dagster dev shuts its services down), SIGKILL whatever is left after
    a bounded wait, and fail if anything it started outlives that."""
    started = _started_by(process)
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    _, left = psutil.wait_procs(_alive(started + _started_by(process)), timeout=20)
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=10)
    process.wait(timeout=10)
    left = _alive(started + _started_by(process))
    assert not left, f"processes left running: {[p.cmdline() for p in left]}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def live_dagster(tmp_path_factory, artifacts, sample_cache):
    """The sample materialized by ``sft-assets run`` into a fresh instance, then ``dagster dev`` on it."""
    root = tmp_path_factory.mktemp("live")
    data = root / "data"
    write_sample(data)
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), "SFT_ASSETS_DATA": str(data),
           "SFT_ASSETS_CACHE": str(sample_cache), "SFT_ASSETS_SENSOR_SECONDS": "3",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = artifacts / "dagster_dev.log"
    with log.open("wb") as out:
        # dagster.yaml exactly as `make ui` writes it, then everything materialized, recorded in the instance
        for command in (["home"], ["run"]):
            subprocess.run([sys.executable, "-m", "sft_assets", *command], cwd=REPO, env=env, stdout=out,
                           stderr=subprocess.STDOUT, check=True, timeout=900)
        port = _free_port()
        process = subprocess.Popen([str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=REPO,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    live = LiveDagster(url=f"http://127.0.0.1:{port}", data=data)

    def ready() -> bool:
        assert process.poll() is None, f"dagster dev exited with {process.returncode}, see {log}"
        return live.location_loaded()

    try:
        wait_for(ready, 240, "dagster dev to load the code location")
        yield live
    finally:
        stop(process)
