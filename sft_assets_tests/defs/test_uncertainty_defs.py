"""Model scores in one step over many files: cached a chunk at a time, each text scored once."""

import polars as pl
import pytest

from sft_assets.core.cache import RowCache
from sft_assets.defs.uncertainty import cached_scores

SCHEMA = {"record_id": pl.String, "answer_chars": pl.Int64}


def test_a_step_stopped_midway_keeps_every_chunk_scored_before_it(read_corpus, tmp_path):
    """One step scores every file's rows: a failure (or a kill) in its third chunk must not lose the first two, the
    error names the chunk's files, and the rerun scores only what is left. A text in two files is scored once and
    given to both."""
    first = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(50)
    copied = first.head(5).with_columns(corpus=pl.lit("copy.json"))  # the same records in another file
    rows = pl.concat([first, copied])
    cache, scored = RowCache(str(tmp_path), "answer-chars"), []

    def score(missing: pl.DataFrame, fail_at: int | None = None) -> pl.DataFrame:
        if len(scored) == fail_at:
            raise RuntimeError("stopped")
        scored.append(missing["record_id"].to_list())
        return missing.select("record_id", answer_chars=pl.col("output").str.len_chars().cast(pl.Int64))

    with pytest.raises(RuntimeError, match="scoring 10 rows of alpaca_en/alpaca_data-0-3252.json: stopped"):
        cached_scores(rows, cache, SCHEMA, lambda m: score(m, fail_at=2), chunk_rows=20)
    assert [len(chunk) for chunk in scored] == [20, 20]
    assert sorted(cache.get(rows["record_id"])["record_id"]) == sorted(sum(scored, []))

    frame, computed = cached_scores(rows, cache, SCHEMA, score, chunk_rows=20)
    assert computed.to_list() == first["record_id"].to_list()[40:] == scored[-1]
    assert frame.select("record_id", "corpus").equals(rows.select("record_id", "corpus"))
    assert frame["answer_chars"].to_list() == rows["output"].str.len_chars().to_list()
