"""Field-grounded teachers: five-step reasoning for any catalogue, offline, from the record's own fields.

The rule teacher (`teacher.reasoning.RuleTeacher`) knows only the synthetic catalogue's query grammar;
on real pairs (ESCI, WANDS, a shop's own logs) it returns nothing. `FieldTeacher` needs no grammar and
no model: it reads the query's terms and checks each against the item's title, brand, category,
attributes, description and price, then writes the same five steps the other teachers write

    query understanding -> item understanding -> category matching -> attribute matching -> judgement

conditioned on the gold level (the reasoning explains the known label; it does not predict one).
`AutoTeacher` is the default of `taosr cot` and `taosr sft`: the rule teacher where the rule engine
parses the pair, the field teacher everywhere else, and it says which one wrote each pair.
"""

from __future__ import annotations

import re

from ..labels import LEVEL_NAMES
from ..prompts import plain_text
from ..records import Record
from .reasoning import Reasoning, RuleTeacher

STOPWORDS = frozenset(
    "a an and the for of to in on with by at from or is are be as it its this that these those my your our "
    "me i you we he she they them his her their what which who how do does can will & + - x".split())
NEGATIONS = frozenset({"without", "no", "not", "non", "except"})
PRICE_CAP = re.compile(r"\b(?:under|below|less than|cheaper than|max|up to)\s*\$?\s*(\d+(?:\.\d+)?)", re.I)
WORD = re.compile(r"[\w']+", re.UNICODE)
TITLE_CHARS = 90  # the item step quotes the title up to this many characters
DESCRIPTION_CHARS = 2000  # description text searched for the query's terms

# Why the gold level holds, by level: `{missing}` is the query's unmatched terms, `{matched}` the matched ones.
VERDICTS = {
    4: ("the item is what the query asks for", "the item is what the query asks for; the unmatched words "
        "({missing}) name nothing the item contradicts"),
    3: ("the item is a close substitute: the same kind of product, differing in a detail the query states",
        "the item is a close substitute: the same kind of product ({matched}) but not exactly it ({missing} not "
        "met)"),
    2: ("the item goes with what the query asks for but is not that product (a complement or accessory)",
        "the item goes with what the query asks for ({matched}) but is not that product ({missing} not met; a "
        "complement or accessory)"),
    1: ("the item does not answer the query", "the item does not answer the query ({missing} not found)"),
}
NO_TERMS = {4: "nothing in the item contradicts the query", 3: "the item is related but not exactly it",
            2: "the item goes with the query but is not it", 1: "the item does not answer the query"}


def safe(text: str) -> str:
    """Field text fit for a reasoning line: no HTML, no tags or markup characters, one line."""
    text = plain_text(text).replace("<", " ").replace(">", " ").replace("`", "'")
    return " ".join(text.replace("judgement:", "judgement").split())


def norm(word: str) -> str:
    """A word compared without case or a plural ending (chairs / chair, boxes / box)."""
    w = word.lower().strip("'")
    if len(w) > 4 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def words(text: str | None) -> set[str]:
    return {norm(w) for w in WORD.findall((text or "").lower())}


