"""`taosr synth`: a seeded synthetic e-commerce relevance benchmark, hard where TaoSR1's test set is.

Queries come in six types (plain, attribute, negation, affordable alternative, Q&A, knowledge), written
from the phrasings of the knowledge base (`kb/rules.yaml`: a category tree of 10 parents and 69 leaves,
brands in price tiers, colours and materials, occasions and tasks). Every query string is drawn once.
For every query we draw items aimed at a target level from the label mix, and keep an item only
when the rule engine (`taosr.kb.rules.judge`) gives it exactly that level: gold labels always come from
the written rules, never from the generator's intent. Splits share no query string.
"""

from __future__ import annotations

import random

from pydantic import Field

from ..kb.rules import KnowledgeBase, QuerySpec, default_kb, judge, spec_from_slots
from ..records import Record
from .splits import SplitConfig, split_by_query

QUERY_TYPES = ("plain", "attribute", "negation", "alternative", "qa", "knowledge")


class SynthConfig(SplitConfig):
    """Size and shape of the synthetic benchmark, and its split (`seed` seeds both)."""

    n_queries: int = Field(6000, ge=3, description="Distinct query strings generated (before splitting); every string "
                           "is drawn once, so no query repeats within or across splits.")
    items_per_query: int = Field(3, ge=1, description="Items judged per query.")
    dev_frac: float = Field(0.1, ge=0, lt=1, description="Share of query strings in the dev split.")
    test_frac: float = Field(0.2, ge=0, lt=1, description="Share of query strings in the test split.")
    label_mix: dict[int, float] = Field(
        default_factory=lambda: {4: 0.50, 3: 0.05, 2: 0.36, 1: 0.09},
        description="Target share of each level (the paper's test mix by default).",
    )
    query_type_mix: dict[str, float] = Field(
        default_factory=lambda: {"plain": 0.15, "attribute": 0.20, "negation": 0.17,
                                 "alternative": 0.16, "qa": 0.16, "knowledge": 0.16},
        description="Share of each query type.",
    )
    max_tries: int = Field(200, description="Item proposals per target level before giving up on that level.")


# ---------------------------------------------------------------- queries

def _fill(rng: random.Random, qtype: str, template: str, kb: KnowledgeBase) -> dict[str, str] | None:
    """Slot values for one template, consistent with each other (a brand of the category's parent, ...);
    None when the drawn category cannot fill it (a material slot for a category without materials)."""
    slots: dict[str, str] = {}
    if "{occ}" in template:
        slots["occ"] = rng.choice(list(kb.occasions))
        pool = kb.occasions[slots["occ"]]["categories"]
    elif "{t}" in template:
        slots["t"] = rng.choice(list(kb.tasks))
        pool = kb.tasks[slots["t"]]["categories"]
    else:
        pool = list(kb.parent_of)
    cat = rng.choice(pool)
    attrs = kb.attributes[kb.parent_of[cat]]
    tiers = kb.brands[kb.parent_of[cat]]
    if "{c}" in template:
        slots["c"] = cat
    if "{b}" in template:
        slots["b"] = rng.choice(tiers["premium"] if qtype == "alternative" else [b for t in tiers.values() for b in t])
    if "{col}" in template:
        slots["col"] = rng.choice(kb.colors)
    if "{m}" in template:
        if "material" not in attrs:
            return None
        slots["m"] = rng.choice(attrs["material"])
    if "{v}" in template:
        slots["v"] = rng.choice(kb.colors + attrs.get("material", []))
    if "{g}" in template or "{gw}" in template:
        gendered = [c for c in ([cat] if "{c}" in template else pool) if "gender" in kb.attributes[kb.parent_of[c]]]
        if not gendered:
            return None
        gender = rng.choice(kb.genders())
        if "{g}" in template:
            slots["g"] = gender
        else:
            slots["gw"] = rng.choice([p for p, g in kb.persons.items() if g == gender])
    return slots


