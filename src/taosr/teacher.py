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

from .labels import LEVEL_NAMES
from .records import Record
from .rules import KnowledgeBase, default_kb, judge


@dataclass(frozen=True)
class Reasoning:
    text: str  # the five steps, plain text, no tags
    level: int  # the level the reasoning concludes
    rule_ids: tuple[str, ...]  # rules the reasoning relied on


class Teacher(Protocol):
    def reason(self, record: Record) -> Reasoning | None: ...


def conclusion_of(text: str) -> int | None:
    """The level a reasoning text concludes ("... judgement: mismatch."), or None."""
    tail = text.rsplit("judgement:", 1)
    if len(tail) < 2:
        return None
    word = tail[1].strip().split()[0].strip(".,;").lower() if tail[1].strip() else ""
    for lvl, name in LEVEL_NAMES.items():
        if name.lower() == word:
            return lvl
    return None


class RuleTeacher:
    """Reasoning verbalised from `taosr.rules.judge`; consistent with the gold label by construction."""

    def __init__(self, kb: KnowledgeBase | None = None):
        self.kb = kb or default_kb()

    def reason(self, record: Record) -> Reasoning | None:
        j = judge(record, self.kb)
        if j is None:
            return None
        s = j.spec
        asks = sorted(s.categories)
        want = " ".join(f"{v}" for v in s.wants.values())
        q = f"query: {' or '.join(asks)}"
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
        text = f"{q}. {item}. {cat}. attributes: {checks}. judgement: {LEVEL_NAMES[j.level].lower()}."
        return Reasoning(text=text, level=j.level, rule_ids=tuple(j.fired))


class FileTeacher:
    """Reasoning written earlier by `taosr cot` (any teacher), read from its JSONL output by pair id.

    Only rows with status "ok" are used; a pair without one gets None (and SFT lists it as a reject).
    """

    def __init__(self, path):
        import json
        from pathlib import Path

        self.by_id: dict[str, Reasoning] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("status") == "ok" and row.get("reasoning"):
                self.by_id[str(row["id"])] = Reasoning(row["reasoning"], int(row["label"]), tuple(row.get("rule_ids") or ()))

    def reason(self, record: Record) -> Reasoning | None:
        return self.by_id.get(record.id)
