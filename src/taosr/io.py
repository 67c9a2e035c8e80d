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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # some writers (pyarrow) leave out the file: name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
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


OWNER_FILE = "taosr_output.json"  # which command, with which settings, made an output folder


def claim_folder(out: str | Path, command: str, settings: dict, overwrite: bool = False) -> Path:
    """Make `out` the output folder of `command` run with `settings`, or refuse (`InputError`).

    A folder that is missing or empty is taken (`OWNER_FILE` records the command and settings); one made by the
    same command with the same settings is resumed; anything else (another command's or other settings' output,
    files from elsewhere) is refused, naming the folder, unless `overwrite`, which empties it first.
    """
    from .errors import InputError

    out = Path(out)
    want = json.loads(to_json({"command": command, "settings": settings}))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a folder; choose a folder for --out")
    marker = out / OWNER_FILE
    if out.is_dir() and any(out.iterdir()):
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = None
        if have == want:
            return out
        if not overwrite:
            if have is None:
                why = "holds files that no taosr command here made (no " + OWNER_FILE + ")"
            elif have.get("command") != command:
                why = f"is the output of `taosr {have.get('command')}`"
            else:
                diff = [f"{k}: {v!r} -> {flat(want['settings']).get(k)!r}"
                        for k, v in flat(have.get("settings") or {}).items() if flat(want["settings"]).get(k) != v]
                diff += [f"{k}: (none) -> {v!r}" for k, v in flat(want["settings"]).items()
                         if k not in flat(have.get("settings") or {})]
                why = f"was made by `taosr {command}` with other settings ({'; '.join(diff[:4])})"
            raise InputError(f"{out}: {why}; choose an empty or new --out, or pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, want)
    return out


def check_writable(path: str | Path) -> Path:
    """Fail early (`OSError`, naming the folder) when the file `path` could not be written: its folder cannot be
    made or written to. A command checks its output before the work, not after it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder; --out must name a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    probe.write_bytes(b"")
    probe.unlink()
    return path
