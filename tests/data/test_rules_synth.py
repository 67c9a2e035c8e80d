"""The generator's gold labels follow the written rules, query type by query type."""

from collections import Counter

import pytest

from taosr.data.synth import QUERY_TYPES, SynthConfig, generate
from taosr.kb.rules import QuerySpec, judge
from taosr.labels import conclusion_of
from taosr.records import Record
from taosr.teacher.reasoning import RuleTeacher


def item(query, title, category, brand, **attrs):
    return Record(query=query, title=title, category=category, brand=brand, attributes=attrs)


@pytest.mark.parametrize("query,rec,level,rule", [
    # negation: the excluded value makes it a Mismatch, its absence an Excellent
    ("sneakers not leather", dict(category="sneakers", brand="stridex", material="leather", color="red"), 2, "NEG-VIOLATED"),
    ("sneakers not leather", dict(category="sneakers", brand="stridex", material="canvas", color="red"), 4, "ALL-MATCH"),
    ("sneakers not leather", dict(category="boots", brand="stridex", material="canvas", color="red"), 3, "CAT-NEAR"),
    ("sneakers not leather", dict(category="laptop", brand="zenbyte", ram="8", color="red"), 1, "CAT-UNRELATED"),
    ("jacket not from altura", dict(category="jacket", brand="altura", material="wool", color="red"), 2, "NEG-VIOLATED"),
    # affordable alternative: the premium brand itself is not what was asked for
    ("cheaper alternative to aerostride sneakers", dict(category="sneakers", brand="aerostride", material="mesh"), 2, "ALT-SAME-BRAND"),
    ("cheaper alternative to aerostride sneakers", dict(category="sneakers", brand="velocita", material="mesh"), 2, "ALT-NOT-CHEAPER"),
    ("aerostride sneakers dupe", dict(category="sneakers", brand="trailmark", material="mesh"), 3, "ALT-MID-TIER"),
    ("affordable sneakers like aerostride", dict(category="sneakers", brand="stridex", material="mesh"), 4, "ALL-MATCH"),
    # Q&A: the occasion's categories and materials come from the knowledge base
    ("what to wear for beach wedding", dict(category="sandals", brand="kickly", material="rubber"), 4, "ALL-MATCH"),
    ("what to wear for beach wedding", dict(category="dress", brand="basico", material="wool"), 2, "QA-UNSUITABLE"),
    ("what should i wear for a winter hike", dict(category="sneakers", brand="kickly", material="leather"), 3, "CAT-NEAR"),
    # knowledge: the task's minimum spec
    ("laptop for video editing", dict(category="laptop", brand="bytelite", ram="16"), 2, "KN-INSUFFICIENT"),
    ("laptop that can handle video editing", dict(category="laptop", brand="bytelite", ram="32"), 4, "ALL-MATCH"),
    ("blender good for crushing ice", dict(category="kettle", brand="mixwell", watt="1500", material="steel"), 3, "CAT-NEAR"),
    # attributes: hard beats soft, soft is Related
    ("red leather sneakers for men", dict(category="sneakers", brand="kickly", color="blue", material="leather", gender="men"), 3, "ATTR-SOFT"),
    ("red leather sneakers for men", dict(category="sneakers", brand="kickly", color="blue", material="suede", gender="men"), 2, "ATTR-HARD"),
    ("zenbyte laptop", dict(category="laptop", brand="bytelite", ram="8"), 2, "ATTR-HARD"),
    ("best kettle", dict(category="kettle", brand="homely", watt="600", material="glass"), 4, "ALL-MATCH"),
])
def test_rules(query, rec, level, rule):
    fields = dict(rec)
    r = item(query, "x", fields.pop("category"), fields.pop("brand"), **fields)
    j = judge(r)
    assert j is not None
    assert j.level == level
    assert j.fired[0] == rule


def test_query_types_parse():
    assert QuerySpec.parse("sneakers not leather").query_type == "negation"
    assert QuerySpec.parse("maison noir jacket dupe").alt_brand == "maison noir"
    assert QuerySpec.parse("what to wear for marathon training").categories == {"running shoes", "t-shirt", "shorts",
                                                                                 "watch"}
    assert QuerySpec.parse("coffee maker sale").query_type == "plain"
    assert QuerySpec.parse("a cat that sings") is None


