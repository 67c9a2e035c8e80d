"""Rows the loader used to crash on or silently mangle become rejects (file, row, field, reason); the run goes on."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from taosr.data.loaders import load_records

BASE = {"query": "red shoes", "title": "Red running shoe"}


def _load_jsonl(tmp_path, lines: list[str]):
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines + [json.dumps(BASE)]) + "\n", encoding="utf-8")
    res = load_records([path], rejects_path=tmp_path / "rejects.jsonl")
    assert len(res.records) + len(res.rejects) == len(lines) + 1  # nothing lost, the good last row loads
    assert res.records[-1].title == BASE["title"]
    written = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(res.rejects)
    return res, {r["row"]: r for r in res.rejects}


def test_bad_attributes_and_prices_are_rejects(tmp_path):
    rows = [
        BASE | {"attributes": ["color", "size"]},  # 1: a list, used to raise ValueError
        BASE | {"attributes": ["ab", "cd"]},  # 2: used to become {"a": "b", "c": "d"}
        BASE | {"attributes": {"size": {"w": 1}}},  # 3: dict value, used to reach the prompt as a repr
        BASE | {"attributes": {"tags": ["a"]}},  # 4
        BASE | {"title": {"en": "shoe"}},  # 5: a text field holding an object
        BASE | {"price": True},  # 6: used to become 1.0
    ]
    lines = [json.dumps(r) for r in rows] + [
        '{"query": "q", "title": "t", "price": NaN}',  # 7: used to become "no price"
        '{"query": "q", "title": "t", "price": Infinity}',  # 8
        '{"query": "q", "title": "t", "price": 1e309}',  # 9
        '{"query": "q", "title": "t\\ud800"}',  # 10: a lone surrogate
    ]
    res, rej = _load_jsonl(tmp_path, lines)
    assert sorted(rej) == list(range(1, 11))
    assert {rej[i]["field"] for i in (1, 2, 3, 4)} == {"attributes"}
    assert "JSON list" in rej[2]["reason"] and "'size' is a JSON object" in rej[3]["reason"]
    assert rej[5]["field"] == "title" and rej[5]["reason"] == "expected text, got a JSON object"
    assert rej[6]["field"] == "price" and "got true" in rej[6]["reason"]
    assert [rej[i]["field"] for i in (7, 8, 9)] == ["price"] * 3
    assert "finite" in rej[7]["reason"] and "inf" in rej[9]["reason"]
    assert rej[10]["field"] == "title" and "surrogate" in rej[10]["reason"]
    assert all(r["file"].endswith("x.jsonl") for r in res.rejects)


def test_deep_json_is_a_reject_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    res, rej = _load_jsonl(tmp_path, ['{"query": "q", "title": "t", "attributes": ' + deep + "}", deep])
    assert rej[1]["reason"] == rej[2]["reason"] == "invalid JSON: nested too deeply"
    csv = tmp_path / "x.csv"
    csv.write_text('query,title,attributes\nq,t,"' + deep + '"\nq,t,"{""a"": ""b""}"\n')
    res = load_records([csv])
    assert len(res.records) == 1 and res.records[0].attributes == {"a": "b"}
    assert res.rejects[0]["row"] == 1 and res.rejects[0]["field"] == "attributes"
    assert "nested too deeply" in res.rejects[0]["reason"] and len(res.rejects[0]["raw"]["attributes"]) <= 201


def test_binary_parquet_titles(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"query": ["q", "q", "q"], "title": pa.array([b"\xff\xfe", b"shoe", b"ok"],
                                                                      pa.binary())}), path)
    res = load_records([path], rejects_path=tmp_path / "r.jsonl")
    assert [r.title for r in res.records] == ["shoe", "ok"]
    assert res.rejects[0]["row"] == 1 and res.rejects[0]["field"] == "title"
    assert "binary data" in res.rejects[0]["reason"]


def test_parquet_map_attributes_still_load(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"query": ["q"], "title": ["t"],
                             "attributes": pa.array([[("color", "red")]], pa.map_(pa.string(), pa.string()))}), path)
    assert load_records([path]).records[0].attributes == {"color": "red"}


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                           max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "query", "title", "brand", "attributes", "price", "label",
                                        "description"]), json_values))
def test_any_json_row_loads_or_is_rejected(tmp_path_factory, row):
    tmp = tmp_path_factory.mktemp("h")
    path = tmp / "h.jsonl"
    path.write_text(json.dumps(row | {"query": row.get("query", "q"), "title": row.get("title", "t")}) + "\n")
    res = load_records([path], rejects_path=tmp / "r.jsonl")
    assert len(res.records) + len(res.rejects) == 1
    for r in res.records:
        assert all(isinstance(v, str) and v for v in r.attributes.values())
        if isinstance(row.get("attributes"), dict):
            assert not any(isinstance(v, (dict, list)) for v in row["attributes"].values())
        assert r.price is None or (r.price >= 0 and r.price != float("inf"))
