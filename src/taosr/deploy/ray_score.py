"""`taosr score --engine ray`: the batch scorer as a Ray Data job, for files too big for one process.

    read (Parquet / JSONL / CSV, Ray Data readers, streamed)
      -> map_batches(_ScoreActor)   actor pool: one model per actor; each batch is validated with the
                                    same row builder as `taosr.data.loaders`, grouped by query and scored
                                    with `PrefixScorer` (or vLLM, per actor, where it is available)
      -> streamed back in input order (preserve_order) and written to one Parquet file with the
         columns of `taosr.batch_score` (id, query, title, p1..p4, level, tier); rejected rows go to
         `<output stem>.rejects.jsonl` with file, row, field and reason, as in the one-process path.

Started on a laptop, `ray.init()` brings up a local instance (`num_actors` workers); on a cluster,
pass `address="auto"` (or set RAY_ADDRESS) and the same job spreads over the nodes. The job is not
resumable part by part like `batch_score`; the output appears atomically when every row is done.
Known limit: Ray Data infers JSON/CSV column types per block, so a column whose values change type
(a price of 3 in one row and "n/a" in another) fails the read instead of rejecting the row; convert
such files to Parquet (`taosr data split` writes clean JSONL) first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.loaders import DataError, LoadResult
from ..data.rows import build_records, builder_for
from ..io import atomic_write, write_jsonl
from ..progress import progress_bar
from .batch_score import ROW_GROUP, SCHEMA, rejects_path_of
from .cumpt import tiers_of
from .schema import load_serving_config
from .scorer import make_scorer

OUT_SCHEMA = (SCHEMA.append(pa.field("_local", pa.int64())).append(pa.field("_reject", pa.string()))
              .append(pa.field("_made_id", pa.bool_())))  # id made up from the (batch-local) row number


class _ScoreActor:
    """One model per actor; turns a batch of raw rows into scored rows plus reject rows."""

    def __init__(self, model_dir: str, file: str, columns: list[str], batch_size: int, engine: str,
                 dtype: str = "float32"):
        self.serving = load_serving_config(model_dir)
        self.builder, self.file = builder_for(columns, Path(file)), file
        # device "auto": the actor's GPU if it asked for one, else the CPU
        self.scorer = make_scorer(model_dir, self.serving, engine, "auto", dtype, batch_size)

    def __call__(self, batch: pa.Table) -> pa.Table:
        raw = batch.to_pylist()
        res = LoadResult()
        build_records(res, self.file, [(i, r, None) for i, r in enumerate(raw)], self.builder, require_label=False,
               read_labels=False)
        rejected = {x["row"] for x in res.rejects}
        good = [i for i in range(len(raw)) if i not in rejected]
        probs = self.scorer.score_records(res.records) if res.records else np.zeros((0, 4))  # grouped by query inside
        levels = self.serving.levels(probs)
        stem = Path(self.file).stem
        rows = [{"id": r.id, "query": r.query, "title": r.title, **{f"p{k + 1}": float(probs[j, k]) for k in range(4)},
                 "level": int(levels[j]), "tier": tier, "_local": good[j], "_reject": None,
                 "_made_id": r.id == f"{stem}:{good[j]}"}
                for j, (r, tier) in enumerate(zip(res.records, tiers_of(levels)))]
        rows += [{"id": None, "query": None, "title": None, "p1": None, "p2": None, "p3": None, "p4": None,
                  "level": None, "tier": None, "_local": x["row"], "_reject": json.dumps(x, default=str),
                  "_made_id": False}
                 for x in res.rejects]
        rows.sort(key=lambda x: x["_local"])
        return pa.Table.from_pylist(rows, schema=OUT_SCHEMA)


def _reader(path: Path):
    import ray.data

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return ray.data.read_parquet(str(path))
    if suffix in (".jsonl", ".ndjson"):
        return ray.data.read_json(str(path), lines=True)
    if suffix == ".csv":
        return ray.data.read_csv(str(path))
    raise DataError(f"{path}: --engine ray reads .parquet, .jsonl or .csv files (got {path.suffix!r})")


def score_file_ray(model_dir: str | Path, input_path: str | Path, output_path: str | Path, num_actors: int = 2,
                   batch_size: int = 32, rows_per_batch: int = 512, address: str | None = None,
                   engine: str = "transformers", gpus_per_actor: float = 0.0, dtype: str = "float32") -> dict:
    """Score `input_path` into `output_path` on a Ray actor pool (see the module doc); returns counts and timing.

    `gpus_per_actor`: GPUs each transformers actor asks Ray for (a fraction shares a GPU between actors;
    0: CPU actors, since Ray hides the GPUs from actors that ask for none). vLLM actors take one GPU each.
    `dtype`: the transformers actors' weights (float32 | bfloat16 | float16).
    """
    if gpus_per_actor < 0 or (gpus_per_actor > 1 and gpus_per_actor != int(gpus_per_actor)):
        raise ValueError(f"gpus_per_actor must be a fraction of one GPU or a whole number, got {gpus_per_actor}")
    import ray
    import ray.data

    t0 = time.perf_counter()
    model_dir, input_path, output = Path(model_dir).resolve(), Path(input_path).resolve(), Path(output_path)
    if not input_path.is_file():
        raise DataError(f"{input_path}: no such file")
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, configure_logging=False,
                 **({} if address or os.environ.get("RAY_ADDRESS") else {"num_cpus": num_actors + 1}))
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = _reader(input_path)
    columns = ds.schema().names
    builder_for(columns, input_path)  # a file that is not a relevance file fails here, with its name, not in an actor
    num_gpus, have = 1 if engine == "vllm" else gpus_per_actor, ray.cluster_resources().get("GPU", 0)
    if num_gpus > have:  # the actors would wait for GPUs forever
        raise ValueError(f"each actor asks for {num_gpus} GPU(s) but the Ray cluster has {have:g}; "
                         "lower --ray-gpus (0: CPU actors)")
    scored = ds.map_batches(
        _ScoreActor, batch_size=rows_per_batch, batch_format="pyarrow", num_cpus=1, num_gpus=num_gpus,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs={"model_dir": str(model_dir), "file": str(input_path), "columns": columns,
                               "batch_size": batch_size, "engine": engine, "dtype": dtype},
    )
    parquet = input_path.suffix.lower() in (".parquet", ".pq")
    n_rows = ds.count() if parquet else None  # from Parquet metadata; JSON/CSV would be read twice for it
    counts = {"rows": 0, "written": 0}
    rejects: list[dict] = []

    def write(tmp: Path) -> None:
        """Stream the actors' batches into `tmp`: scored rows in input order, rejects collected with their row."""
        stem, rows = input_path.stem, 0
        bar = progress_bar(n_rows, f"ray scoring ({num_actors} actors)")
        with pq.ParquetWriter(tmp, SCHEMA) as writer, bar as advance:
            base = -1  # input rows before the current actor batch; each actor batch restarts _local at 0
            for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                line = []  # 1-based input row of each output row (output batches may join actor batches)
                for loc in batch.column("_local").to_pylist():
                    if loc == 0:
                        base = rows + len(line)
                    line.append(base + loc + 1)
                line = pa.array(line, pa.int64())
                bad = batch.column("_reject").is_valid()
                for x, row in zip(batch.filter(bad).column("_reject").to_pylist(), line.filter(bad).to_pylist()):
                    rejects.append(json.loads(x) | {"row": row})
                good, good_line = batch.filter(pa.compute.invert(bad)), line.filter(pa.compute.invert(bad))
                if any(good.column("_made_id").to_pylist()):  # ids the loader makes up use the file's row number
                    ids = [f"{stem}:{n}" if made else i for i, n, made in
                           zip(good.column("id").to_pylist(), good_line.to_pylist(),
                               good.column("_made_id").to_pylist())]
                    good = good.set_column(good.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
                good = good.select(SCHEMA.names).cast(SCHEMA)
                if good.num_rows:
                    writer.write_table(good, row_group_size=ROW_GROUP)
                rows += batch.num_rows
                counts["written"] += good.num_rows
                advance(batch.num_rows)
        counts["rows"] = rows

    atomic_write(output, write)
    rows, written = counts["rows"], counts["written"]
    rejects.sort(key=lambda r: r["row"])
    write_jsonl(rejects_path_of(output), rejects)
    seconds = time.perf_counter() - t0
    return {"output": str(output), "engine": "ray", "actors": num_actors, "rows": written, "rejects": len(rejects),
            "rejects_path": str(rejects_path_of(output)), "input_rows": rows, "seconds": round(seconds, 3),
            "pairs_per_s": round(written / seconds, 2) if seconds > 0 else None}
