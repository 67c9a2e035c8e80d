"""The atomic-rule knowledge base and the rule engine that judges a pair with it.

`judge(record)` parses the query against the catalogue vocabulary, checks the item against every
applicable rule of `kb/rules.yaml`, and returns the lowest level any fired rule assigns, with the
facts the teacher turns into reasoning. It understands the synthetic benchmark's query grammar
(and any catalogue laid out the same way); `QuerySpec.parse` returns None for other queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from ..records import Record

DEFAULT_KB = "rules.yaml"  # next to this module, in the taosr.kb package


@dataclass(frozen=True)
class Rule:
    id: str
    level: int
    query_types: tuple[str, ...]
    text: str


@dataclass
class KnowledgeBase:
    rules: dict[str, Rule]
    categories: dict[str, list[str]]  # parent -> leaves
    colors: list[str]
    attributes: dict[str, dict[str, list[str]]]  # parent -> attr -> values
    hard_attributes: list[str]
    soft_attributes: list[str]
    brands: dict[str, dict[str, list[str]]]  # parent -> tier -> brands
    price_ranges: dict[str, list[float]]
    occasions: dict[str, dict]
    tasks: dict[str, dict]
    parent_of: dict[str, str] = field(default_factory=dict)
    brand_tier: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parent_of = {leaf: p for p, leaves in self.categories.items() for leaf in leaves}
        self.brand_tier = {b: t for tiers in self.brands.values() for t, bs in tiers.items() for b in bs}

    def siblings(self, cats: set[str]) -> set[str]:
        """Leaves sharing a parent with any of `cats`, minus `cats` themselves ("near" categories)."""
        near = {leaf for c in cats for leaf in self.categories[self.parent_of[c]]}
        return near - cats


def load_kb(path: str | Path | None = None) -> KnowledgeBase:
    """Load a knowledge base (the packaged one by default). Always `yaml.safe_load`."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_KB).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return _parse_kb(text)


@lru_cache(maxsize=1)
def default_kb() -> KnowledgeBase:
    return load_kb()


def _parse_kb(text: str) -> KnowledgeBase:
    raw = yaml.safe_load(text)
    rules = {
        r["id"]: Rule(r["id"], int(r["level"]), tuple(r.get("query_types", ["all"])), r["text"].strip())
        for r in raw["rules"]
    }
    k = raw["knowledge"]
    return KnowledgeBase(
        rules=rules, categories=k["categories"], colors=k["colors"], attributes=k["attributes"],
        hard_attributes=k["hard_attributes"], soft_attributes=k["soft_attributes"], brands=k["brands"],
        price_ranges=k["price_ranges"], occasions=k["occasions"], tasks=k["tasks"],
    )


# ---------------------------------------------------------------- query parsing

@dataclass
class QuerySpec:
    """What a query asks for, in catalogue terms."""

    query_type: str  # plain / attribute / negation / alternative / qa / knowledge
    categories: set[str]
    wants: dict[str, str] = field(default_factory=dict)  # attribute -> required value (brand included)
    excludes: dict[str, str] = field(default_factory=dict)  # attribute -> excluded value
    alt_brand: str | None = None
    occasion: str | None = None
    task: str | None = None

    @staticmethod
    def parse(query: str, kb: KnowledgeBase | None = None) -> QuerySpec | None:
        return _parse_query(query.strip().lower(), kb or default_kb())


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_PATTERN_CACHE: dict[int, dict[str, re.Pattern]] = {}


def _patterns(kb: KnowledgeBase) -> dict[str, re.Pattern]:
    if id(kb) in _PATTERN_CACHE:
        return _PATTERN_CACHE[id(kb)]
    cats = _alt(kb.parent_of)
    brands = _alt(kb.brand_tier)
    values = _alt(v for per in kb.attributes.values() for v in per.get("material", []))
    colors = _alt(kb.colors)
    genders = _alt(v for per in kb.attributes.values() for v in per.get("gender", []))
    pats = {
        "qa": re.compile(rf"^what (?:to wear|should i wear) for (?:a )?(?P<occ>{_alt(kb.occasions)})$"),
        "alt": re.compile(
            rf"^(?:cheaper alternative to (?P<b1>{brands}) (?P<c1>{cats})|(?P<b2>{brands}) (?P<c2>{cats}) dupe"
            rf"|affordable (?P<c3>{cats}) like (?P<b3>{brands}))$"
        ),
        "knowledge": re.compile(rf"^(?P<cat>{cats}) (?:for|that can handle|good for) (?P<task>{_alt(kb.tasks)})$"),
        "negation": re.compile(
            rf"^(?P<cat>{cats}) (?:(?:not|without) (?P<val>{values}|{colors})|not from (?P<brand>{brands}))$"
        ),
        "attribute": re.compile(
            rf"^(?:(?P<brand>{brands}) )?(?:(?P<color>{colors}) )?(?:(?P<mat>{values}) )?(?P<cat>{cats})"
            rf"(?: for (?P<gender>{genders}))?(?P<plain> sale)?$"
        ),
        "best": re.compile(rf"^best (?P<cat>{cats})$"),
    }
    _PATTERN_CACHE[id(kb)] = pats
    return pats


