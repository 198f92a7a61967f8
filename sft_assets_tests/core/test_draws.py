"""Seeded draws keyed by row identity: stable when rows are added, independent across purposes."""

import numpy as np

from sft_assets.core.draws import key_draws, redraw, smallest_draws


def test_a_sample_keeps_its_rows_when_rows_are_added():
    keys = [f"record-{i}" for i in range(10_000)]
    before = {keys[i] for i in smallest_draws(key_draws(keys), 500)}
    more = keys + [f"new-{i}" for i in range(1_000)]
    after = {more[i] for i in smallest_draws(key_draws(more), 500)}
    entered = {k for k in after if k.startswith("new-")}
    assert after - entered <= before and len(before - after) == len(entered) < 100


def test_a_redraw_is_independent_of_the_draws_it_comes_from():
    """Rows held out by their smallest draws make up their share (20 %) of a sample taken on a redraw, not all
    of it (the fault: sampling on the same draws puts every held-out row first; 100 % here)."""
    draws = key_draws([f"record-{i}" for i in range(100_000)])
    held = smallest_draws(draws, 20_000)
    share = np.isin(smallest_draws(redraw(draws, 1), 5_000), held).mean()
    assert 0.18 < share < 0.22, share
    assert np.isin(smallest_draws(draws, 5_000), held).mean() == 1.0
    assert np.array_equal(redraw(draws, 1), redraw(draws.copy(), 1)) and not np.array_equal(redraw(draws, 1),
                                                                                            redraw(draws, 2))
