"""Writing files: whole-or-nothing (a temporary sibling renamed over the target) and JSON / JSON Lines.

Every stage writes through these helpers, so a killed process never leaves a half-written file
that a resumed run (or another rank) would read. Folders too (`atomic_dir`, `partial_dir` +
`replace_dir`): a model folder is written under a temporary sibling name and renamed into place
when it is complete, so a folder with the final name is always whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


def partial_dir(path: str | Path) -> Path:
    """The temporary sibling a folder is written under before `replace_dir` renames it to `path` (the same name in
    every process of a multi-process launch; a leftover from a killed run is emptied by `atomic_dir`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def replace_dir(tmp: str | Path, path: str | Path) -> Path:
    """Put the complete folder `tmp` in the place of `path` (an older `path` is removed once `tmp` is in place)."""
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """`with atomic_dir(out) as tmp:` write the folder's files into `tmp`; on success it becomes `out` (replacing
    it), on failure it is removed and `out` is left as it was."""
    tmp = partial_dir(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
