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


def test_a_step_reports_its_start_and_each_chunk_and_the_line_says_the_time_left(read_corpus, tmp_path):
    """The bar of a step over many files moves only when it ends, so the step reports its rows: once before the
    first chunk (the clock starts there, the model's loading included) and after each; the progress line shows
    the time left at the rate so far, and none once every row is scored."""
    from sft_assets.cli import step_line
    from sft_assets.defs.partitions import step_progress

    rows = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(50)
    reports = []
    reporting = step_progress.set(lambda what, done, of: reports.append((what, done, of)))
    try:
        cached_scores(rows, RowCache(str(tmp_path), "answer-chars"), SCHEMA, lambda m: m.select(
            "record_id", answer_chars=pl.col("output").str.len_chars().cast(pl.Int64)), chunk_rows=20, what="lengths")
    finally:
        step_progress.reset(reporting)
    assert reports == [("lengths", done, 50) for done in (0, 20, 40, 50)]
    assert step_line("ppl_scores", 20, 50, 60.0) == "ppl_scores: 20/50 rows scored, 0:01:30 left"
    assert step_line("ppl_scores", 256, 1_666, 400.0) == "ppl_scores: 256/1,666 rows scored, 0:36:43 left"
    assert step_line("ppl_scores", 0, 50, 0.0) == "ppl_scores: 0/50 rows scored"
    assert step_line("ppl_scores", 50, 50, 150.0) == "ppl_scores: 50/50 rows scored"


def test_a_step_over_many_files_writes_one_table_per_file_and_no_other(read_corpus, tmp_path):
    """The IO manager writes a step's dict of tables as one table per partition of the run, and refuses a dict
    whose keys are not the run's files (one missing, or one the run does not have) rather than leave a file
    without its table or write one outside the run."""
    import dagster as dg

    from sft_assets.core.storage import Warehouse
    from sft_assets.defs.partitions import corpus_partitions, per_file_tables, scored_per_file
    from sft_assets.defs.resources import ParquetIOManager, WarehouseResource

    records = pl.concat([read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(7),
                         read_corpus("gsm8k/gsm8k_train.tsv").records.head(5)])
    files = records["corpus"].unique(maintain_order=True).to_list()

    def lengths(context: dg.AssetExecutionContext) -> dict[str, pl.DataFrame]:
        frame = records.select("record_id", "corpus", answer_chars=pl.col("output").str.len_chars())
        return per_file_tables(context, frame, lambda key, table: (table, {"dagster/row_count": table.height}))

    def materialize(step) -> bool:
        asset = scored_per_file(name="answer_lengths")(step)
        return dg.materialize([asset], instance=instance, resources=resources, tags=tags, raise_on_error=False).success

    warehouse = WarehouseResource(base_uri=str(tmp_path / "warehouse"), catalog_path=str(tmp_path / "catalog.duckdb"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(corpus_partitions.name, [*files, "not_in_the_run.json"])
    tags = {"dagster/asset_partition_range_start": files[0], "dagster/asset_partition_range_end": files[-1]}
    resources = {"io_manager": ParquetIOManager(warehouse=warehouse)}
    store = Warehouse(tmp_path / "warehouse")

    def one_missing(context: dg.AssetExecutionContext):
        return dict(list(lengths(context).items())[:1])

    def one_outside(context: dg.AssetExecutionContext):
        return {**lengths(context), "not_in_the_run.json": records.head(0)}

    assert not materialize(one_missing) and not materialize(one_outside) and not store.partitions("answer_lengths")

    def right(context: dg.AssetExecutionContext):
        return lengths(context)

    assert materialize(right)
    assert store.partitions("answer_lengths") == sorted(files)
    assert [store.read("answer_lengths", file)["record_id"].to_list() for file in files] == \
        [records.filter(pl.col("corpus") == file)["record_id"].to_list() for file in files]
