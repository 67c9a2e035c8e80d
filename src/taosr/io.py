"""Writing files: whole-or-nothing (a temporary sibling renamed over the target) and JSON / JSON Lines.

Every stage writes through these helpers, so a killed process never leaves a half-written file
that a resumed run (or another rank) would read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it over `path` (atomic on one filesystem).

    The temporary name ends in `.tmp` and carries the process id, so writers in parallel processes never
    share one; it is removed when `write` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _default(obj):
    """JSON for what the stages produce besides plain Python: numpy scalars and arrays; anything else as its str
    (paths, dates and the odd value of a rejected input row)."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def to_json(obj, indent: int | None = 1) -> str:
    return json.dumps(obj, indent=indent, default=_default, ensure_ascii=False)


def write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    """Write `obj` as JSON (numpy values as plain numbers), atomically."""
    return write_text(path, to_json(obj, indent))


def write_jsonl(path: str | Path, rows: Iterable) -> Path:
    """Write one JSON document per line (an empty file for no rows), atomically."""
    return write_text(path, "".join(to_json(r, None) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list:
    """The documents of a JSON Lines file; blank lines are skipped."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def flat(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def record_differences(path: str | Path, want: dict) -> list[str]:
    """What a JSON record at `path` holds differently from `want` ('key: was -> now', nested keys dotted); a
    missing record is written from `want` and has no differences."""
    path = Path(path)
    want = json.loads(to_json(want))
    if not path.exists():
        write_json(path, want)
        return []
    have, now = flat(json.loads(path.read_text(encoding="utf-8"))), flat(want)
    return ([f"{k}: {have.get(k)!r} -> {v!r}" for k, v in now.items() if have.get(k) != v]
            + [f"{k}: {v!r} -> (none)" for k, v in have.items() if k not in now])
