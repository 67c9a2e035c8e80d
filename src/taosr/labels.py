"""Relevance levels, their names and tokens, tiers, and the parsers of model outputs and reasoning.

Four ordered levels (TaoSR1): 4 Excellent, 3 Related, 2 Mismatch, 1 Irrelevant.
Online they collapse into tiers: Good (4, 3), Mid (2), Bad (1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVELS = (1, 2, 3, 4)
LEVEL_NAMES = {4: "Excellent", 3: "Related", 2: "Mismatch", 1: "Irrelevant"}
TIERS = {4: "Good", 3: "Good", 2: "Mid", 1: "Bad"}

# Single tokens the model emits as its answer. Readable, and never collide with normal text.
LABEL_TOKENS = {4: "<excellent>", 3: "<related>", 2: "<mismatch>", 1: "<irrelevant>"}
TOKEN_TO_LEVEL = {tok: lvl for lvl, tok in LABEL_TOKENS.items()}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
SPECIAL_TOKENS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, *LABEL_TOKENS.values()]

# Every spelling a dataset may use for a level (lower-cased keys).
_ALIASES: dict[str, int] = {
    "4": 4, "3": 3, "2": 2, "1": 1,
    "excellent": 4, "related": 3, "mismatch": 2, "irrelevant": 1,
    # ESCI: Exact / Substitute / Complement / Irrelevant
    "e": 4, "exact": 4, "s": 3, "substitute": 3, "c": 2, "complement": 2, "i": 1,
    # WANDS: Exact / Partial / Irrelevant (Partial -> Related)
    "partial": 3,
    # OpenSearch ESCI judgments: 100 / 10 / 1 / 0 (E / S / C / I)
    "100": 4, "10": 3, "0": 1,
}
_ALIASES.update({tok: lvl for tok, lvl in TOKEN_TO_LEVEL.items()})


def to_level(value: object) -> int:
    """Map any accepted label spelling (1-4, names, ESCI/WANDS words, label tokens) to 1-4.

    Raises ValueError with the offending value for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a relevance label: {value!r}")
    if isinstance(value, (int, float)):
        if float(value).is_integer() and int(value) in LEVELS:
            return int(value)
        if float(value) in (100.0, 10.0, 0.0):
            return _ALIASES[str(int(value))]
        raise ValueError(f"not a relevance label: {value!r} (expected 1-4)")
    if isinstance(value, str):
        key = value.strip().lower()
        try:
            return _ALIASES[key]
        except KeyError:
            try:  # "4.0", "100.000"
                return to_level(float(key))
            except ValueError:
                pass
    raise ValueError(
        f"not a relevance label: {value!r} (expected 1-4, Excellent/Related/Mismatch/Irrelevant, "
        "or ESCI's E/S/C/I / Exact/Substitute/Complement/Irrelevant)"
    )


def tier(level: int) -> str:
    return TIERS[level]


@dataclass(frozen=True)
class Parsed:
    """What the parser read from a generated response."""

    level: int | None  # None when the response has no single well-formed answer
    error: str | None = None  # why it could not be parsed

    @property
    def ok(self) -> bool:
        return self.level is not None


_ANSWER_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.S)
_THINK_RE = re.compile(re.escape(THINK_OPEN) + r".*?" + re.escape(THINK_CLOSE), re.S)


def parse_response(text: str) -> Parsed:
    """Read the level from `...<answer>LABEL</answer>...`.

    Strict by design (the same parser scores evaluation and the GRPO reward):
    exactly one answer block outside the reasoning, whose content is one label
    (token, name or digit). A label mentioned inside <think>...</think> never counts.
    """
    outside = _THINK_RE.sub(" ", text)
    if THINK_OPEN in outside:  # unterminated reasoning: drop everything after it
        outside = outside.split(THINK_OPEN, 1)[0]
    answers = _ANSWER_RE.findall(outside)
    if not answers:
        return Parsed(None, "no <answer>...</answer> block")
    if len(answers) > 1:
        return Parsed(None, f"{len(answers)} answer blocks")
    content = answers[0].strip()
    try:
        return Parsed(to_level(content))
    except ValueError:
        return Parsed(None, f"answer is not a label: {content[:40]!r}")


def format_answer(level: int) -> str:
    return f"{ANSWER_OPEN}{LABEL_TOKENS[level]}{ANSWER_CLOSE}"


def conclusion_of(text: str) -> int | None:
    """The level a teacher's reasoning text concludes ("... judgement: mismatch."), or None."""
    tail = text.rsplit("judgement:", 1)
    if len(tail) < 2:
        return None
    word = tail[1].strip().split()[0].strip(".,;").lower() if tail[1].strip() else ""
    for lvl, name in LEVEL_NAMES.items():
        if name.lower() == word:
            return lvl
    return None
