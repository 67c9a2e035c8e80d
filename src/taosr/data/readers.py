"""Reading files into raw rows: text (CSV / TSV / JSON / JSON Lines) and Parquet; an unusable file is a `DataError`.

Text is decoded row by row in effect: bytes that are not UTF-8 are kept as lone surrogates
(`surrogateescape`), and the row that holds them is rejected with the byte named (`rows._decoded`),
so one bad byte costs its row, never the file. A NUL inside a field rejects its row too; a file with
many such bytes (`not_text`: UTF-16, or not text at all) is refused whole.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .result import DataError
from .rows import Row

CONTROL = bytes([*range(0, 9), *range(14, 27), *range(28, 32)])  # not in text (tab, newlines, ESC are)


def not_text(head: bytes) -> bool:
    """Whether a file's first bytes are binary (or UTF-16): over a tenth (and over 4) of them are control bytes or
    bytes that are not UTF-8. A stray NUL or bad byte in a text file is left to reject its row."""
    controls = sum(head.count(b) for b in CONTROL)
    undecodable = sum(0xDC80 <= ord(c) <= 0xDCFF for c in head.decode("utf-8", "surrogateescape"))
    return controls + undecodable > max(4, len(head) // 10)


def read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    if data.startswith(b"PAR1"):
        raise DataError(f"{path}: is a Parquet file, not text (name it .parquet or pass fmt='parquet')")
    if not_text(data[:8192]):
        raise DataError(f"{path}: binary data, not a text file (UTF-16 text must be converted to UTF-8)")
    text = data.decode("utf-8-sig", errors="surrogateescape")  # a bad byte rejects its row (rows._decoded)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def read_delimited(path: Path, delimiter: str | None = None) -> tuple[list[str], list[Row]]:
    """Header and rows of a CSV/TSV (tabs sniffed from the header); a short/long row is an error."""
    text = read_text(path)
    first = text.split("\n", 1)[0]
    delimiter = delimiter or ("\t" if "\t" in first and "," not in first else ",")
    csv.field_size_limit(1 << 30)
    try:
        lines = [v for v in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if v]
    except csv.Error as e:
        raise DataError(f"{path}: unreadable CSV: {e}") from None
    header = [h.strip() for h in lines[0]]
    n = len(header)
    return header, [(i, dict(zip(header, v)) | ({"_extra": v[n:]} if len(v) > n else {}),
                     None if len(v) == n else f"expected {n} fields, got {len(v)}") for i, v in enumerate(lines[1:], 1)]


def _as_row(i: int, x: Any) -> Row:
    return (i, x, None) if isinstance(x, dict) else (i, {"value": x}, "not a JSON object")


def _json_line(i: int, line: str) -> Row:
    try:
        return _as_row(i, json.loads(line))
    except json.JSONDecodeError as e:
        return i, {"line": line}, f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return i, {"line": line}, "invalid JSON: nested too deeply"


def read_json(path: Path) -> tuple[list[str], list[Row]]:
    """Columns and rows of a JSON document (records list, OpenSearch judgments) or of JSON Lines."""
    text = read_text(path)
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # JSON Lines: each bad line is a reject
        rows = [_json_line(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        if isinstance(doc, dict) and "querySetQueries" in doc:
            raise DataError(f"{path}: contains queries only (an OpenSearch query set): no items to judge")
        if isinstance(doc, dict) and isinstance(doc.get("judgmentRatings"), list):  # one row per rating
            doc = [{"query": g.get("query"), **r} for g in doc["judgmentRatings"] if isinstance(g, dict)
                   for r in g.get("ratings") or [] if isinstance(r, dict)]
        rows = [_as_row(i, x) for i, x in enumerate(doc if isinstance(doc, list) else [doc], 1)]
    good = [raw for _, raw, error in rows if not error]
    if rows and not good:
        raise DataError(f"{path}: not JSON/JSON Lines records (no JSON object found)")
    return sorted(set().union(*good)), rows


def read_parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
