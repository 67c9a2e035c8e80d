"""`taosr cot`: have a teacher write the five-step reasoning for every labelled pair, to JSONL.

One row per labelled pair: id, query, title, label, reasoning, rule_ids, teacher, status
("ok" / "inconsistent" / "failed") and, when not ok, the reason. Nothing is silently dropped or
kept: unlabelled pairs and repeated ids are counted, every status is counted and printed. The run
is resumable: ids already in the output are skipped (rows with status "failed" are tried again
unless `retry_failed=False`). Rows are appended chunk by chunk, so an interrupted run loses at most
one chunk (and an HTTP teacher's cache makes even that free).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from .teacher_prompt import Outcome, check
from .progress import progress_bar
from .records import Record
from .teacher import Teacher

STATUSES = ("ok", "inconsistent", "failed")


def pair_id(record: Record) -> str:
    """The record's id, or a stable hash of (query, title) when it has none."""
    if record.id:
        return record.id
    return "h" + hashlib.sha1(f"{record.query}\t{record.title}".encode("utf-8")).hexdigest()[:12]


def teacher_name(teacher) -> str:
    return getattr(teacher, "name", None) or type(teacher).__name__


def _outcomes(teacher, records: list[Record]) -> list[Outcome]:
    """Outcomes from an LLM teacher, or from any `Teacher` (`reason` only) checked against gold here."""
    if hasattr(teacher, "outcome_many"):
        return teacher.outcome_many(records)
    out = []
    for r in records:
        try:
            reasoning = teacher.reason(r)
        except Exception as e:  # noqa: BLE001 -- recorded as a failed row, never lost
            out.append(Outcome("failed", reason=f"{type(e).__name__}: {e}"))
            continue
        if reasoning is None:
            out.append(Outcome("failed", reason="teacher returned no reasoning"))
            continue
        ok, why = check(reasoning.text, r.label, reasoning.rule_ids)
        if ok is None or reasoning.level != r.label:
            out.append(Outcome("inconsistent", reason=why or "level differs from gold", text=reasoning.text,
                               attempts=1, rule_ids=reasoning.rule_ids))
        else:
            out.append(Outcome("ok", reasoning, text=reasoning.text, attempts=1, rule_ids=reasoning.rule_ids))
    return out


def row_for(record: Record, rid: str, outcome: Outcome, teacher: str) -> dict:
    r = outcome.reasoning
    return {
        "id": rid, "query": record.query, "title": record.title, "label": record.label,
        "query_type": record.query_type,
        "reasoning": r.text if r else None, "rule_ids": list(r.rule_ids) if r else [],
        "retrieved_ids": list(outcome.rule_ids),
        "teacher": teacher, "status": outcome.status, "reason": outcome.reason,
        "attempts": outcome.attempts, "rejected_text": None if r else outcome.text,
    }


def read_rows(path: Path) -> list[dict]:
    return parse_rows(path.read_text(encoding="utf-8")) if path.exists() else []


def parse_rows(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by an interrupted write: that pair is redone
            continue
    return rows


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def run_cot(records: list[Record], teacher: Teacher, out_path: Path, retry_failed: bool = True,
            chunk_size: int = 32, verbose: bool = True) -> dict:
    """Write teacher reasoning for `records` to `out_path` (JSONL); return the counts (see module doc)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw = out_path.read_text(encoding="utf-8") if out_path.exists() else ""  # the one read of the file
    existing = parse_rows(raw)
    kept = [r for r in existing if not (retry_failed and r.get("status") == "failed")]
    clean = raw == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in existing)
    if len(kept) != len(existing) or not clean:
        _rewrite(out_path, kept)  # drop failed rows to redo, and any half-written line
    done = {r["id"] for r in kept}

    counts: Counter[str] = Counter()
    todo: list[tuple[str, Record]] = []
    seen: set[str] = set()
    for rec in records:
        rid = pair_id(rec)
        if rec.label is None:
            counts["unlabelled"] += 1
        elif rid in seen:
            counts["duplicate_id"] += 1
        elif rid in done:
            counts["resumed"] += 1
        else:
            todo.append((rid, rec))
        seen.add(rid)

    name = teacher_name(teacher)
    with progress_bar(len(todo), f"cot ({name})") as advance, out_path.open("a", encoding="utf-8") as f:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            outcomes = _outcomes(teacher, [rec for _, rec in chunk])
            for (rid, rec), outcome in zip(chunk, outcomes):
                f.write(json.dumps(row_for(rec, rid, outcome, name), ensure_ascii=False) + "\n")
                counts[outcome.status] += 1
            f.flush()
            advance(len(chunk), info=" ".join(f"{s}={counts[s]}" for s in STATUSES))

    file_counts = Counter(r.get("status") for r in kept) + Counter({s: counts[s] for s in STATUSES})
    summary = {
        "out": str(out_path), "teacher": name, "records": len(records), "written": sum(counts[s] for s in STATUSES),
        **{s: counts[s] for s in STATUSES},
        "resumed": counts["resumed"], "unlabelled": counts["unlabelled"], "duplicate_id": counts["duplicate_id"],
        "file": {s: file_counts.get(s, 0) for s in STATUSES},
    }
    if isinstance(getattr(teacher, "stats", None), dict):
        summary["teacher_stats"] = dict(teacher.stats)
    if verbose:
        print(f"cot: {summary['written']} written -> {out_path} | " + " ".join(f"{s}={summary[s]}" for s in STATUSES)
              + f" | resumed={summary['resumed']} unlabelled={summary['unlabelled']} "
                f"duplicate_id={summary['duplicate_id']} | file: {summary['file']}")
    return summary
