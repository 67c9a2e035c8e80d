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
from typing import Literal

from pydantic import Field

from ..io import to_json, write_jsonl
from ..progress import progress_bar
from ..records import Record
from ..settings import StrictConfig
from .prompt import Outcome, check
from .reasoning import Teacher

STATUSES = ("ok", "inconsistent", "failed")


class TeacherConfig(StrictConfig):
    """Which teacher `taosr cot` asks, and how (the HTTP settings apply to teacher=openai)."""

    teacher: Literal["auto", "rules", "fields", "openai", "local"] = Field(
        "auto", description="auto (rules where the rule engine parses the pair, fields elsewhere) | rules (the "
        "synthetic catalogue's rule engine) | fields (offline, from the item's own fields, any catalogue) | openai "
        "(an OpenAI-compatible server: the best reasoning) | local (a local transformers model, --model).")
    base_url: str = Field("http://127.0.0.1:8001", description="teacher=openai: the server's address.")
    server_model: str = Field("taosr-rules", description="teacher=openai: the model name sent to the server.")
    api_key_env: str = Field("OPENAI_API_KEY", description="teacher=openai: environment variable holding the API key.")
    concurrency: int = Field(4, ge=1, description="teacher=openai: requests in flight.")
    timeout_s: float = Field(30.0, gt=0, description="teacher=openai: deadline in seconds for each request's whole "
                             "answer (then retried).")
    max_retries: int = Field(3, ge=0,
                             description="teacher=openai: retries on errors and timeouts (exponential backoff).")
    max_attempts: int = Field(2, ge=1, description="Asks per pair until the reasoning concludes the gold label.")
    k: int = Field(3, ge=0, description="Rules retrieved per pair.")
    embeddings: bool = Field(False, description="Fuse MiniLM embeddings into rule retrieval.")


def make_teacher(cfg: TeacherConfig, model: Path | None = None, cache: Path | None = None):
    """The teacher `cfg` names: rule-based, over HTTP (answers cached in the SQLite file `cache`), or the local
    model folder `model`."""
    if cfg.teacher in ("auto", "rules", "fields"):
        from .fields import AutoTeacher, FieldTeacher
        from .reasoning import RuleTeacher

        return {"auto": AutoTeacher, "rules": RuleTeacher, "fields": FieldTeacher}[cfg.teacher]()
    from .retrieval import RuleRetriever

    retriever = RuleRetriever(use_embeddings=cfg.embeddings)
    if cfg.teacher == "openai":
        from .http import OpenAITeacher

        return OpenAITeacher(cfg.base_url, cfg.server_model, api_key=os.environ.get(cfg.api_key_env),
                             concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                             max_attempts=cfg.max_attempts, k=cfg.k, retriever=retriever, cache_path=cache)
    from .llm import LocalTeacher

    if model is None:
        raise ValueError("teacher=local needs a model folder (--model)")
    return LocalTeacher(model, retriever=retriever, k=cfg.k, max_attempts=cfg.max_attempts)


def pair_id(record: Record) -> str:
    """The record's id, or a stable hash of (query, title) when it has none."""
    if record.id:
        return record.id
    return "h" + hashlib.sha1(f"{record.query}\t{record.title}".encode()).hexdigest()[:12]


def teacher_name(teacher) -> str:
    return getattr(teacher, "name", None) or type(teacher).__name__


def no_reasoning(teacher) -> str:
    """Why `teacher` wrote nothing for a pair, and what to use instead."""
    from .fields import RULES_CANNOT
    from .reasoning import RuleTeacher

    return RULES_CANNOT if isinstance(teacher, RuleTeacher) else "teacher returned no reasoning"


def _explain(teacher, record: Record) -> tuple[object, str]:
    """(reasoning or None, the name of the teacher that wrote it): `AutoTeacher` says which of its teachers ran."""
    if hasattr(teacher, "explain"):
        return teacher.explain(record)
    return teacher.reason(record), teacher_name(teacher)


