"""The raw root as a set of partitions: one per file, keyed by its relative path.

Pure functions shared by the sensor and the command line, so both register
the same partitions. Paths are confined to the root: a link that points
outside it is refused, never followed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

# Files in a corpus folder that are not data.
DEFAULT_IGNORE = ("LICENSE*", "*LICENSE*", "README*", "*.md", ".*", "*.tmp")

# Substrings Dagster does not allow in a partition key.
_FORBIDDEN = ["..."] + [chr(c) for c in range(32)] + ["\x7f"]


def partition_key(relpath: str) -> str:
    """A relative path as a partition key; reversible with `relpath_of`."""
    key = relpath.replace("%", "%25")
    for bad in _FORBIDDEN:
        key = key.replace(bad, "".join(f"%{ord(c):02X}" for c in bad))
    return key


def relpath_of(key: str) -> str:
    return unquote(key)


@dataclass(frozen=True)
class RawFile:
    key: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class Scan:
    files: dict[str, RawFile] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # relpath -> why


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in ignore)


def scan_root(root: str | os.PathLike, ignore: tuple[str, ...] = DEFAULT_IGNORE) -> Scan:
    """Every data file under ``root`` (nested folders included), with links confined."""
    base = Path(root).resolve()
    scan = Scan()
    if not base.is_dir():
        raise FileNotFoundError(f"{root!s} is not a folder")
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if _ignored(name, ignore):
                continue
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(base):
                    scan.refused[rel] = f"link to {target} points outside the raw root"
                    continue
            if not path.is_file():
                continue
            stat = path.stat()
            key = partition_key(rel)
            scan.files[key] = RawFile(key, path, stat.st_size, stat.st_mtime_ns)
    return scan


def confine(root: str | os.PathLike, path: str | os.PathLike) -> tuple[Path, str]:
    """``path`` (relative to ``root``, or absolute) resolved, links followed, and its path under the root.

    Refuses anything that resolves outside the root, so no configured path or
    partition key reads a file elsewhere."""
    base = Path(root).resolve()
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base):
        raise PermissionError(f"{str(path)!r} resolves outside the raw root {base}")
    return resolved, resolved.relative_to(base).as_posix()


def resolve_in_root(root: str | os.PathLike, key: str) -> Path:
    """The file behind a partition key, refusing anything that resolves outside the root."""
    return confine(root, relpath_of(key))[0]


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    state: dict[str, list] = field(default_factory=dict)  # key -> [size, mtime_ns, sha256]


def diff_scan(previous: dict[str, list], scan: Scan) -> Changes:
    """What changed since ``previous`` (the sensor's cursor).

    A file is re-hashed only when its size or mtime moved, and counts as
    changed only when its content hash differs: touching a file does not
    rebuild it."""
    changes = Changes()
    for key, raw in scan.files.items():
        old = previous.get(key)
        if old is not None and old[0] == raw.size and old[1] == raw.mtime_ns:
            changes.state[key] = old
            continue
        sha = content_hash(raw.path)
        changes.state[key] = [raw.size, raw.mtime_ns, sha]
        if old is None:
            changes.added.append(key)
        elif old[2] != sha:
            changes.changed.append(key)
    changes.removed = sorted(set(previous) - set(scan.files))
    return changes
