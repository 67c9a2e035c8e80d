"""`taosr data inspect`: load files one by one and summarise rows, labels, query types and rejects."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .loaders import load_records
from .result import DataError, LoadResult


def inspect_files(paths: Iterable[str | Path], rejects_path: Path | None = None) -> dict:
    """Load each file on its own and summarise; a file's `DataError` lands in ``errors``, not raised."""
    res, errors = LoadResult(), {}
    for path in paths:
        try:
            res.merge(load_records([path]))
        except DataError as e:
            errors[str(path)] = str(e).removeprefix(f"{path}: ")
    if rejects_path is not None:
        res.write_rejects(rejects_path)
    return res.summary() | {"errors": errors}


def format_summary(summary: dict):
    """A rich Table of an `inspect_files` (or `LoadResult.summary`) dict."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{summary['records']} loaded, {summary['rejects']} rejected of {summary['rows']} rows")
    for name in ("", "rows", "loaded", "rejected"):
        table.add_column(name, justify="right" if name else "left", overflow="fold")
    for file, s in summary["files"].items():
        table.add_row(escape(file), str(s["rows"]), str(s["records"]), str(s["rejects"]))
    for file, message in summary.get("errors", {}).items():
        table.add_row(f"{escape(file)}\n[red]error: {escape(message)}[/red]", "-", "-", "-")
    for name, counts in (("label", summary["labels"]), ("query type", summary["query_types"]),
                         ("skipped", summary["skipped"]), ("rejected", summary["reject_reasons"])):
        if counts:
            table.add_section()
        for key, n in counts.items():
            table.add_row(escape(f"{name}: {key}"), "", *((str(n), "") if name != "rejected" else ("", str(n))))
    if summary.get("rejects_path"):
        table.add_row(escape(f"rejects written to {summary['rejects_path']}"), "", "", "")
    return table
