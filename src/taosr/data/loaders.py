"""Read relevance data from the layouts we meet into `Record`s, without ever losing a row.

Every data row becomes a `Record` or a reject (file, row, field, reason, raw), so
``len(records) + len(rejects) == rows read``; rows the official ESCI loader filters out on purpose
are counted in ``skipped``. A file that is not what it claims to be raises one `DataError`.

The container comes from the extension (``fmt`` overrides it: jsonl, json, csv, tsv, parquet);
the layout comes from the columns:

* taosr: `Record`'s own field names (``attributes`` a JSON object, or a JSON string in CSV);
* ESCI merged: ``query, query_id, product_id, product_title, esci_label, ...`` in one file;
* OpenSearch judgments JSON: ids only, so every rating is rejected ("no product text (ids only)");
* ESCI official (two parquet files): `load_esci_official`; WANDS (a folder): `load_wands`.
"""

from __future__ import annotations

from pathlib import Path

from .readers import read_delimited, read_json, read_parquet
from .result import DataError, LoadResult
from .rows import build_records, builder_for
from .sources import load_wands

__all__ = ["DataError", "LoadResult", "load_records"]

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
            ".parquet": "parquet", ".pq": "parquet"}


def load_records(paths: list[str | Path] | str | Path, fmt: str = "auto", require_label: bool = False,
                 rejects_path: Path | None = None, read_labels: bool = True) -> LoadResult:
    """Load taosr / ESCI-merged / OpenSearch files (and WANDS folders) into one `LoadResult`.

    A bad row becomes a reject; an unusable file raises `DataError`. With ``rejects_path`` the
    rejects are always written there as JSONL (an empty file when there are none).
    ``read_labels=False`` leaves labels out (for scoring): an invalid label then rejects nothing.
    """
    res = LoadResult()
    for path in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if path.is_dir():
            res.merge(load_wands(path))
            continue
        kind = _FORMATS.get(path.suffix.lower()) if fmt == "auto" else fmt
        if kind in ("csv", "tsv"):
            columns, rows = read_delimited(path, "\t" if kind == "tsv" else None)
        elif kind in ("json", "jsonl"):
            columns, rows = read_json(path)
        elif kind == "parquet":
            table = read_parquet(path)
            columns, rows = table.column_names, [(i, r, None) for i, r in enumerate(table.to_pylist(), 1)]
        else:
            raise DataError(f"{path}: unknown format {kind or path.suffix!r} (use jsonl, json, csv, tsv or parquet)")
        build_records(res, str(path), rows, builder_for(columns, path), require_label, read_labels)
    if rejects_path is not None:
        res.write_rejects(rejects_path)
    return res
