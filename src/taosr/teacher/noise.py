"""A rule teacher that errs the way an LLM teacher does, for the benchmark's noisy-teacher regimes.

TaoSR1's teacher is an LLM: its chains of thought go wrong on hard query types, and sometimes sound
reasoning ends in the wrong label. The exact rule teacher never errs, so here errors are injected, one
per affected pair, seeded by the pair (the same pair always gets the same error):

- `misapplied`: a rule applied wrongly: a negation dropped or read as a requirement, a brand's price tier
  misread, an occasion or task check skipped, a task's minimum spec misremembered, a requirement of the
  query skipped, a near category taken for the asked one. The reasoning follows the misreading.
- `hallucinated`: an item attribute (brand, colour, material, gender, a spec) stated wrongly in the item
  step; the later checks follow the hallucinated value.
- `contradiction`: the reasoning is right and concludes the gold level, but the label given is another
  one (discriminative hallucination).

An error is drawn only where it changes the label (`misapplied` and `hallucinated` fall back to the next
kind when no candidate does), so at rate r the teacher's label differs from gold on about r of the pairs
of the affected query types. Gold labels are never touched: the benchmark's labels come from `judge`.
"""

from __future__ import annotations

import copy
import random

from pydantic import BaseModel, Field

from ..kb.rules import KnowledgeBase, QuerySpec, default_kb, judge
from ..records import Record
from .reasoning import Reasoning, RuleTeacher, verbalise

ERROR_KINDS = ("misapplied", "hallucinated", "contradiction")
HARD_QUERY_TYPES = ["negation", "alternative", "qa", "knowledge"]


class TeacherNoiseConfig(BaseModel):
    """The rule teacher's error model (0 = the exact teacher)."""

    error_rate: float = Field(0.0, ge=0, le=1, description="Share of the affected pairs on which the teacher errs "
                              "(its label then differs from gold).")
    query_types: list[str] = Field(default_factory=lambda: list(HARD_QUERY_TYPES),
                                   description="Query types the error rate applies to (LLM teachers err on the hard "
                                   "ones); other types get `rates` or no errors.")
    rates: dict[str, float] = Field(default_factory=dict, description="Per-query-type error rates, overriding "
                                    "error_rate for those types, e.g. {'negation': 0.4, 'plain': 0.05}.")
    kinds: dict[str, float] = Field(default_factory=lambda: {"misapplied": 0.4, "hallucinated": 0.3,
                                                             "contradiction": 0.3},
                                    description=f"Relative weight of each error kind ({', '.join(ERROR_KINDS)}).")
    seed: int = Field(0, description="Seeds the per-pair draws (with the pair's id, query and title).")

    def rate(self, query_type: str | None) -> float:
        if query_type in self.rates:
            return self.rates[query_type]
        return self.error_rate if query_type in self.query_types else 0.0

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or any(v > 0 for v in self.rates.values())


class NoisyRuleTeacher:
    """`RuleTeacher` with `TeacherNoiseConfig`'s errors; `Reasoning.error` names the kind of each error made."""

    def __init__(self, noise: TeacherNoiseConfig, kb: KnowledgeBase | None = None):
        self.noise, self.kb = noise, kb or default_kb()
        self.exact = RuleTeacher(self.kb)

    def reason(self, record: Record) -> Reasoning | None:
        right = self.exact.reason(record)
        if right is None:
            return None
        qtype = record.query_type or (QuerySpec.parse(record.query, self.kb) or QuerySpec("plain", set())).query_type
        rng = random.Random(f"{self.noise.seed}|{record.id}|{record.query}|{record.title}")
        if rng.random() >= self.noise.rate(qtype):
            return right
        kinds = [k for k in ERROR_KINDS if self.noise.kinds.get(k, 0) > 0]
        first = rng.choices(kinds, [self.noise.kinds[k] for k in kinds])[0]
        for kind in [first] + [k for k in ERROR_KINDS if k != first]:  # fall back until the label changes
            out = getattr(self, kind)(record, right, rng)
            if out is not None:
                return out
        return right  # unreachable: a contradiction always changes the label

    # ---------------------------------------------------------- error kinds
    def misapplied(self, record: Record, right: Reasoning, rng: random.Random) -> Reasoning | None:
        spec = QuerySpec.parse(record.query, self.kb)
        options: list[dict] = []
        for attr, value in spec.excludes.items():
            options.append({"spec": replace(spec, excludes={})})  # negation dropped
            if attr != "brand":  # the excluded value read as the wanted one
                options.append({"spec": replace(spec, excludes={}, wants={**spec.wants, attr: value})})
        for attr in spec.wants:  # one requirement skipped
            options.append({"spec": replace(spec, wants={k: v for k, v in spec.wants.items() if k != attr})})
        if spec.alt_brand:
            brand = (record.brand or "").lower()
            for tier in ("premium", "mid", "budget"):
                if tier != self.kb.brand_tier.get(brand):
                    options.append({"tiers": {brand: tier}})
        if spec.occasion:
            options.append({"spec": replace(spec, occasion=None)})
        if spec.task:
            least = self.kb.tasks[spec.task]["min"]
            options += [{"spec": replace(spec, task=None)}, {"task_min": least * 2}, {"task_min": least / 2}]
        cat = (record.category or "").lower()
        if cat in self.kb.siblings(spec.categories):
            options.append({"spec": replace(spec, categories=spec.categories | {cat})})
        return self.first_changed(record, record, options, right, rng, "misapplied")

    def hallucinated(self, record: Record, right: Reasoning, rng: random.Random) -> Reasoning | None:
        parent = self.kb.parent_of.get((record.category or "").lower())
        if parent is None:
            return None
        seen: list[Record] = []
        brands = [b for tier in self.kb.brands[parent].values() for b in tier]
        for b in brands:
            if b != (record.brand or "").lower():
                seen.append(record.model_copy(update={"brand": b}))
        values = {"color": self.kb.colors, **self.kb.attributes[parent]}
        for attr, options in values.items():
            for v in options:
                if v != record.attributes.get(attr):
                    seen.append(record.model_copy(update={"attributes": {**record.attributes, attr: v}}))
        return self.first_changed(record, None, [{"record": r} for r in seen], right, rng, "hallucinated")

    def contradiction(self, record: Record, right: Reasoning, rng: random.Random) -> Reasoning:
        others = [lv for lv in (right.level - 1, right.level + 1) if 1 <= lv <= 4]
        return Reasoning(right.text, rng.choice(others), right.rule_ids, "contradiction")

    def first_changed(self, record: Record, seen: Record | None, options: list[dict], right: Reasoning,
                      rng: random.Random, kind: str) -> Reasoning | None:
        """A random option whose judgement changes the level, verbalised from what the teacher saw."""
        rng.shuffle(options)
        for opt in options:
            item = opt.pop("record", seen)
            j = judge(item, self.kb, **opt)
            if j is not None and j.level != right.level:
                return Reasoning(verbalise(item, j), j.level, tuple(j.fired), kind)
        return None


def replace(spec: QuerySpec, **changes) -> QuerySpec:
    out = copy.deepcopy(spec)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def make_teacher(noise: TeacherNoiseConfig | None = None, kb: KnowledgeBase | None = None):
    """The exact rule teacher, or the noisy one when `noise` is active."""
    return NoisyRuleTeacher(noise, kb) if noise is not None and noise.active else RuleTeacher(kb)
