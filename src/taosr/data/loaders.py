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

import csv
import html
import io
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from .labels import LEVEL_NAMES
from .records import Record

RAW_CHARS = 200  # string values kept in a reject's `raw` are cut to this length
LARGE_VERSION_REASON = "not in the large_version (4-class task) set"
WANDS_LABELS = {"exact": 4, "partial": 3, "irrelevant": 1}  # WANDS has nothing for level 2
Row = tuple[int, dict, str | None]  # (1-based data row or JSONL line, raw row, error reading it)
Builder = Callable[[dict, str], dict]  # (raw row, fallback id) -> Record fields; may raise _Reject


class DataError(ValueError):
    """A whole file is unusable (missing, binary, wrong layout); the message names the file."""


class _Reject(Exception):
    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


@dataclass
class LoadResult:
    """Loaded records, rejected rows, rows skipped on purpose, and per-file counts."""

    records: list[Record] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows filtered out on purpose
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> rows/records/rejects/skipped
    rejects_path: Path | None = None

    def _stats(self, file: str) -> dict[str, int]:
        return self.files.setdefault(file, {"rows": 0, "records": 0, "rejects": 0, "skipped": 0})

    def merge(self, other: LoadResult) -> LoadResult:
        self.records += other.records
        self.rejects += other.rejects
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        for file, stats in other.files.items():
            for k, n in stats.items():
                self._stats(file)[k] += n
        return self

    def write_rejects(self, path: str | Path) -> Path:
        """Write the rejects as JSONL; the file is written even when there are none."""
        self.rejects_path = path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in self.rejects)
        return path

    def summary(self) -> dict:
        """Counts per label (and "unlabelled"), query type and file; rejects and the top reasons."""
        labels = {LEVEL_NAMES[lvl]: 0 for lvl in (4, 3, 2, 1)} | {"unlabelled": 0}
        for r in self.records:
            labels[LEVEL_NAMES[r.label] if r.label else "unlabelled"] += 1
        reasons = Counter(f"{r['field'] or '-'}: {r['reason']}" for r in self.rejects)
        return {
            "rows": sum(s["rows"] for s in self.files.values()),
            "records": len(self.records),
            "rejects": len(self.rejects),
            "skipped": dict(self.skipped),
            "labels": labels,
            "query_types": dict(Counter(r.query_type or "none" for r in self.records).most_common()),
            "files": {f: dict(s) for f, s in self.files.items()},
            "reject_reasons": dict(reasons.most_common(10)),
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
        }


# ---------------------------------------------------------------- cleaning and row builders

_BREAK_RE = re.compile(r"<\s*(?:br|/?p|/?li|/?div|/?tr|/?h\d)\b[^<>]*>", re.I)
_INLINE_RE = re.compile(r"</?(?:a|b|i|u|em|strong|span|font|small|sub|sup)\b[^<>]*>", re.I)
_TAG_RE = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.S)


def clean_text(value: Any, multiline: bool = False) -> str | None:
    """Strip HTML tags, unescape entities, normalise whitespace; unicode is kept. Empty -> None.

    With ``multiline``, line breaks (and <br>, <p>, <li>) stay as single newlines.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    s = _TAG_RE.sub(" ", _INLINE_RE.sub("", _BREAK_RE.sub("\n", str(value))))
    s = unicodedata.normalize("NFC", html.unescape(s))
    s = re.sub(r"\s*\n\s*", "\n", re.sub(r"[^\S\n]+", " ", s)) if multiline else re.sub(r"\s+", " ", s)
    return s.strip() or None


def _id_str(value: Any) -> str | None:
    """Ids stay strings; 123.0 (from a nullable numeric column) becomes "123"."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() or None


def _scalar(raw: dict, key: str) -> Any:
    """A text field's raw value; a JSON object or list there is a reject, not a Python repr."""
    value = raw.get(key)
    if isinstance(value, (dict, list, tuple)):
        raise _Reject(key, f"expected text, got a JSON {'object' if isinstance(value, dict) else 'list'}")
    return value


def _taosr_fields(raw: dict, default_id: str) -> dict:
    attrs = raw.get("attributes")
    return {
        "id": _id_str(_scalar(raw, "id")) or default_id,
        **{k: clean_text(_scalar(raw, k)) for k in ("query", "title", "category", "brand", "query_type")},
        "description": clean_text(_scalar(raw, "description"), multiline=True),
        "attributes": None if isinstance(attrs, str) and not attrs.strip() else attrs,
        "price": raw.get("price"),
        "label": _scalar(raw, "label"),
    }


