"""What loading produces: records, rejected rows (with reasons), rows skipped on purpose, per-file counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import write_jsonl
from ..labels import LEVEL_NAMES
from ..records import Record


class DataError(InputError):
    """A whole file is unusable (missing, binary, wrong layout); the message names the file."""


@dataclass
class LoadResult:
    """Loaded records, rejected rows, rows skipped on purpose, and per-file counts."""

    records: list[Record] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows filtered out on purpose
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> rows/records/rejects/skipped
    rejects_path: Path | None = None

    def stats_of(self, file: str) -> dict[str, int]:
        return self.files.setdefault(file, {"rows": 0, "records": 0, "rejects": 0, "skipped": 0})

    def merge(self, other: LoadResult) -> LoadResult:
        self.records += other.records
        self.rejects += other.rejects
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        for file, stats in other.files.items():
            for k, n in stats.items():
                self.stats_of(file)[k] += n
        return self

    def write_rejects(self, path: str | Path) -> Path:
        """Write the rejects as JSONL; the file is written even when there are none."""
        self.rejects_path = path = Path(path)
        return write_jsonl(path, self.rejects)

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
