"""The readable summary of a data run that the CLI prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_quality_summary(report: dict[str, Any], console: Console) -> None:
    """Rows in/out per table, then every fix and set-aside reason with its count."""
    overview = Table(title="Data quality", show_lines=False)
    for column in ("table", "rows in", "rows out", "set aside", "fixes"):
        overview.add_column(column, justify="right" if column != "table" else "left")
    for name, table in report["tables"].items():
        overview.add_row(
            name,
            f"{table['rows_in']:,}",
            f"{table['rows_out']:,}",
            f"{table['rows_set_aside']:,}",
            f"{sum(table['fixes'].values()):,}",
        )
    console.print(overview)

    detail = Table(title="What was done", show_lines=False)
    for column in ("table", "kind", "what", "count"):
        detail.add_column(column, justify="right" if column == "count" else "left")
    for name, table in report["tables"].items():
        for kind, count in table["fixes"].items():
            detail.add_row(name, "fix", kind, f"{count:,}")
        for reason, count in table["set_aside"].items():
            detail.add_row(name, "set aside", reason, f"{count:,}")
        for column, record in table["imputed"].items():
            if record.get("count"):
                how = record["method"] + (f" by {record['by']}" if record.get("by") else "")
                detail.add_row(name, "imputed", f"{column} ({how})", f"{record['count']:,}")
        for column, record in table["outliers"].items():
            detail.add_row(name, "outlier flag", column, f"{record['count']:,}")
    console.print(detail)
    dedup = report["tables"].get("customers", {}).get("notes", {}).get("dedup")
    if dedup:
        console.print(
            f"Duplicates: {dedup['records_merged_into_another']:,} customer records merged "
            f"({dedup['exact_email_links']:,} exact email links, {dedup['fuzzy_links']:,} fuzzy "
            f"links at threshold {dedup['threshold']})."
        )
    if report.get("set_aside_files"):
        files = ", ".join(report["set_aside_files"].values())
        console.print(f"Rows set aside (with reasons and source rows): {files}")
