"""Ingest: each raw file becomes a partition of normalized records and quarantine rows."""


import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG, extract_data_version_from_entry

from sft_assets.core.rawfiles import content_hash, relpath_of
from sft_assets.core.readers import UnreadableFile, read_file, unaccounted_units
from sft_assets.defs.metadata import markdown_table, table_metadata
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.resources import RawRoot

RECORD_PREVIEW = ["record_id", "kind", "lang", "category", "source_row", "instruction", "prompt", "question"]


raw_files = dg.AssetSpec(
    "raw_files",
    partitions_def=corpus_partitions,
    group_name="ingest",
    description="The files under the raw root, one partition each; the data version of a partition is the "
    "file's SHA-256, recorded by raw_files_sensor and `sft-assets run` when a file is new or its content "
    "changed. A new version marks the file's records, and what depends on them, unsynced.",
)


def observe_raw_file(key: str, sha: str) -> dg.AssetObservation:
    """The event that records a file's content hash as the data version of its ``raw_files`` partition."""
    return dg.AssetObservation(asset_key=raw_files.key, partition=key, tags={DATA_VERSION_TAG: sha})


def observed_version(instance: dg.DagsterInstance, key: str) -> str | None:
    """The content hash last recorded for a file (None: never observed)."""
    record = instance.get_latest_data_version_record(raw_files.key, True, key)
    version = extract_data_version_from_entry(record.event_log_entry) if record else None
    return version.value if version else None


class IngestConfig(dg.Config):
    max_quarantine_share: float = 0.2
    """A file with more of its rows quarantined than this gets a warning check."""


@dg.multi_asset(
    outs={
        "raw_records": dg.AssetOut(
            description="Normalized records of one raw file (sft, preference or multiple_choice), "
            "keyed by a content hash, with lineage to the file and row.",
            kinds={"polars", "parquet"},
        ),
        "quarantined_records": dg.AssetOut(
            description="Rows of one raw file that could not be normalized, each with a reason, "
            "a detail, the byte offset or line when known, and the raw text.",
            kinds={"polars", "parquet"},
        ),
    },
    partitions_def=corpus_partitions,
    group_name="ingest",
    deps=[raw_files],
    check_specs=[
        dg.AssetCheckSpec("rows_conserved", asset="raw_records", blocking=True,
                          description="every unit of the file (array element, JSON line, CSV/TSV data row), "
                          "counted in a separate pass, is a normalized or a quarantined row"),
        dg.AssetCheckSpec("record_id_unique", asset="raw_records", blocking=True,
                          description="no record_id twice within the partition"),
        dg.AssetCheckSpec("quarantine_share", asset="quarantined_records",
                          description="warns when a large share of a file is quarantined"),
    ],
)
def ingest(context: dg.AssetExecutionContext, config: IngestConfig, raw_root: RawRoot):
    key = context.partition_key
    relpath = relpath_of(key)
    try:
        path = raw_root.path_for(key)
        sha = content_hash(path)
        result = read_file(path, relpath, raw_root.reader_options())
    except (UnreadableFile, PermissionError, FileNotFoundError) as exc:
        raise dg.Failure(description=f"{relpath}: {exc}") from exc
    records, quarantine = result.records, result.quarantine
    reasons = quarantine.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    missing, invented = unaccounted_units(result)
    counts = {
        "source_units": result.source_units,
        "rows_read": result.rows_read,
        "rows_normalized": records.height,
        "rows_quarantined": quarantine.height,
        "format": result.format,
        "content_sha256": sha,
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
    }
    kinds = records.group_by("kind").len().sort("kind")
    yield dg.Output(records, "raw_records", metadata={
        **table_metadata(records, [c for c in RECORD_PREVIEW if c in records.columns]),
        **counts,
        "rows_by_kind": dg.MetadataValue.md(markdown_table(kinds, rows=10)),
    })
    yield dg.Output(quarantine, "quarantined_records", metadata={
        **table_metadata(quarantine, ["source_row", "source_line", "reason", "detail"]),
        "reasons": dg.MetadataValue.md(markdown_table(reasons, rows=50)),
    })
    yield dg.AssetCheckResult(
        check_name="rows_conserved", asset_key="raw_records", passed=not missing and not invented,
        metadata={**counts, "units_without_a_row": len(missing), "rows_without_a_unit": len(invented),
                  "first_unaccounted": dg.MetadataValue.text(", ".join(map(str, (missing + invented)[:20])) or "none")},
    )
    duplicated = records.height - records["record_id"].n_unique()
    yield dg.AssetCheckResult(
        check_name="record_id_unique", asset_key="raw_records", passed=duplicated == 0,
        metadata={"duplicated_ids": duplicated},
    )
    share = quarantine.height / result.rows_read if result.rows_read else 1.0
    yield dg.AssetCheckResult(
        check_name="quarantine_share", asset_key="quarantined_records",
        passed=share <= config.max_quarantine_share, severity=dg.AssetCheckSeverity.WARN,
        metadata={"share": share, "threshold": config.max_quarantine_share},
    )


assets = [ingest]
sources = [raw_files]
