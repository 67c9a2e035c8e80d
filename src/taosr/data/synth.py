"""`taosr synth`: a seeded synthetic e-commerce relevance benchmark, hard where TaoSR1's test set is.

Queries come in six types (plain, attribute, negation, affordable alternative, Q&A, knowledge) over a
catalogue with a category tree, brands in price tiers and a small knowledge base (`kb/rules.yaml`).
For every query we draw items aimed at a target level from the label mix, and keep an item only
when the rule engine (`taosr.kb.rules.judge`) gives it exactly that level: gold labels always come from
the written rules, never from the generator's intent. Splits share no query string.
"""

from __future__ import annotations

import random

from pydantic import Field

from ..kb.rules import KnowledgeBase, QuerySpec, default_kb, judge
from ..records import Record
from .splits import SplitConfig, split_by_query

QUERY_TYPES = ("plain", "attribute", "negation", "alternative", "qa", "knowledge")


class SynthConfig(SplitConfig):
    """Size and shape of the synthetic benchmark, and its split (`seed` seeds both)."""

    n_queries: int = Field(3000, ge=3, description="Number of generated queries (before splitting).")
    items_per_query: int = Field(4, ge=1, description="Items judged per query.")
    label_mix: dict[int, float] = Field(
        default_factory=lambda: {4: 0.50, 3: 0.05, 2: 0.36, 1: 0.09},
        description="Target share of each level (the paper's test mix by default).",
    )
    query_type_mix: dict[str, float] = Field(
        default_factory=lambda: {"plain": 0.10, "attribute": 0.30, "negation": 0.15,
                                 "alternative": 0.15, "qa": 0.15, "knowledge": 0.15},
        description="Share of each query type.",
    )
    max_tries: int = Field(200, description="Item proposals per target level before giving up on that level.")


# ---------------------------------------------------------------- queries

def _make_query(rng: random.Random, qtype: str, kb: KnowledgeBase) -> str:
    parent = rng.choice(list(kb.categories))
    cat = rng.choice(kb.categories[parent])
    attrs = kb.attributes[parent]
    if qtype == "plain":
        return rng.choice(["{c}", "{c} sale", "best {c}"]).format(c=cat)
    if qtype == "attribute":
        options = ["brand", "color"] + [a for a in ("material", "gender") if a in attrs]
        chosen = set(rng.sample(options, rng.randint(1, min(3, len(options)))))
        brand = rng.choice([b for t in kb.brands[parent].values() for b in t]) if "brand" in chosen else None
        parts = [brand, rng.choice(kb.colors) if "color" in chosen else None,
                 rng.choice(attrs["material"]) if "material" in chosen else None, cat]
        q = " ".join(p for p in parts if p)
        return q + (f" for {rng.choice(attrs['gender'])}" if "gender" in chosen else "")
    if qtype == "negation":
        kinds = ["color", "brand"] + (["material", "material"] if "material" in attrs else [])
        kind = rng.choice(kinds)
        if kind == "brand":
            return f"{cat} not from {rng.choice([b for t in kb.brands[parent].values() for b in t])}"
        val = rng.choice(kb.colors if kind == "color" else attrs["material"])
        return f"{cat} {rng.choice(['not', 'without'])} {val}"
    if qtype == "alternative":
        brand = rng.choice(kb.brands[parent]["premium"])
        return rng.choice(["cheaper alternative to {b} {c}", "{b} {c} dupe",
                           "affordable {c} like {b}"]).format(b=brand, c=cat)
    if qtype == "qa":
        occ = rng.choice(list(kb.occasions))
        return rng.choice(["what to wear for {o}", "what should i wear for a {o}"]).format(o=occ)
    if qtype == "knowledge":
        task = rng.choice(list(kb.tasks))
        c = rng.choice(kb.tasks[task]["categories"])
        return rng.choice(["{c} for {t}", "{c} that can handle {t}", "{c} good for {t}"]).format(c=c, t=task)
    raise ValueError(f"unknown query type {qtype!r}")


