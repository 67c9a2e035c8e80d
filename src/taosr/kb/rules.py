"""The atomic-rule knowledge base and the rule engine that judges a pair with it.

`judge(record)` parses the query against the catalogue vocabulary, checks the item against every
applicable rule of `kb/rules.yaml`, and returns the lowest level any fired rule assigns, with the
facts the teacher turns into reasoning. It understands the synthetic benchmark's query grammar
(and any catalogue laid out the same way); `QuerySpec.parse` returns None for other queries.
"""

from __future__ import annotations

import copy
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
    templates: dict[str, list[str]] = field(default_factory=dict)  # query type -> phrasings with {slots}
    spec_formats: dict[str, str] = field(default_factory=dict)  # spec attribute -> title format ("{}gb ram")
    persons: dict[str, str] = field(default_factory=dict)  # "a woman" -> "women"
    parent_of: dict[str, str] = field(default_factory=dict)
    brand_tier: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parent_of = {leaf: p for p, leaves in self.categories.items() for leaf in leaves}
        self.brand_tier = {b: t for tiers in self.brands.values() for t, bs in tiers.items() for b in bs}
        self.templates = {**self.templates, "attribute": attribute_templates()}

    def siblings(self, cats: set[str]) -> set[str]:
        """Leaves sharing a parent with any of `cats`, minus `cats` themselves ("near" categories)."""
        near = {leaf for c in cats for leaf in self.categories[self.parent_of[c]]}
        return near - cats

    def materials(self) -> list[str]:
        return sorted({v for per in self.attributes.values() for v in per.get("material", [])})

    def genders(self) -> list[str]:
        return sorted({v for per in self.attributes.values() for v in per.get("gender", [])})


def attribute_templates() -> list[str]:
    """Attribute-query phrasings: every non-empty subset of brand, colour, material and gender, in the
    plain word order ("{b} {col} {m} {c} for {g}") and with the colour or brand moved behind ("... in {col}")."""
    out = []
    for mask in range(1, 16):
        b, col, m, g = (bool(mask & (1 << i)) for i in range(4))
        words = [w for w, on in (("{b}", b), ("{col}", col), ("{m}", m)) if on]
        tail = " for {g}" if g else ""
        out.append(" ".join([*words, "{c}"]) + tail)
        if col and len(words) > 1:
            out.append(" ".join([w for w in words if w != "{col}"] + ["{c}"]) + tail + " in {col}")
        if b and len(words) > 1:
            out.append(" ".join([w for w in words if w != "{b}"] + ["{c}"]) + tail + " by {b}")
    return out


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
    kb = KnowledgeBase(
        rules=rules, categories=k["categories"], colors=k["colors"], attributes=k["attributes"],
        hard_attributes=k["hard_attributes"], soft_attributes=k["soft_attributes"], brands=k["brands"],
        price_ranges=k["price_ranges"], occasions=k["occasions"], tasks=k["tasks"],
        templates=k.get("templates", {}), spec_formats=k.get("spec_formats", {}), persons=k.get("persons", {}),
    )
    check_kb(kb)
    return kb


def check_kb(kb: KnowledgeBase) -> None:
    """Refuse a knowledge base whose occasions or tasks name categories or attributes it does not define."""
    for occ, o in kb.occasions.items():
        for c in o["categories"]:
            if c not in kb.parent_of or "material" not in kb.attributes[kb.parent_of[c]]:
                raise ValueError(f"knowledge base: occasion {occ!r} names {c!r}, not a leaf category with materials")
    for task, t in kb.tasks.items():
        for c in t["categories"]:
            if c not in kb.parent_of or t["spec"] not in kb.attributes[kb.parent_of[c]]:
                raise ValueError(f"knowledge base: task {task!r} names {c!r}, whose parent has no {t['spec']!r}")


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
        kb = kb or default_kb()
        cache = _PARSE_CACHE.setdefault(id(kb), {})
        q = " ".join(query.strip().lower().split())
        if q not in cache:
            cache[q] = _parse_query(q, kb)
        spec = cache[q]
        return None if spec is None else copy.deepcopy(spec)


