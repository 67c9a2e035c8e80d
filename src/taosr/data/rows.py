"""From a raw row (a dict read from any file) to a `Record` or a reject with its field and reason.

`clean_text` strips HTML and normalises whitespace; a *builder* maps one layout's columns to
`Record` fields (`builder_for` picks it from the column names); `build_records` runs a builder over
rows, so that every row becomes a record or a reject, never an exception.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..records import Record
from .result import DataError, LoadResult

RAW_CHARS = 200  # string values kept in a reject's `raw` are cut to this length
LARGE_VERSION_REASON = "not in the large_version (4-class task) set"
Row = tuple[int, dict, str | None]  # (1-based data row or JSONL line, raw row, error reading it)
Builder = Callable[[dict, str], dict]  # (raw row, fallback id) -> Record fields; may raise RowReject


class RowReject(Exception):
    """Raised by a builder: this row is rejected, for `reason`, because of `field`."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


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


def id_str(value: Any) -> str | None:
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
        raise RowReject(key, f"expected text, got a JSON {'object' if isinstance(value, dict) else 'list'}")
    return value


def taosr_fields(raw: dict, default_id: str) -> dict:
    attrs = raw.get("attributes")
    return {
        "id": id_str(_scalar(raw, "id")) or default_id,
        **{k: clean_text(_scalar(raw, k)) for k in ("query", "title", "category", "brand", "query_type")},
        "description": clean_text(_scalar(raw, "description"), multiline=True),
        "attributes": None if isinstance(attrs, str) and not attrs.strip() else attrs,
        "price": raw.get("price"),
        "label": _scalar(raw, "label"),
    }


def text_problem(text: str) -> str | None:
    """Why a text cannot be used: a byte that was not UTF-8 (decoded as a lone surrogate), a lone surrogate, or a
    NUL character; None when it is fine. The service (`deploy.serve_api`) refuses the same texts."""
    if "\x00" in text:
        return f"a NUL character at position {text.index(chr(0))} (binary data in a text field)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        c = ord(text[e.start])
        if 0xDC80 <= c <= 0xDCFF:  # what surrogateescape made of an undecodable byte
            return f"not UTF-8: byte 0x{c - 0xDC00:02x} at position {e.start}"
        return f"invalid unicode: a lone surrogate (\\u{c:04x}) at position {e.start}"
    return None


def _checked(key: str, value: Any) -> Any:
    """`value` with bytes decoded as UTF-8; raises RowReject naming `key` for text that cannot be used, in nested
    mappings and lists too (attributes)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RowReject(key, f"binary data, not UTF-8 text (bad byte at offset {e.start})") from None
    if isinstance(value, str):
        if problem := text_problem(value):
            raise RowReject(key, problem)
    elif isinstance(value, dict):
        for k, v in value.items():
            _checked(key, k)
            _checked(key, v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _checked(key, v)
    return value


def _decoded(raw: dict) -> dict:
    """Bytes (Parquet binary columns) decoded as UTF-8; undecodable bytes, lone surrogates and NULs are rejects."""
    out = {}
    for key, value in raw.items():
        if isinstance(key, str) and (problem := text_problem(key)):
            raise RowReject(None, f"column name: {problem}")
        out[key] = _checked(key, value)
    return out


def esci_fields(raw: dict, default_id: str) -> dict:
    if id_str(raw.get("large_version")) in ("0", "False", "false"):
        raise RowReject("large_version", LARGE_VERSION_REASON)
    qid, pid = id_str(raw.get("query_id")), id_str(raw.get("product_id"))
    color = clean_text(raw.get("product_color"))
    text = [clean_text(raw.get(k), multiline=True) for k in ("product_description", "product_bullet_point")]
    return {
        "id": id_str(raw.get("example_id")) or (f"{qid}:{pid}" if qid and pid else default_id),
        "query": clean_text(raw.get("query")),
        "title": clean_text(raw.get("product_title")),
        "brand": clean_text(raw.get("product_brand")),
        "attributes": {"color": color} if color else None,
        "description": "\n".join(t for t in text if t) or None,
        "label": clean_text(raw.get("esci_label")),
        "query_type": clean_text(raw.get("query_source")),
    }


def ids_only(raw: dict, default_id: str) -> dict:
    raise RowReject("title", "no product text (ids only)")


def builder_for(columns: Iterable[str], file: Path) -> Builder:
    """Pick the row builder from the column names, or raise saying why the file holds no items."""
    cols = set(columns)
    shown = ", ".join(sorted(cols)[:12]) + (", ..." if len(cols) > 12 else "")
    if "query" in cols and ("title" in cols or "product_title" in cols):
        return taosr_fields if "title" in cols else esci_fields
    if "docId" in cols:
        return ids_only
    if not cols & {"title", "product_title", "product_name", "product_id"}:
        if cols & {"query", "query_id"}:
            raise DataError(f"{file}: contains queries only (columns {shown}): no items to judge")
        raise DataError(f"{file}: not a relevance file: neither a query nor a title column (columns {shown})")
    if "query" not in cols:
        raise DataError(f"{file}: has items but no query column (columns {shown})")
    raise DataError(f"{file}: has item ids but no item text (no title/product_title; columns {shown}); "
                    "for the official ESCI files use load_esci_official(examples, products)")


def build_records(res: LoadResult, file: str, rows: Iterable[Row], builder: Builder, require_label: bool,
           read_labels: bool = True) -> None:
    """Turn raw rows into records; whatever is wrong with a row makes a reject, never an exception.

    With ``read_labels=False`` (scoring, which never uses them) labels are not read, so a bad one rejects nothing.
    """
    stats, stem = res.stats_of(file), Path(file).stem
    for rowno, raw, error in rows:
        stats["rows"] += 1
        try:
            if error:
                raise RowReject(None, error)
            fields = builder(_decoded(raw), f"{stem}:{rowno}")
            record = Record(**{k: v for k, v in fields.items() if v is not None and (read_labels or k != "label")})
            if require_label and record.label is None:
                raise RowReject("label", "missing label (require_label=True)")
            res.records.append(record)
            stats["records"] += 1
            continue
        except RowReject as e:
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