def _decoded(raw: dict) -> dict:
    """Bytes (Parquet binary columns) decoded as UTF-8; undecodable bytes or lone surrogates are rejects."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _Reject(key, f"binary data, not UTF-8 text (bad byte at offset {e.start})") from None
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Reject(key, "invalid text: a lone surrogate (e.g. \\ud800)") from None
        out[key] = value
    return out


def _esci_fields(raw: dict, default_id: str) -> dict:
    if _id_str(raw.get("large_version")) in ("0", "False", "false"):
        raise _Reject("large_version", LARGE_VERSION_REASON)
    qid, pid = _id_str(raw.get("query_id")), _id_str(raw.get("product_id"))
    color = clean_text(raw.get("product_color"))
    text = [clean_text(raw.get(k), multiline=True) for k in ("product_description", "product_bullet_point")]
    return {
        "id": _id_str(raw.get("example_id")) or (f"{qid}:{pid}" if qid and pid else default_id),
        "query": clean_text(raw.get("query")),
        "title": clean_text(raw.get("product_title")),
        "brand": clean_text(raw.get("product_brand")),
        "attributes": {"color": color} if color else None,
        "description": "\n".join(t for t in text if t) or None,
        "label": clean_text(raw.get("esci_label")),
        "query_type": clean_text(raw.get("query_source")),
    }


def _ids_only(raw: dict, default_id: str) -> dict:
    raise _Reject("title", "no product text (ids only)")


def _schema(columns: Iterable[str], file: Path) -> Builder:
    """Pick the row builder from the column names, or raise saying why the file holds no items."""
    cols = set(columns)
    shown = ", ".join(sorted(cols)[:12]) + (", ..." if len(cols) > 12 else "")
    if "query" in cols and ("title" in cols or "product_title" in cols):
        return _taosr_fields if "title" in cols else _esci_fields
    if "docId" in cols:
        return _ids_only
    if not cols & {"title", "product_title", "product_name", "product_id"}:
        if cols & {"query", "query_id"}:
            raise DataError(f"{file}: contains queries only (columns {shown}): no items to judge")
        raise DataError(f"{file}: not a relevance file: neither a query nor a title column (columns {shown})")
    if "query" not in cols:
        raise DataError(f"{file}: has items but no query column (columns {shown})")
    raise DataError(f"{file}: has item ids but no item text (no title/product_title; columns {shown}); "
                    "for the official ESCI files use load_esci_official(examples, products)")


def _build(res: LoadResult, file: str, rows: Iterable[Row], builder: Builder, require_label: bool,
           read_labels: bool = True) -> None:
    """Turn raw rows into records; whatever is wrong with a row makes a reject, never an exception.

    With ``read_labels=False`` (scoring, which never uses them) labels are not read, so a bad one rejects nothing.
    """
    stats, stem = res._stats(file), Path(file).stem
    for rowno, raw, error in rows:
        stats["rows"] += 1
        try:
            if error:
                raise _Reject(None, error)
            fields = builder(_decoded(raw), f"{stem}:{rowno}")
            record = Record(**{k: v for k, v in fields.items() if v is not None and (read_labels or k != "label")})
            if require_label and record.label is None:
                raise _Reject("label", "missing label (require_label=True)")
            res.records.append(record)
            stats["records"] += 1
            continue
        except _Reject as e:
            fld, why = e.field, e.reason
        except ValidationError as e:
            errs = e.errors()
            fld = str(errs[0]["loc"][0]) if errs[0]["loc"] else None
            why = "; ".join(f"missing {'.'.join(map(str, x['loc']))}" if x["type"] == "missing" else
                            f"{'.'.join(map(str, x['loc']))}: {x['msg'].removeprefix('Value error, ')}" for x in errs)
        except RecursionError:
            fld, why = None, "nested too deeply"
        stats["rejects"] += 1
        res.rejects.append({"file": file, "row": rowno, "field": fld, "reason": why,
                            "raw": {k: _short(v) for k, v in raw.items()}})


def _short(value: Any) -> Any:
    """A raw value as kept in a reject: JSON-safe, at most `RAW_CHARS` characters of text."""
    if isinstance(value, bytes):
        value = repr(value)
    elif isinstance(value, float) and not math.isfinite(value):
        return str(value)
    elif isinstance(value, (dict, list, tuple)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (RecursionError, ValueError):
            return "<nested too deeply>"
        if len(text) <= RAW_CHARS:
            return value
        value = text
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates made visible
        return value[:RAW_CHARS] + "…" if len(value) > RAW_CHARS else value
    return value


# ---------------------------------------------------------------- file readers


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    if data.startswith(b"PAR1"):
        raise DataError(f"{path}: is a Parquet file, not text (name it .parquet or pass fmt='parquet')")
    if b"\x00" in data[:8192]:
        raise DataError(f"{path}: binary data, not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def _read_delimited(path: Path, delimiter: str | None = None) -> tuple[list[str], list[Row]]:
    """Header and rows of a CSV/TSV (tabs sniffed from the header); a short/long row is an error."""
    text = _read_text(path)
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


def _read_json(path: Path) -> tuple[list[str], list[Row]]:
    """Columns and rows of a JSON document (records list, OpenSearch judgments) or of JSON Lines."""
    text = _read_text(path)
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


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None


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
            from .sources import load_wands

            res.merge(load_wands(path))
            continue
        kind = _FORMATS.get(path.suffix.lower()) if fmt == "auto" else fmt
        if kind in ("csv", "tsv"):
            columns, rows = _read_delimited(path, "\t" if kind == "tsv" else None)
        elif kind in ("json", "jsonl"):
            columns, rows = _read_json(path)
        elif kind == "parquet":
            table = _read_parquet(path)
            columns, rows = table.column_names, [(i, r, None) for i, r in enumerate(table.to_pylist(), 1)]
        else:
            raise DataError(f"{path}: unknown format {kind or path.suffix!r} (use jsonl, json, csv, tsv or parquet)")
        _build(res, str(path), rows, _schema(columns, path), require_label, read_labels)
    if rejects_path is not None:
        res.write_rejects(rejects_path)
    return res


def __getattr__(name: str):
    """`load_esci_official`, `load_wands` (taosr.sources) and `inspect_files`, `format_summary`
    (taosr.data_summary) are importable from here too."""
    if name in ("load_esci_official", "load_wands"):
        from . import sources

        return getattr(sources, name)
    if name in ("inspect_files", "format_summary"):
        from . import data_summary

        return getattr(data_summary, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
