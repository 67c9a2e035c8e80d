"""Splits of labelled pairs: by query string (no query in two splits), written as `<split>.jsonl`, read back."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from pydantic import Field, model_validator

from ..io import write_jsonl
from ..records import Record
from ..settings import Seed, StrictConfig
from .loaders import load_records


class SplitConfig(StrictConfig):
    """How labelled pairs are split by query string into train / dev / test."""

    seed: Seed = Field(0, description="Random seed: the same seed gives the same result.")
    dev_frac: float = Field(0.1, ge=0, lt=1, description="Share of query strings in the dev split.")
    test_frac: float = Field(0.15, ge=0, lt=1, description="Share of query strings in the test split.")

    @model_validator(mode="after")
    def _train_left(self) -> SplitConfig:
        if self.dev_frac + self.test_frac >= 1:
            raise ValueError(f"dev_frac + test_frac = {self.dev_frac + self.test_frac:g} leaves no training split")
        return self


def split_by_query(pairs: list[Record], dev_frac: float, test_frac: float, seed: int = 0) -> dict[str, list[Record]]:
    """Assign whole query strings to splits (no query in two splits), stratified by query type so that
    rare types (there are only a few Q&A query strings) still reach the dev and test splits."""
    by_type: dict[str, set[str]] = {}
    for p in pairs:
        by_type.setdefault(p.query_type or "", set()).add(p.query)
    rng = random.Random(seed + 1)
    where: dict[str, str] = {}
    for qtype in sorted(by_type):
        queries = sorted(by_type[qtype] - where.keys())
        rng.shuffle(queries)
        n_test, n_dev = (round(len(queries) * frac) for frac in (test_frac, dev_frac))
        if len(queries) >= 3:  # a type with a few queries still gives each split one
            n_test, n_dev = max(n_test, int(test_frac > 0)), max(n_dev, int(dev_frac > 0))
        where.update({q: "test" for q in queries[:n_test]})
        where.update({q: "dev" for q in queries[n_test:n_test + n_dev]})
        where.update({q: "train" for q in queries[n_test + n_dev:]})
    out: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    for p in pairs:
        out[where[p.query]].append(p)
    return out


def write_splits(splits: dict[str, list[Record]], out_dir: Path) -> dict[str, dict]:
    """Write `<split>.jsonl` files and return per-split label / query-type counts."""
    stats = {}
    for name, records in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", (r.model_dump(exclude_none=True) for r in records))
        stats[name] = {
            "pairs": len(records),
            "queries": len({r.query for r in records}),
            "labels": dict(sorted(Counter(r.label for r in records).items())),
            "query_types": dict(sorted(Counter(r.query_type for r in records).items())),
        }
    return stats


def read_split(path: str | Path) -> list[Record]:
    """The labelled records of one split file; its rejected rows go to `<path stem>.rejects.jsonl`."""
    path = Path(path)
    return load_records([path], require_label=True, rejects_path=path.with_suffix(".rejects.jsonl")).records


def test_subset(test: list, limit: int | None) -> list:
    """`limit` test pairs, as whole queries drawn at random (seed 0), in file order; all of them when None."""
    if limit is None or limit >= len(test):
        return test
    size: dict[str, int] = {}
    for r in test:
        size[r.query] = size.get(r.query, 0) + 1
    queries = list(size)
    random.Random(0).shuffle(queries)
    keep, n = set(), 0
    for q in queries:
        if n >= limit:
            break
        keep.add(q)
        n += size[q]
    return [r for r in test if r.query in keep]