# ---------------------------------------------------------------- items

def _propose_item(rng: random.Random, query: str, target: int, kb: KnowledgeBase) -> Record:
    spec = judge_spec(query, kb)
    cats = sorted(spec.categories)
    if target == 1:
        others = [c for c in kb.parent_of if c not in spec.categories and c not in kb.siblings(spec.categories)]
        cat = rng.choice(others)
    elif target == 3 and rng.random() < 0.5:
        cat = rng.choice(sorted(kb.siblings(spec.categories)))
    else:
        cat = rng.choice(cats)
    parent = kb.parent_of[cat]
    attributes = {"color": rng.choice(kb.colors)}
    for name, values in kb.attributes[parent].items():
        attributes[name] = rng.choice(values)
    tiers = kb.brands[parent]
    tier = rng.choice(list(tiers))
    brand = rng.choice(tiers[tier])
    # Lean towards satisfying the query so every level is reachable in a few proposals.
    for name, value in spec.wants.items():
        if rng.random() < 0.75 and (name == "brand" and value in kb.brand_tier or name in attributes):
            if name == "brand":
                if kb.parent_of[cat] == kb.parent_of[cats[0]]:
                    brand, tier = value, kb.brand_tier[value]
            elif value in kb.attributes[parent].get(name, kb.colors):
                attributes[name] = value
    if spec.occasion and rng.random() < 0.6 and "material" in attributes:
        ok = [m for m in kb.attributes[parent]["material"] if m in kb.occasions[spec.occasion]["materials"]]
        attributes["material"] = rng.choice(ok or kb.attributes[parent]["material"])
    lo, hi = kb.price_ranges[tier]
    title_parts = [brand, attributes["color"], attributes.get("material"), cat]
    title = " ".join(p for p in title_parts if p)
    if "gender" in attributes:
        title += f" for {attributes['gender']}"
    if "ram" in attributes:
        title += f" {attributes['ram']}gb ram"
    if "watt" in attributes:
        title += f" {attributes['watt']}w"
    return Record(query=query, title=title, category=cat, brand=brand, attributes=attributes,
                  price=float(rng.randint(int(lo), int(hi))))


def judge_spec(query: str, kb: KnowledgeBase):
    spec = QuerySpec.parse(query, kb)
    if spec is None:
        raise ValueError(f"generator produced a query outside the rule grammar: {query!r}")
    return spec


def _levels_for(qtype: str) -> tuple[int, ...]:
    return (4, 3, 1) if qtype == "plain" else (4, 3, 2, 1)


def generate(cfg: SynthConfig, kb: KnowledgeBase | None = None) -> dict[str, list[Record]]:
    """Return {"train": [...], "dev": [...], "test": [...]} of labelled Records."""
    kb = kb or default_kb()
    rng = random.Random(cfg.seed)
    types, weights = zip(*cfg.query_type_mix.items())
    pairs: list[Record] = []
    for qi in range(cfg.n_queries):
        qtype = rng.choices(types, weights)[0]
        query = _make_query(rng, qtype, kb)
        allowed = list(_levels_for(qtype))
        for j in range(cfg.items_per_query):
            verdict = None
            while verdict is None:
                target = rng.choices(allowed, [cfg.label_mix.get(lv, 0.0) for lv in allowed])[0]
                for _ in range(cfg.max_tries):
                    item = _propose_item(rng, query, target, kb)
                    v = judge(item, kb)
                    if v is not None and v.level == target:
                        verdict = v
                        break
                else:  # this query cannot reach that level (e.g. "pink kettle" has no hard attribute)
                    allowed.remove(target)
            pairs.append(item.model_copy(update={"id": f"q{qi}-{j}", "label": verdict.level, "query_type": qtype}))
    return split_by_query(pairs, cfg.dev_frac, cfg.test_frac, seed=cfg.seed)