def _outcomes(teacher, records: list[Record]) -> list[tuple[Outcome, str]]:
    """(outcome, teacher name) from an LLM teacher, or from any `Teacher` (`reason` only) checked against gold."""
    name = teacher_name(teacher)
    if hasattr(teacher, "outcome_many"):
        return [(o, name) for o in teacher.outcome_many(records)]
    out = []
    for r in records:
        try:
            reasoning, name = _explain(teacher, r)
        except Exception as e:  # noqa: BLE001 -- recorded as a failed row, never lost
            out.append((Outcome("failed", reason=f"{type(e).__name__}: {e}"), name))
            continue
        if reasoning is None:
            out.append((Outcome("failed", reason=no_reasoning(teacher)), name))
            continue
        ok, why = check(reasoning.text, r.label, reasoning.rule_ids)
        if ok is None or reasoning.level != r.label:
            out.append((Outcome("inconsistent", reason=why or "level differs from gold", text=reasoning.text,
                                attempts=1, rule_ids=reasoning.rule_ids), name))
        else:
            out.append((Outcome("ok", reasoning, text=reasoning.text, attempts=1, rule_ids=reasoning.rule_ids), name))
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


def run_cot(records: list[Record], teacher: Teacher, out_path: Path, retry_failed: bool = True,
            chunk_size: int = 32, verbose: bool = True) -> dict:
    """Write teacher reasoning for `records` to `out_path` (JSONL); return the counts (see module doc)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    raw = out_path.read_text(encoding="utf-8") if out_path.exists() else ""  # the one read of the file
    existing = parse_rows(raw)
    kept = [r for r in existing if not (retry_failed and r.get("status") == "failed")]
    clean = raw == "".join(to_json(r, None) + "\n" for r in existing)
    if len(kept) != len(existing) or not clean:
        write_jsonl(out_path, kept)  # drop failed rows to redo, and any half-written line
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
    teachers: Counter[str] = Counter()  # pairs with usable reasoning, per teacher that wrote them
    with progress_bar(len(todo), f"cot ({name})") as advance, out_path.open("a", encoding="utf-8") as f:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            outcomes = _outcomes(teacher, [rec for _, rec in chunk])
            for (rid, rec), (outcome, who) in zip(chunk, outcomes):
                f.write(to_json(row_for(rec, rid, outcome, who), None) + "\n")
                counts[outcome.status] += 1
                teachers[who] += outcome.status == "ok"
            f.flush()
            advance(len(chunk), info=" ".join(f"{s}={counts[s]}" for s in STATUSES))

    file_counts = Counter(r.get("status") for r in kept) + Counter({s: counts[s] for s in STATUSES})
    summary = {
        "out": str(out_path), "teacher": name, "records": len(records), "written": sum(counts[s] for s in STATUSES),
        **{s: counts[s] for s in STATUSES},
        "resumed": counts["resumed"], "unlabelled": counts["unlabelled"], "duplicate_id": counts["duplicate_id"],
        "file": {s: file_counts.get(s, 0) for s in STATUSES},
        "ok_by_teacher": dict(sorted(teachers.items())),
    }
    if isinstance(getattr(teacher, "stats", None), dict):
        summary["teacher_stats"] = dict(teacher.stats)
    if verbose:
        print(cot_line(summary))
    return summary


def cot_line(summary: dict) -> str:
    """The readable one-line summary of a `run_cot` result."""
    by = ", ".join(f"{k} {v}" for k, v in summary["ok_by_teacher"].items()) or "none"
    return (f"cot ({summary['teacher']}): {summary['written']} written -> {summary['out']} | "
            + " ".join(f"{s}={summary[s]}" for s in STATUSES)
            + f" | reasoning by teacher: {by} | resumed={summary['resumed']} unlabelled={summary['unlabelled']} "
              f"duplicate_id={summary['duplicate_id']} | file: {summary['file']}")
