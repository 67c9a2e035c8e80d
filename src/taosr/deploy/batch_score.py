"""`taosr score`: score a file of (query, item) pairs offline into Parquet, resumably.

Reading: the input (JSONL / CSV / Parquet, any layout `taosr.data.loaders` reads) is validated row by
row; rejected rows go to `<output stem>.rejects.jsonl` with reasons. The loaders read a file whole,
so the *records* are held in memory (grouping by query needs them anyway); the scores are not.

Scoring: pairs are grouped by query (first-appearance order) and scored with `PrefixScorer` (the
instruction + query KV cache shared by the items of a query), or with the unshared scorer when
`prefix_sharing=False` (same numbers, slower). Each chunk of `batch_queries` queries is written as
one Parquet part file, atomically (written to `.tmp`, then renamed):

    <output>.parts/manifest.json        input fingerprint (every field), model (path, and the fingerprint of
                                        its weights, tokenizer and prompt: `modeling.model_fingerprint`),
                                        beta, prompt, engine, device, dtype, prefix sharing
    <output>.parts/part-00000.parquet   whole query groups, with their input row numbers (_seq)
    ...

Resuming: a killed run leaves finished parts (and maybe a `.tmp`, deleted on restart). A rerun
with the same input, model and settings reads the row numbers already written and scores only the
rest, so no pair is lost or written twice; a rerun with anything in the manifest changed (also a model
retrained in place: its weights' fingerprint changes) is refused
(`ResumeError`, naming what differs) unless `fresh`. An unreadable (truncated) part is deleted and
its rows scored again. Labels are not read (scoring does not use them), so a bad label rejects
nothing. When every row is scored, the parts are merged into `output`
(input order, row groups of `ROW_GROUP` rows) and the parts folder is removed. Output columns:
id, query, title, p1..p4 (P(level 1..4)), level (CumPT with the beta of `taosr_serving.json`),
tier (Good / Mid / Bad).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.loaders import DataError, load_records
from ..io import atomic_write, write_json
from ..progress import progress_bar
from ..records import Record
from ..runtime import resolve_engine
from .cumpt import tiers_of
from .schema import ServingConfig, load_serving_config
from .scorer import make_scorer

log = logging.getLogger(__name__)
ROW_GROUP = 65_536
SCHEMA = pa.schema([("id", pa.string()), ("query", pa.string()), ("title", pa.string()),
                    ("p1", pa.float64()), ("p2", pa.float64()), ("p3", pa.float64()), ("p4", pa.float64()),
                    ("level", pa.int8()), ("tier", pa.string())])
PART_SCHEMA = SCHEMA.append(pa.field("_seq", pa.int64()))  # input row number, for resume and order


def parts_dir_of(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def rejects_path_of(output: Path) -> Path:
    return output.with_suffix(".rejects.jsonl")


class ResumeError(DataError):
    """The run cannot start or resume as asked (its parts belong to other settings, output = input, ...)."""


class NoUsableRows(DataError):
    """Every row of the input was rejected; `counts` holds what the count line reports."""

    def __init__(self, message: str, counts: dict):
        super().__init__(message)
        self.counts = counts


def _fingerprint(records: list[Record]) -> str:
    """A hash of every field of every input pair, so a resume never mixes two different inputs."""
    h = hashlib.sha256()
    for r in records:
        h.update(r.model_dump_json().encode() + b"\x1e")
    return h.hexdigest()


def check_paths(input_path: str | Path, output: Path) -> None:
    """Refuse an output (or its rejects file) that is the input: scoring would overwrite what it reads."""
    source = Path(input_path).resolve()
    for target, what in ((output, "--out"), (rejects_path_of(output), "the rejects file of --out")):
        if target.resolve() == source:
            raise ResumeError(f"{what} ({target}) is the input file {input_path}: choose another --out")


def _groups(records: list[Record]) -> list[list[int]]:
    """Row numbers grouped by query, groups in first-appearance order, rows in input order."""
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_query[r.query].append(i)
    return list(by_query.values())


def _open_parts(parts: Path, manifest: dict, fresh: bool) -> tuple[set[int], int]:
    """Prepare the parts folder; returns (row numbers already written, next part number)."""
    if fresh and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    mpath = parts / "manifest.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = {}
        if old != manifest:
            diff = [f"{k} ({_shown(old.get(k))} there, {_shown(manifest[k])} now)"
                    for k in manifest if old.get(k) != manifest[k]]
            raise ResumeError(f"{parts} holds an interrupted run with a different {'; '.join(diff)}: rerun with its "
                              "settings to resume it, or pass --fresh (fresh=True) to discard it and start over")
    else:
        write_json(mpath, manifest)
    for tmp in parts.glob("*.tmp"):  # a part killed mid-write
        tmp.unlink()
    done: set[int] = set()
    files = sorted(parts.glob("part-*.parquet"))
    for f in list(files):
        try:
            seqs = pq.read_table(f, columns=["_seq"])["_seq"].to_pylist()
        except (pa.ArrowException, OSError) as e:  # truncated or damaged: its rows are scored again
            log.warning("%s is unreadable (%s); its rows will be scored again", f, e)
            f.unlink()
            files.remove(f)
            continue
        if done.intersection(seqs):
            raise ResumeError(f"{f}: rows already written by another part (corrupt parts folder); pass --fresh")
        done.update(seqs)
    nxt = 1 + max((int(f.stem.split("-")[1]) for f in files), default=-1)
    return done, nxt


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _table(records: list[Record], seqs: list[int], probs: np.ndarray, serving: ServingConfig) -> pa.Table:
    levels = serving.levels(probs)
    cols = {"id": [records[i].id for i in seqs], "query": [records[i].query for i in seqs],
            "title": [records[i].title for i in seqs],
            **{f"p{k + 1}": probs[:, k] for k in range(4)},
            "level": levels.astype(np.int8), "tier": list(tiers_of(levels)), "_seq": seqs}
    return pa.table(cols, schema=PART_SCHEMA)


def _write_part(parts: Path, number: int, table: pa.Table) -> Path:
    """Write one part atomically (tests patch this to simulate a crash)."""
    return atomic_write(parts / f"part-{number:05d}.parquet", lambda tmp: pq.write_table(table, tmp))


def _merge(parts: Path, output: Path, n_rows: int) -> None:
    """Merge the parts into `output` in input order; checks that every row is there exactly once."""
    files = sorted(parts.glob("part-*.parquet"))
    tables = [pq.read_table(f, schema=PART_SCHEMA) for f in files]
    table = pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()
    table = table.sort_by("_seq")
    if table["_seq"].to_pylist() != list(range(n_rows)):
        raise RuntimeError(f"{parts}: parts hold {table.num_rows} rows, expected each of {n_rows} exactly once")
    atomic_write(output, lambda tmp: pq.write_table(table.drop_columns(["_seq"]), tmp, row_group_size=ROW_GROUP))
    shutil.rmtree(parts)


def score_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path, batch_queries: int = 64,
               prefix_sharing: bool = True, batch_size: int = 32, fresh: bool = False,
               engine: str = "transformers", device: str = "auto", dtype: str = "float32") -> dict:
    """Score every valid row of `input_path` into the Parquet file `output_path` (see the module doc).

    `batch_queries` queries go into each part file (the unit of resume), packed into shared forwards
    by `PrefixScorer.score_groups`; `batch_size` items per forward pass where items are batched instead.
    `engine`: transformers (on `device` in `dtype`, see `modeling.load_model`), or vllm (GPU; `taosr.deploy.scorer`),
    or auto. Returns counts, timing and where things went. `taosr.deploy.ray_score` runs the same job on a Ray
    actor pool.
    """
    from ..modeling import model_fingerprint, pick_device

    engine = resolve_engine(engine)
    t0 = time.perf_counter()
    if batch_queries < 1:
        raise ValueError("batch_queries must be >= 1")
    output, model_dir = Path(output_path), Path(model_dir)
    check_paths(input_path, output)
    loaded = load_records([input_path], rejects_path=rejects_path_of(output), read_labels=False)
    records = loaded.records
    if not records:
        counts = {"rows": 0, "rejects": len(loaded.rejects), "rejects_path": str(rejects_path_of(output))}
        raise NoUsableRows(f"{input_path}: no usable row ({len(loaded.rejects)} rejected; reasons in "
                           f"{rejects_path_of(output)})", counts)
    weights = model_fingerprint(model_dir)  # also checks that the folder holds a model
    serving = load_serving_config(model_dir)
    parts = parts_dir_of(output)
    manifest = {"input": str(Path(input_path).resolve()), "fingerprint": _fingerprint(records),
                "rows": len(records), "model": str(model_dir.resolve()), "model_fingerprint": weights,
                "rule": serving.rule, "beta": serving.beta,
                "prompt": serving.prompt.model_dump(), "engine": engine,
                "device": "cuda (vllm)" if engine == "vllm" else str(pick_device(device)),
                "dtype": dtype if engine != "vllm" else "vllm", "prefix_sharing": prefix_sharing and engine != "vllm"}
    done, number = _open_parts(parts, manifest, fresh)
    todo = [g for g in ([i for i in grp if i not in done] for grp in _groups(records)) if g]

    scored = 0
    if todo:
        scorer = make_scorer(model_dir, serving, engine, device, dtype, batch_size, prefix_sharing)
        with progress_bar(len(records), "scoring") as advance:
            advance(len(done))
            for start in range(0, len(todo), batch_queries):
                chunk = todo[start:start + batch_queries]
                seqs = [i for grp in chunk for i in grp]
                probs = np.vstack(scorer.score_groups([[records[i] for i in grp] for grp in chunk]))
                _write_part(parts, number, _table(records, seqs, probs, serving))
                number += 1
                scored += len(seqs)
                advance(len(seqs), info=f"{start + len(chunk)}/{len(todo)} queries")
    _merge(parts, output, len(records))
    seconds = time.perf_counter() - t0
    return {"output": str(output), "rows": len(records), "rejects": len(loaded.rejects),
            "rejects_path": str(rejects_path_of(output)), "queries": len(_groups(records)),
            "resumed_rows": len(done), "scored_rows": scored, "rule": serving.rule, "beta": serving.beta,
            "prefix_sharing": prefix_sharing, "engine": engine, "seconds": round(seconds, 3),
            "pairs_per_s": round(scored / seconds, 2) if seconds > 0 else None}
