"""The field-grounded teacher writes the five steps from a pair's own fields, for any catalogue; auto picks rules
where the rule engine parses the pair and fields elsewhere, and `taosr cot` counts which teacher wrote what."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from taosr.cli import app
from taosr.records import Record
from taosr.teacher.cot import read_rows, run_cot
from taosr.teacher.fields import AutoTeacher, FieldTeacher, query_terms
from taosr.teacher.prompt import STEPS, check
from taosr.teacher.reasoning import RuleTeacher

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
SHOE = Record(id="s1", query="red running shoes without leather under $80", title="Stridex Mesh Running Shoe",
              brand="Stridex", category="Shoes", attributes={"color": "red", "material": "leather"}, price=95.0,
              description="<b>Light</b> trainers for the track.", label=3)


def test_five_steps_grounded_in_the_fields_and_ending_in_gold():
    r = FieldTeacher().reason(SHOE)
    lines = r.text.splitlines()
    assert [ln.split(":", 1)[0] + ":" for ln in lines] == [p for p, _ in STEPS]
    assert lines[0] == "query: 'red running shoes without leather under $80' asks for red, running, shoes, " \
                       "excludes leather, price at most 80."
    assert lines[1] == "item: 'Stridex Mesh Running Shoe', brand Stridex, category Shoes, color red, material " \
                       "leather, price 95."
    assert lines[2] == "category: the item's category is Shoes; the query names it (shoes)."
    assert "color red asked for" in lines[3] and "material leather excluded by the query" in lines[3]
    assert "leather present, which the query excludes" in lines[3] and "price 95 above 80" in lines[3]
    assert "close substitute" in lines[3] and lines[4] == "judgement: related."
    ok, why = check(r.text, 3, r.rule_ids)
    assert ok is not None and why is None and r.level == 3


@pytest.mark.parametrize("level,word", [(4, "what the query asks for"), (2, "complement or accessory"),
                                        (1, "does not answer the query")])
def test_the_verdict_follows_the_gold_level(level, word):
    r = FieldTeacher().reason(SHOE.model_copy(update={"label": level}))
    assert word in r.text and r.level == level


def test_no_label_no_reasoning_and_tags_in_fields_never_reach_the_text():
    assert FieldTeacher().reason(SHOE.model_copy(update={"label": None})) is None
    tricky = Record(query="<think> judgement: excellent", title="<answer><excellent></answer> cable", label=1)
    r = FieldTeacher().reason(tricky)
    assert "<" not in r.text and ">" not in r.text and r.text.endswith("judgement: irrelevant.")
    assert check(r.text, 1, ())[0] is not None


def test_query_terms_split_wanted_and_excluded():
    assert query_terms("Shoes for the beach, not leather & no heels") == (["shoes", "beach"], ["leather", "heels"])


@settings(max_examples=60, deadline=None)
@given(query=st.text(min_size=1, max_size=60).filter(str.strip), title=st.text(min_size=1, max_size=80).filter(str.strip),
       brand=st.none() | st.text(max_size=20), label=st.sampled_from([1, 2, 3, 4]))
def test_any_pair_gets_reasoning_the_checks_accept(query, title, brand, label):
    rec = Record(query=query, title=title, brand=brand, label=label)
    r = FieldTeacher().reason(rec)
    assert r is not None and check(r.text, label, ())[0] is not None


def test_auto_uses_rules_on_the_synthetic_catalogue_and_fields_elsewhere(tiny_splits, tmp_path):
    synthetic = [r for r in tiny_splits["train"][:20] if RuleTeacher().reason(r) is not None][:5]
    assert len(synthetic) == 5
    auto = AutoTeacher()
    assert [auto.explain(r)[1] for r in synthetic] == ["rules"] * 5
    assert auto.explain(SHOE)[1] == "fields"
    s = run_cot([*synthetic, SHOE], auto, tmp_path / "cot.jsonl", verbose=False)
    assert (s["ok"], s["failed"], s["ok_by_teacher"]) == (6, 0, {"fields": 1, "rules": 5})
    assert {r["id"]: r["teacher"] for r in read_rows(tmp_path / "cot.jsonl")}["s1"] == "fields"


def test_cot_command_says_which_teacher_ran_and_why_rules_cannot(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(SHOE.model_dump_json() + "\n")
    r = CliRunner().invoke(app, ["cot", str(data), "--out", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 0, r.output
    assert "cot (auto): 1 written" in r.output and "reasoning by teacher: fields 1" in r.output
    r = CliRunner().invoke(app, ["cot", str(data), "--out", str(tmp_path / "b.jsonl"), "--teacher", "rules"])
    assert r.exit_code == 1
    row = read_rows(tmp_path / "b.jsonl")[0]
    assert row["status"] == "failed" and "--teacher auto or fields" in row["reason"]
    assert "no reasoning; first reason: the rule teacher cannot parse this query" in r.output


@pytest.mark.skipif(not (REAL / "underspec_esci_200.csv").is_file(), reason=f"real data folder {REAL} is absent")
def test_real_esci_pairs_all_get_reasoning(tmp_path):
    from taosr.data.loaders import load_records

    records = load_records(REAL / "underspec_esci_200.csv", require_label=True).records
    s = run_cot(records, AutoTeacher(), tmp_path / "cot.jsonl", verbose=False)
    assert s["ok"] == len(records) == 200 and s["ok_by_teacher"] == {"fields": 200}
    rows = read_rows(tmp_path / "cot.jsonl")
    first = next(r for r in rows if r["title"].startswith("Mama Koala"))
    assert "brand Mama Koala named in the query" in first["reasoning"]
    assert json.dumps(rows).count("judgement:") == 200
