"""Seeded draws keyed by a row's identity, so that adding rows leaves every other row's draw as it was.

A seeded permutation of n rows changes for every row when one row is added: a sample, a held-out split or
a fold drawn from it starts over, and everything trained or scored on it is redone. A hash of (seed, key)
does not: a sample of the k smallest draws, or a split of the smallest fraction, changes only where the new
rows enter (the rows they displace at the boundary), which is what a new corpus file should cost.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def key_draws(keys: Iterable[str], seed: int = 0) -> np.ndarray:
    """A uniform 64-bit draw per key (e.g. a record id or a text), the same for the same (seed, key)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode("utf-8"), digest_size=8).digest(),
                                    "big") for key in keys], dtype=np.uint64)


def smallest_draws(draws: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest draws, in draw order (ties by position)."""
    return np.argsort(np.asarray(draws), kind="stable")[: max(0, k)]


def draw_rng(key: str, seed: int = 0) -> np.random.Generator:
    """A generator of its own per key: a row's random damage does not depend on the rows beside it."""
    return np.random.default_rng(int(key_draws([key], seed)[0]))


def redraw(draws: np.ndarray, purpose: int) -> np.ndarray:
    """Draws for another purpose from the same rows (splitmix64 of draw + purpose): as stable as ``draws``
    but independent of them, so rows chosen for one purpose (e.g. held out: the smallest draws) are not
    over-represented when choosing for another (e.g. a sample of the same rows)."""
    with np.errstate(over="ignore"):
        z = np.asarray(draws, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(purpose + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
