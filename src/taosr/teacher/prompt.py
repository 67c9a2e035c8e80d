"""The teacher's prompt and the checks on its answer (used by `taosr.teacher.llm` and `taosr.teacher.cot`).

The prompt gives the pair as one JSON line, the retrieved atomic rules and the gold level, and asks
for the five reasoning steps; `clean_reasoning` strips markup and think blocks from the answer, and
`check` says whether it is usable (ok / inconsistent / failed) and which rules it cites.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..kb.rules import Rule, default_kb
from ..labels import LEVEL_NAMES, SPECIAL_TOKENS, conclusion_of
from ..prompts import plain_text
from ..records import Record
from .reasoning import Reasoning

STEPS = (  # (line prefix, step) -- the prefixes are the rule-based teacher's, so both read alike
    ("query:", "query understanding: what the query asks for (category, required and excluded values, occasion, task)"),
    ("item:", "item understanding: what the item is (category, brand, key attributes)"),
    ("category:", "category matching: same, near (sibling) or different category"),
    ("attributes:", "attribute matching: each constraint of the query checked against the item"),
    ("judgement:", "judgement: the level"),
)
PAIR_FENCE = "```json"
_PAIR_RE = re.compile(r"```json[ \t]*\r?\n(\{.*\})[ \t]*\r?\n```")  # json.dumps writes one line
_VERDICT_RE = re.compile(r"[*_]*judge?ment[*_ ]*:[*_ ]*(excellent|related|mismatch|irrelevant)\b[*_]*\.?", re.I)
_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.S)


def _level_word(level: int) -> str:
    return LEVEL_NAMES[level].lower()


def pair_json(record: Record, max_description_chars: int = 600) -> dict:
    """The pair as the teacher sees it (no label); the description is de-HTMLed and cut."""
    d = record.model_dump(exclude_none=True, exclude={"label"})
    if "description" in d:
        text = plain_text(d["description"])[:max_description_chars]
        if text:
            d["description"] = text
        else:
            d.pop("description")
    return d


def build_teacher_prompt(record: Record, rules: list[Rule], gold: int,
                         max_description_chars: int = 600) -> list[dict]:
    """Chat messages asking the teacher to explain, in five steps, why the pair has level `gold`.

    The pair is embedded as one ```json block (what `extract_pair` and `RuleBackend` read back).
    """
    steps = "\n".join(f"{i}. `{p}` {d}" for i, (p, d) in enumerate(STEPS, 1))
    levels = ", ".join(f"{_level_word(lv)} ({lv})" for lv in sorted(LEVEL_NAMES, reverse=True))
    system = (
        "You are an e-commerce search relevance expert. You explain why a (query, item) pair has the "
        f"relevance level it has. Levels: {levels}.\n"
        "Write exactly five lines, one per step, each starting with its prefix:\n"
        f"{steps}\n"
        f"The last line must be exactly `judgement: <{'|'.join(_level_word(lv) for lv in (4, 3, 2, 1))}>.` "
        "Cite the ids of the rules you apply. Be brief and factual; no markdown, no other text."
    )
    rule_lines = "\n".join(f"- {r.id} (-> {_level_word(r.level)}): {r.text}" for r in rules) or "- (none retrieved)"
    pair_line = json.dumps(pair_json(record, max_description_chars), ensure_ascii=False, sort_keys=True)
    user = (
        f"Rules:\n{rule_lines}\n\n"
        f"Pair:\n{PAIR_FENCE}\n{pair_line}\n```\n\n"
        f"The gold level is {_level_word(gold)}. Explain it in the five steps; "
        f"end with `judgement: {_level_word(gold)}.`"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def extract_pair(messages: list[dict]) -> Record | None:
    """The pair embedded by `build_teacher_prompt` (last user message holding one), or None."""
    for m in reversed(messages):
        content = m.get("content")
        if m.get("role") != "user" or not isinstance(content, str):
            continue
        match = _PAIR_RE.search(content)
        if match:
            try:
                return Record.model_validate(json.loads(match.group(1)))
            except (ValueError, TypeError):
                return None
    return None


def clean_reasoning(text: str) -> str:
    """Drop a `<think>` block (R1-style models), code fences and blank lines; keep up to the judgement."""
    text = _THINK_BLOCK_RE.sub(" ", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    lines = [ln.strip() for ln in text.strip().strip("`").splitlines()]
    text = "\n".join(ln for ln in lines if ln and not ln.startswith("```"))
    # "Judgment: **Mismatch**" and the like -> "judgement: mismatch." (what `conclusion_of` reads)
    text = _VERDICT_RE.sub(lambda m: f"judgement: {m.group(1).lower()}.", text)
    idx = text.rfind("judgement:")
    if idx >= 0:  # cut anything written after the judgement sentence
        end = text.find(".", idx)
        text = text[: end + 1] if end >= 0 else text
    return text.strip()


@dataclass(frozen=True)
class Outcome:
    """What a teacher made of one pair."""

    status: str  # ok / inconsistent / failed
    reasoning: Reasoning | None = None  # set when ok
    reason: str | None = None  # why not ok
    text: str | None = None  # the last raw answer (also for rejected ones)
    attempts: int = 0
    rule_ids: tuple[str, ...] = ()


_RULE_ID_RE = re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b")


def cited_rules(text: str, known: set[str] | None = None) -> tuple[str, ...]:
    """Rule ids written in `text`, in order of first mention (only ids of the knowledge base)."""
    if known is None:
        known = set(default_kb().rules)
    return tuple(dict.fromkeys(m for m in _RULE_ID_RE.findall(text) if m in known))


def check(text: str, gold: int, rule_ids: tuple[str, ...],
          known: set[str] | None = None) -> tuple[Reasoning | None, str | None]:
    """Accept `text` as reasoning for `gold`, or say why not.

    The Reasoning's rule_ids are the knowledge-base rules the text cites, else the retrieved `rule_ids`.
    """
    clean = clean_reasoning(text)
    if not clean:
        return None, "empty answer"
    if any(t in clean for t in SPECIAL_TOKENS):
        return None, "answer contains a reserved tag"
    level = conclusion_of(clean)
    if level is None:
        return None, "no `judgement: <level>.` conclusion"
    if level != gold:
        return None, f"concludes {_level_word(level)}, gold is {_level_word(gold)}"
    cited = cited_rules(clean, known)
    return Reasoning(text=clean, level=level, rule_ids=cited or rule_ids), None