def test_generator_labels_come_from_rules_and_splits_are_disjoint():
    splits = generate(SynthConfig(n_queries=400, seed=3))
    teacher = RuleTeacher()
    seen = Counter()
    for recs in splits.values():
        for r in recs:
            assert judge(r).level == r.label
            reasoning = teacher.reason(r)
            assert conclusion_of(reasoning.text) == r.label  # the reasoning ends in the gold level
            seen[(r.query_type, r.label)] += 1
    for qt in QUERY_TYPES:
        levels = {lv for (t, lv) in seen if t == qt}
        assert levels >= ({4, 3, 1} if qt == "plain" else {4, 3, 2, 1}), (qt, levels)
    q = {k: {r.query for r in v} for k, v in splits.items()}
    assert not (q["train"] & q["test"]) and not (q["train"] & q["dev"]) and not (q["dev"] & q["test"])


def test_generator_is_seeded_and_mix_is_near_target():
    a = generate(SynthConfig(n_queries=300, seed=5))
    b = generate(SynthConfig(n_queries=300, seed=5))
    assert [r.model_dump() for r in a["train"]] == [r.model_dump() for r in b["train"]]
    labels = Counter(r.label for v in a.values() for r in v)
    n = sum(labels.values())
    assert abs(labels[4] / n - 0.50) < 0.08 and abs(labels[2] / n - 0.36) < 0.08
    assert 0.02 < labels[3] / n < 0.12 and 0.04 < labels[1] / n < 0.15


def test_file_teacher_reads_only_ok_rows(tmp_path):
    import json

    from taosr.teacher.reasoning import FileTeacher

    rows = [{"id": "a", "label": 2, "reasoning": "query: x. judgement: mismatch.", "status": "ok", "rule_ids": ["NEG-VIOLATED"]},
            {"id": "b", "label": 4, "reasoning": "query: y. judgement: mismatch.", "status": "inconsistent"}]
    path = tmp_path / "cot.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t = FileTeacher(path)
    got = t.reason(Record(id="a", query="q", title="t", label=2))
    assert got.level == 2 and got.rule_ids == ("NEG-VIOLATED",) and got.text.endswith("mismatch.")
    assert t.reason(Record(id="b", query="q", title="t", label=4)) is None


def test_default_benchmark_is_an_instrument():
    """Benchmark v2's defaults: >= 1,000 distinct test and 500 dev strings, >= 150 test strings of every type,
    no string over 1% of the test pairs, the paper's label mix within a few points."""
    splits = generate(SynthConfig())
    test, dev = splits["test"], splits["dev"]
    assert len({r.query for r in test}) >= 1000 and len({r.query for r in dev}) >= 500
    for qt in QUERY_TYPES:
        assert len({r.query for r in test if r.query_type == qt}) >= 150, qt
    assert max(Counter(r.query for r in test).values()) / len(test) <= 0.01
    labels = Counter(r.label for v in splits.values() for r in v)
    n = sum(labels.values())
    for level, share in {4: 0.50, 3: 0.05, 2: 0.36, 1: 0.09}.items():
        assert abs(labels[level] / n - share) < 0.07, (level, labels[level] / n)


@pytest.mark.parametrize("query,qtype,wants,excludes", [
    ("leather sneakers for men in red", "attribute", {"color": "red", "material": "leather", "gender": "men"}, {}),
    ("wool sweater by altura", "attribute", {"brand": "altura", "material": "wool"}, {}),
    ("what should a woman wear to a ski trip", "qa", {"gender": "women"}, {}),
    ("non wool sweater", "negation", {}, {"material": "wool"}),
    ("tent other than alpinex", "negation", {}, {"brand": "alpinex"}),
    ("zenbyte laptop for video editing", "knowledge", {"brand": "zenbyte"}, {}),
    ("headphones shopping", "plain", {}, {}),
])
def test_new_phrasings_parse(query, qtype, wants, excludes):
    spec = QuerySpec.parse(query)
    assert (spec.query_type, spec.wants, spec.excludes) == (qtype, wants, excludes)