def _make_query(rng: random.Random, qtype: str, kb: KnowledgeBase) -> tuple[str, QuerySpec]:
    """A query of type `qtype` and what it asks for; the rule parser must read the same spec back."""
    for _ in range(1000):
        template = rng.choice(kb.templates[qtype])
        slots = _fill(rng, qtype, template, kb)
        if slots is None:
            continue
        query = template.format(**slots)
        spec = spec_from_slots(qtype, slots, kb)
        if QuerySpec.parse(query, kb) == spec:  # an ambiguous phrasing is drawn again
            return query, spec
    raise ValueError(f"no unambiguous {qtype!r} query in 1000 draws: check the templates of the knowledge base")


# ---------------------------------------------------------------- items

def _propose_item(rng: random.Random, query: str, spec: QuerySpec, target: int, kb: KnowledgeBase) -> Record:
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
        if rng.random() < 0.75:
            if name == "brand":
                if kb.brand_tier.get(value) and value in {b for t in tiers.values() for b in t}:
                    brand, tier = value, kb.brand_tier[value]
            elif name == "color" or value in kb.attributes[parent].get(name, []):
                attributes[name] = value
    if spec.occasion and rng.random() < 0.6 and "material" in attributes:
        ok = [m for m in kb.attributes[parent]["material"] if m in kb.occasions[spec.occasion]["materials"]]
        attributes["material"] = rng.choice(ok or kb.attributes[parent]["material"])
    if spec.alt_brand and rng.random() < 0.3 and spec.alt_brand in {b for t in tiers.values() for b in t}:
        brand, tier = spec.alt_brand, kb.brand_tier[spec.alt_brand]
    lo, hi = kb.price_ranges[tier]
    title = " ".join(p for p in (brand, attributes["color"], attributes.get("material"), cat) if p)
    if "gender" in attributes:
        title += f" for {attributes['gender']}"
    for name, fmt in kb.spec_formats.items():
        if name in attributes:
            title += " " + fmt.format(attributes[name])
    return Record(query=query, title=title, category=cat, brand=brand, attributes=attributes,
                  price=float(rng.randint(int(lo), int(hi))))


def _levels_for(qtype: str) -> tuple[int, ...]:
    return (4, 3, 1) if qtype == "plain" else (4, 3, 2, 1)


def generate(cfg: SynthConfig, kb: KnowledgeBase | None = None) -> dict[str, list[Record]]:
    """Return {"train": [...], "dev": [...], "test": [...]} of labelled Records."""
    kb = kb or default_kb()
    rng = random.Random(cfg.seed)
    types, weights = zip(*cfg.query_type_mix.items())
    pairs: list[Record] = []
    seen: set[str] = set()
    for qi in range(cfg.n_queries):
        qtype = rng.choices(types, weights)[0]
        for _ in range(1000):  # every query string once
            query, spec = _make_query(rng, qtype, kb)
            if query not in seen:
                break
        else:
            raise ValueError(f"the knowledge base has too few distinct {qtype!r} queries for n_queries={cfg.n_queries}")
        seen.add(query)
        allowed = list(_levels_for(qtype))
        for j in range(cfg.items_per_query):
            verdict = None
            while verdict is None:
                target = rng.choices(allowed, [cfg.label_mix.get(lv, 0.0) for lv in allowed])[0]
                for _ in range(cfg.max_tries):
                    item = _propose_item(rng, query, spec, target, kb)
                    v = judge(item, kb)
                    if v is not None and v.level == target:
                        verdict = v
                        break
                else:  # this query cannot reach that level (e.g. "pink kettle" has no hard attribute)
                    allowed.remove(target)
            pairs.append(item.model_copy(update={"id": f"q{qi}-{j}", "label": verdict.level, "query_type": qtype}))
    return split_by_query(pairs, cfg.dev_frac, cfg.test_frac, seed=cfg.seed)