TYPE_ORDER = ("qa", "alternative", "knowledge", "negation", "attribute", "plain")
_PARSE_CACHE: dict[int, dict[str, QuerySpec | None]] = {}
_PATTERN_CACHE: dict[int, list[tuple[str, re.Pattern]]] = {}


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def slot_values(kb: KnowledgeBase) -> dict[str, list[str]]:
    """The words each template slot accepts."""
    return {"c": list(kb.parent_of), "b": list(kb.brand_tier), "col": kb.colors, "m": kb.materials(),
            "g": kb.genders(), "v": kb.colors + kb.materials(), "occ": list(kb.occasions), "t": list(kb.tasks),
            "gw": list(kb.persons)}


def _patterns(kb: KnowledgeBase) -> list[tuple[str, re.Pattern]]:
    """(query type, anchored regex) for every template, in matching order."""
    if id(kb) in _PATTERN_CACHE:
        return _PATTERN_CACHE[id(kb)]
    values = {slot: _alt(words) for slot, words in slot_values(kb).items()}
    pats = []
    for qtype in TYPE_ORDER:
        for template in kb.templates.get(qtype, []):
            rx = re.escape(template).replace(re.escape("a {occ}"), "(?:a )?" + re.escape("{occ}"))  # "a" optional
            for slot, alt in values.items():
                rx = rx.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{alt})")
            pats.append((qtype, re.compile(f"^{rx}$")))
    _PATTERN_CACHE[id(kb)] = pats
    return pats


def _parse_query(q: str, kb: KnowledgeBase) -> QuerySpec | None:
    for qtype, pattern in _patterns(kb):
        if m := pattern.match(q):
            return spec_from_slots(qtype, m.groupdict(), kb)
    return None


def spec_from_slots(qtype: str, slots: dict[str, str | None], kb: KnowledgeBase) -> QuerySpec:
    """The QuerySpec of a template of type `qtype` filled with `slots`."""
    s = {k: v for k, v in slots.items() if v}
    spec = QuerySpec(qtype, {s["c"]} if "c" in s else set())
    gender = s.get("g") or kb.persons.get(s.get("gw", ""))
    if qtype == "alternative":
        spec.alt_brand = s["b"]
    elif qtype == "negation":
        if "b" in s:
            spec.excludes = {"brand": s["b"]}
        else:
            spec.excludes = {"color" if s["v"] in kb.colors else "material": s["v"]}
    else:
        spec.wants = {k: v for k, v in (("brand", s.get("b")), ("color", s.get("col")), ("material", s.get("m")),
                                        ("gender", gender)) if v}
    if "occ" in s:
        spec.occasion = s["occ"]
        if not spec.categories:  # the occasion's categories, those that come in genders when a gender is asked
            cats = kb.occasions[s["occ"]]["categories"]
            spec.categories = {c for c in cats if not gender or "gender" in kb.attributes[kb.parent_of[c]]}
    if "t" in s:
        spec.task = s["t"]
    return spec


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


def judge(record: Record, kb: KnowledgeBase | None = None, spec: QuerySpec | None = None,
          tiers: dict[str, str] | None = None, task_min: float | None = None) -> Judgement | None:
    """Apply the atomic rules to one pair; None when the query is outside the rule grammar.

    `spec`, `tiers` (brand -> tier) and `task_min` replace what the query and the knowledge base say: the noisy
    teacher (teacher/noise.py) judges with a misread query or a misremembered fact through them."""
    kb = kb or default_kb()
    spec = spec or QuerySpec.parse(record.query, kb)
    cat = (record.category or "").lower()
    if spec is None or cat not in kb.parent_of:
        return None
    tier_of = {**kb.brand_tier, **(tiers or {})}
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
        tier = tier_of.get(brand, "unknown")
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
        least = need["min"] if task_min is None else task_min
        have = item_value(record, need["spec"])
        if have is not None and float(have) >= least:
            checks.append(f"{need['spec']} {have} is enough for {spec.task}")
        else:
            fired.append("KN-INSUFFICIENT")
            checks.append(f"{need['spec']} {have or 'unknown'} is too low for {spec.task}")

    fired.sort(key=lambda rid: kb.rules[rid].level)
    level = kb.rules[fired[0]].level if fired else 4
    return Judgement(level, fired or ["ALL-MATCH"], match, checks, spec)
