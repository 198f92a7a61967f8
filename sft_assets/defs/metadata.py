"""What every materialization shows in the UI: row count, schema, a preview."""


import dagster as dg
import polars as pl

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 80


def _cell(value) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def markdown_table(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def table_metadata(frame: pl.DataFrame, preview_columns: list[str] | None = None) -> dict:
    """Standard metadata for a table asset."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    shown = frame.select(preview_columns) if preview_columns else frame
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(markdown_table(shown)),
    }
