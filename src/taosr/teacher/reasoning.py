"""CoT teachers: write the five-step reasoning that ends in the gold level.

TaoSR1 has a strong LLM write reasoning from retrieved atomic rules. Every teacher here has the
same interface, `Teacher.reason(record) -> Reasoning | None`, so that SFT data, DPO's oracle pairs
and later an LLM teacher all go through one door. The rule-based teacher needs no model: it runs
the rule engine and verbalises its facts in the five steps
query understanding -> item understanding -> category matching -> attribute matching -> judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..kb.rules import Judgement, KnowledgeBase, default_kb, judge
from ..labels import LEVEL_NAMES, to_level
from ..records import Record


@dataclass(frozen=True)
class Reasoning:
    text: str  # the five steps, plain text, no tags
    level: int  # the label the teacher gives (its reasoning's conclusion, unless the teacher contradicts itself)
    rule_ids: tuple[str, ...]  # rules the reasoning relied on
    error: str | None = None  # the kind of error a noisy teacher made here (teacher/noise.py), None when exact


class Teacher(Protocol):
    def reason(self, record: Record) -> Reasoning | None: ...


class RuleTeacher:
    """Reasoning verbalised from `taosr.kb.rules.judge`; consistent with the gold label by construction."""

    def __init__(self, kb: KnowledgeBase | None = None):
        self.kb = kb or default_kb()

    def reason(self, record: Record) -> Reasoning | None:
        j = judge(record, self.kb)
        if j is None:
            return None
        return Reasoning(text=verbalise(record, j), level=j.level, rule_ids=tuple(j.fired))


def verbalise(record: Record, j: Judgement) -> str:
    """The five reasoning steps of a judgement, as one line of plain text ending in "judgement: <level>."."""
    s = j.spec
    q = f"query: {' or '.join(sorted(s.categories))}"
    want = " ".join(f"{v}" for v in s.wants.values())
    if want:
        q += f", wants {want}"
    if s.excludes:
        q += f", excludes {' '.join(s.excludes.values())}"
    if s.alt_brand:
        q += f", cheaper than {s.alt_brand}"
    if s.occasion:
        q += f", for {s.occasion}"
    if s.task:
        q += f", for {s.task}"
    attrs = " ".join(record.attributes[a] for a in sorted(record.attributes))
    item = f"item: {record.category}, {record.brand or 'no brand'}, {attrs}"
    cat = f"category: {j.category_match}"
    checks = "; ".join(j.checks) if j.checks else "no constraint"
    return f"{q}. {item}. {cat}. attributes: {checks}. judgement: {LEVEL_NAMES[j.level].lower()}."


class FileTeacher:
    """Reasoning written earlier by `taosr cot` (any teacher), read from its JSONL output by pair id.

    Only rows with status "ok" are used; a pair without one gets None (and SFT lists it as a reject).
    Lines that cannot be used (not JSON, no valid label, reasoning longer than `max_chars`) are listed
    in `rejects` with their line number and reason, never read into memory whole beyond one line.
    """

    def __init__(self, path, max_chars: int = 4000):
        import json
        from pathlib import Path

        self.by_id: dict[str, Reasoning] = {}
        self.rejects: list[dict] = []
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                    if row.get("status") != "ok" or not row.get("reasoning"):
                        continue
                    text = str(row["reasoning"])
                    if len(text) > max_chars:
                        raise ValueError(f"reasoning of {len(text)} characters (limit {max_chars})")
                    self.by_id[str(row["id"])] = Reasoning(text, to_level(row.get("label")),
                                                           tuple(row.get("rule_ids") or ()))
                except (ValueError, KeyError, RecursionError) as e:
                    self.rejects.append({"file": str(path), "row": n, "reason": " ".join(str(e).split())[:200]})

    def reason(self, record: Record) -> Reasoning | None:
        return self.by_id.get(record.id)
