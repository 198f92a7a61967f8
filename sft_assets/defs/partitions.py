import warnings
from collections.abc import Callable
from contextvars import ContextVar

import dagster as dg
import polars as pl

# One partition per file under the raw root, keyed by its relative path.
corpus_partitions = dg.DynamicPartitionsDefinition(name="corpus")


# Set by whoever runs a step over many files in this process (``sft-assets run``'s progress display) to hear
# how far it is; unset under the daemon and the UI, whose event log is the record.
step_progress: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("step_progress", default=None)


def report_progress(what: str, done: int, total: int) -> None:
    """Tell the display, if any, that ``what`` has done ``done`` of ``total`` (e.g. rows scored)."""
    if (report := step_progress.get()) is not None:
        report(what, done, total)


def scored_per_file(**asset_kwargs) -> Callable:
    """``dg.asset`` for a per-file scoring asset that one step runs over many files at once (a single-run
    backfill): when the pool moves, every file's scores are due, and one step per file re-read the pool-wide
    inputs, loaded the model and drew its plots 182 times on the whole corpora. The step returns
    ``per_file_tables``. Dagster flags the policy as beta; the warning would reach every ``make run``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(partitions_def=corpus_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
                        **asset_kwargs)


def per_file_tables(context: dg.AssetExecutionContext, frame: pl.DataFrame,
                    finish: Callable[[str, pl.DataFrame], tuple[pl.DataFrame, dict]]) -> dict[str, pl.DataFrame]:
    """``frame`` (with a ``corpus`` column: the file) split into one table per partition of the run, an
    empty one for a file without rows, each finished by ``finish(key, table) -> (table, metadata)``; the metadata
    goes on that partition's materialization."""
    parts = frame.partition_by("corpus", as_dict=True, include_key=False)
    empty = frame.clear().drop("corpus")
    tables = {}
    for key in context.partition_keys:
        tables[key], metadata = finish(key, parts.get((key,), empty))
        context.add_asset_metadata(metadata, partition_key=key)
    return tables