def query_terms(query: str) -> tuple[list[str], list[str]]:
    """(wanted, excluded) content words of the query, in order; a word after `without` / `no` is excluded, and a
    price cap ("under $80") is a constraint of its own, not a term."""
    wanted, excluded, negate = [], [], False
    for raw in WORD.findall(PRICE_CAP.sub(" ", query.lower())):
        if raw in NEGATIONS:
            negate = True
            continue
        if raw in STOPWORDS or (len(raw) < 2 and not raw.isdigit()):
            continue
        (excluded if negate else wanted).append(raw)
        negate = False
    return list(dict.fromkeys(wanted)), list(dict.fromkeys(excluded))


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def listed(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class FieldTeacher:
    """Five-step reasoning from the pair's fields, ending in its gold level; None only for an unlabelled pair."""

    name = "fields"

    def reason(self, record: Record) -> Reasoning | None:
        if record.label not in LEVEL_NAMES:
            return None
        wanted, excluded = query_terms(record.query)
        item = {
            "title": words(record.title), "brand": words(record.brand), "category": words(record.category),
            "attributes": set().union(*(words(v) for v in record.attributes.values())),
        }
        in_item = set().union(*item.values())
        in_description = words(plain_text(record.description or "")[:DESCRIPTION_CHARS])
        matched = [t for t in wanted if norm(t) in in_item]
        described = [t for t in wanted if norm(t) not in in_item and norm(t) in in_description]
        missing = [t for t in wanted if norm(t) not in in_item and norm(t) not in in_description]
        attributes = self.attribute_step(record, item, in_item, wanted, excluded)
        steps = [self.query_step(record, wanted, excluded), self.item_step(record),
                 self.category_step(record, wanted, item),
                 f"{attributes[:-1]}; {self.verdict(record.label, matched + described, missing, described)}",
                 f"judgement: {LEVEL_NAMES[record.label].lower()}."]
        text = "\n".join(steps)
        return Reasoning(text=text, level=record.label, rule_ids=())

    @staticmethod
    def query_step(record: Record, wanted: list[str], excluded: list[str]) -> str:
        text = f"query: '{cut(safe(record.query), 120)}' asks for {listed(wanted) or 'no specific term'}"
        if excluded:
            text += f", excludes {listed(excluded)}"
        if cap := PRICE_CAP.search(record.query):
            text += f", price at most {cap.group(1)}"
        return text + "."

    @staticmethod
    def item_step(record: Record) -> str:
        parts = [f"'{cut(safe(record.title), TITLE_CHARS)}'"]
        if record.brand:
            parts.append(f"brand {cut(safe(record.brand), 40)}")
        if record.category:
            parts.append(f"category {cut(safe(record.category), 60)}")
        parts += [f"{cut(safe(k), 30)} {cut(safe(v), 40)}" for k, v in sorted(record.attributes.items())[:4]]
        if record.price is not None:
            parts.append(f"price {record.price:g}")
        return "item: " + ", ".join(parts) + "."

    @staticmethod
    def category_step(record: Record, wanted: list[str], item: dict[str, set[str]]) -> str:
        if record.category:
            named = [t for t in wanted if norm(t) in item["category"]]
            how = f"the query names it ({listed(named)})" if named else "the query does not name it"
            return f"category: the item's category is {cut(safe(record.category), 60)}; {how}."
        head = [t for t in wanted if norm(t) in item["title"]]
        if not wanted:
            return "category: no category given and the query names no product type."
        return (f"category: no category given; the title covers {len(head)} of {len(wanted)} query terms"
                + (f" ({listed(head)})." if head else "."))

    @staticmethod
    def attribute_step(record: Record, item: dict[str, set[str]], in_item: set[str], wanted: list[str],
                       excluded: list[str]) -> str:
        checks = []
        want, avoid = {norm(t) for t in wanted}, {norm(t) for t in excluded}
        if record.brand:
            checks.append(f"brand {cut(safe(record.brand), 40)} "
                          + ("named in the query" if item["brand"] & want else "not named in the query"))
        for k, v in sorted(record.attributes.items())[:4]:
            how = ("excluded by the query" if words(v) & avoid else "asked for" if words(v) & want
                   else "not asked for")
            checks.append(f"{cut(safe(k), 30)} {cut(safe(v), 40)} {how}")
        for t in excluded:
            checks.append(f"{t} " + ("present, which the query excludes" if norm(t) in in_item else "absent, as asked"))
        if (cap := PRICE_CAP.search(record.query)) and record.price is not None:
            ok = record.price <= float(cap.group(1))
            checks.append(f"price {record.price:g} {'within' if ok else 'above'} {cap.group(1)}")
        return "attributes: " + ("; ".join(checks) if checks else "the item lists no brand or attribute") + "."

    @staticmethod
    def verdict(level: int, matched: list[str], missing: list[str], described: list[str]) -> str:
        if not matched and not missing:
            why = NO_TERMS[level]
        else:
            plain, with_terms = VERDICTS[level]
            why = with_terms.format(matched=listed(matched) or "none of its terms", missing=listed(missing)) \
                if missing else plain
        if described:
            why += f" ({listed(described)} only in the description)"
        return f"so {why}."


RULES_CANNOT = ("the rule teacher cannot parse this query: it knows only the synthetic catalogue's query grammar "
                "(use --teacher auto or fields for offline reasoning from the item's fields, or --teacher openai "
                "with an LLM server for the best reasoning)")


class AutoTeacher:
    """The rule teacher where the rule engine parses the pair, the field teacher elsewhere.

    `explain(record)` returns the reasoning and the name of the teacher that wrote it ("rules" / "fields").
    """

    name = "auto"

    def __init__(self, rules: RuleTeacher | None = None, fields: FieldTeacher | None = None):
        self.rules, self.fields = rules or RuleTeacher(), fields or FieldTeacher()

    def explain(self, record: Record) -> tuple[Reasoning | None, str]:
        reasoning = self.rules.reason(record)
        if reasoning is not None:
            return reasoning, "rules"
        return self.fields.reason(record), "fields"

    def reason(self, record: Record) -> Reasoning | None:
        return self.explain(record)[0]