def _parse_query(q: str, kb: KnowledgeBase) -> QuerySpec | None:
    p = _patterns(kb)
    if m := p["qa"].match(q):
        occ = m["occ"]
        return QuerySpec("qa", set(kb.occasions[occ]["categories"]), occasion=occ)
    if m := p["alt"].match(q):
        brand = m["b1"] or m["b2"] or m["b3"]
        return QuerySpec("alternative", {m["c1"] or m["c2"] or m["c3"]}, alt_brand=brand)
    if m := p["knowledge"].match(q):
        return QuerySpec("knowledge", {m["cat"]}, task=m["task"])
    if m := p["negation"].match(q):
        if m["brand"]:
            return QuerySpec("negation", {m["cat"]}, excludes={"brand": m["brand"]})
        val = m["val"]
        attr = "color" if val in kb.colors else "material"
        return QuerySpec("negation", {m["cat"]}, excludes={attr: val})
    if m := p["best"].match(q):
        return QuerySpec("plain", {m["cat"]})
    if m := p["attribute"].match(q):
        groups = (("brand", "brand"), ("color", "color"), ("material", "mat"), ("gender", "gender"))
        wants = {k: m[g] for k, g in groups if m[g]}
        if m["plain"] and wants:
            return None
        return QuerySpec("attribute" if wants else "plain", {m["cat"]}, wants=wants)
    return None


# ---------------------------------------------------------------- judging

@dataclass
class Judgement:
    level: int
    fired: list[str]  # rule ids, most decisive first
    category_match: str  # same / near / different
    checks: list[str]  # one short sentence per constraint checked
    spec: QuerySpec


def item_value(record: Record, attr: str) -> str | None:
    if attr == "brand":
        return (record.brand or "").lower() or None
    v = record.attributes.get(attr)
    return v.lower() if v else None


def judge(record: Record, kb: KnowledgeBase | None = None) -> Judgement | None:
    """Apply the atomic rules to one pair; None when the query is outside the rule grammar."""
    kb = kb or default_kb()
    spec = QuerySpec.parse(record.query, kb)
    cat = (record.category or "").lower()
    if spec is None or cat not in kb.parent_of:
        return None
    fired: list[str] = []
    checks: list[str] = []
    if cat in spec.categories:
        match = "same"
    elif cat in kb.siblings(spec.categories):
        match, _ = "near", fired.append("CAT-NEAR")
    else:
        match, _ = "different", fired.append("CAT-UNRELATED")

    for attr, want in spec.wants.items():
        have = item_value(record, attr)
        if have == want:
            checks.append(f"{attr} {want} matches")
        else:
            fired.append("ATTR-SOFT" if attr in kb.soft_attributes else "ATTR-HARD")
            checks.append(f"{attr} {have or 'unknown'} is not {want}")
    for attr, bad in spec.excludes.items():
        if item_value(record, attr) == bad:
            fired.append("NEG-VIOLATED")
            checks.append(f"{bad} is excluded")
        else:
            checks.append(f"not {bad}, as asked")
    if spec.alt_brand:
        brand = item_value(record, "brand") or ""
        tier = kb.brand_tier.get(brand, "unknown")
        if brand == spec.alt_brand:
            fired.append("ALT-SAME-BRAND")
            checks.append(f"{brand} is the brand to replace")
        elif tier == "premium":
            fired.append("ALT-NOT-CHEAPER")
            checks.append(f"{brand} is premium, not cheaper")
        elif tier == "mid":
            fired.append("ALT-MID-TIER")
            checks.append(f"{brand} is mid tier")
        else:
            checks.append(f"{brand} is a budget alternative")
    if spec.occasion:
        mat = item_value(record, "material")
        if mat in kb.occasions[spec.occasion]["materials"]:
            checks.append(f"{mat} suits {spec.occasion}")
        else:
            fired.append("QA-UNSUITABLE")
            checks.append(f"{mat or 'unknown material'} does not suit {spec.occasion}")
    if spec.task:
        need = kb.tasks[spec.task]
        have = item_value(record, need["spec"])
        if have is not None and float(have) >= need["min"]:
            checks.append(f"{need['spec']} {have} is enough for {spec.task}")
        else:
            fired.append("KN-INSUFFICIENT")
            checks.append(f"{need['spec']} {have or 'unknown'} is too low for {spec.task}")

    fired.sort(key=lambda rid: kb.rules[rid].level)
    level = kb.rules[fired[0]].level if fired else 4
    return Judgement(level, fired or ["ALL-MATCH"], match, checks, spec)
