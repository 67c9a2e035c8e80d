"""Loaders: every row loads or is rejected with file/row/field/reason; bad files raise one DataError."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taosr.data.loaders import DataError, LoadResult, load_records
from taosr.data.rows import LARGE_VERSION_REASON, clean_text
from taosr.data.sources import load_esci_official, load_wands
from taosr.data.summary import format_summary, inspect_files

REAL = Path(__file__).resolve().parents[3] / "shared/data/real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data folder {REAL} is absent (see shared/data/real/README.md)")


def _complete(res: LoadResult, rows: int) -> None:
    """Nothing silently dropped: records + rejects (+ skipped) == rows read."""
    s = res.summary()
    assert s["rows"] == rows == len(res.records) + len(res.rejects) + sum(res.skipped.values())
    assert s["records"] == len(res.records) and s["rejects"] == len(res.rejects)


def _by_row(res: LoadResult) -> dict[int, dict]:
    return {r["row"]: r for r in res.rejects}


# ---------------------------------------------------------------- taosr's own format

GOOD = {"id": "a1", "query": "red shoes", "title": "Red running shoe", "brand": "Acme", "price": 19.5,
        "attributes": {"color": "red"}, "label": "Excellent", "query_type": "attribute"}


def test_jsonl_good_and_bad_rows(tmp_path):
    lines = [
        json.dumps(GOOD),                                   # 1 ok
        json.dumps(GOOD | {"id": 7, "label": "maybe"}),     # 2 bad label
        "",                                                 # blank line: not a row
        json.dumps(GOOD | {"query": "  "}),                 # 4 missing query
        json.dumps(GOOD | {"price": -3}),                   # 5 negative price
        json.dumps(GOOD | {"attributes": "not json"}),      # 6 attributes not JSON
        "{broken json",                                     # 7 invalid JSON
        "[1, 2]",                                           # 8 not an object
        json.dumps({k: v for k, v in GOOD.items() if k not in ("id", "label")}),  # 9 ok, no id/label
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    res = load_records([path], rejects_path=tmp_path / "out" / "rejects.jsonl")
    _complete(res, 8)
    assert [r.id for r in res.records] == ["a1", "pairs:9"]
    assert res.records[0].label == 4 and res.records[0].price == 19.5 and res.records[0].attributes == {"color": "red"}
    assert res.records[1].label is None
    rej = _by_row(res)
    assert sorted(rej) == [2, 4, 5, 6, 7, 8]
    assert {r["file"] for r in res.rejects} == {str(path)}
    assert [rej[i]["field"] for i in (2, 4, 5, 6, 7, 8)] == ["label", "query", "price", "attributes", None, None]
    assert "not a relevance label: 'maybe'" in rej[2]["reason"] and rej[4]["reason"] == "missing query"
    assert "greater than or equal to 0" in rej[5]["reason"] and rej[7]["reason"].startswith("invalid JSON")
    assert rej[8]["reason"] == "not a JSON object" and rej[2]["raw"]["id"] == 7
    written = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(res.rejects)) and len(written) == 6
    s = res.summary()
    assert s["labels"] == {"Excellent": 1, "Related": 0, "Mismatch": 0, "Irrelevant": 0, "unlabelled": 1}
    assert s["query_types"] == {"attribute": 2} and s["files"][str(path)] == {"rows": 8, "records": 2, "rejects": 6, "skipped": 0}
    assert s["rejects_path"] == str(tmp_path / "out" / "rejects.jsonl")


def test_csv_good_and_bad_rows(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        "id,query,title,category,brand,attributes,price,description,label,query_type\n"
        '007,zapatos rojos,"Zapato <b>rojo</b>, talla 42",Calzado,,"{""color"": ""rojo""}",12.5,"línea 1<br>línea&nbsp;2",E,\n'
        "2,,Blue shirt,,,,,,3,\n"                                  # missing query
        "3,mug,Coffee mug,,,{not json},4,,2,\n"                    # attributes not JSON
        "4,mug,Coffee mug,,,,-1,,2,\n"                             # negative price
        "5,mug,Coffee mug,,,,,,Z,\n"                               # bad label
        '6,mug,"Multi\nline title",,,,,,,\n'                       # ok: quoted newline, unlabelled
        "7,mug,too,many,fields,,,,,,,\n",                          # wrong field count
        encoding="utf-8",
    )
    res = load_records([path], rejects_path=tmp_path / "rejects.jsonl")
    _complete(res, 7)
    first, sixth = res.records
    assert first.id == "007" and first.query == "zapatos rojos" and first.title == "Zapato rojo, talla 42"
    assert first.attributes == {"color": "rojo"} and first.label == 4 and first.brand is None and first.query_type is None
    assert first.description == "línea 1\nlínea 2" and first.category == "Calzado"
    assert sixth.title == "Multi line title" and sixth.label is None
    rej = _by_row(res)
    assert {i: r["field"] for i, r in rej.items()} == {2: "query", 3: "attributes", 4: "price", 5: "label", 7: None}
    assert rej[7]["reason"] == "expected 10 fields, got 12" and rej[3]["raw"]["attributes"] == "{not json}"
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 5


def test_parquet_good_and_bad_rows(tmp_path):
    base = GOOD | {"label": 4, "attributes": None}
    rows = [base | {"attributes": json.dumps({"size": "M"})}, base | {"id": "b", "label": 9},
            base | {"id": "c", "title": None}, base | {"id": "d", "price": -1.0}]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    res = load_records([path])
    _complete(res, 4)
    assert [r.id for r in res.records] == ["a1"] and res.records[0].attributes == {"size": "M"}
    assert res.records[0].label == 4 and res.records[0].price == 19.5
    # a map<string, string> attributes column reads back as pairs
    mapped = pa.table({"query": ["q"], "title": ["t"], "attributes": pa.array([[("color", "red")]], pa.map_(pa.string(), pa.string()))})
    pq.write_table(mapped, tmp_path / "map.parquet")
    assert load_records([tmp_path / "map.parquet"]).records[0].attributes == {"color": "red"}
    assert {r["row"]: r["field"] for r in res.rejects} == {2: "label", 3: "title", 4: "price"}
    assert res.summary()["rejects_path"] is None


def test_rejects_file_written_even_when_empty_and_require_label(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"label": None}) + "\n", encoding="utf-8")
    res = load_records([path], rejects_path=tmp_path / "none.jsonl")
    assert len(res.records) == 2 and (tmp_path / "none.jsonl").read_text() == ""
    strict = load_records([path], require_label=True)
    assert len(strict.records) == 1 and strict.rejects[0]["field"] == "label" and strict.rejects[0]["row"] == 2


def test_fmt_overrides_extension_and_tsv_is_sniffed(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("query\ttitle\tlabel\nsofa\tGrey sofa\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="unknown format"):
        load_records([path])
    res = load_records([path], fmt="csv")
    assert [(r.query, r.title, r.label) for r in res.records] == [("sofa", "Grey sofa", 1)]


# ---------------------------------------------------------------- files that are not what they claim


@pytest.mark.parametrize("name, content, message", [
    ("garbage.jsonl", bytes(range(256)) * 8, "binary data"),
    ("text.jsonl", b"hello world\nthis is not json\n", "no JSON object"),
    ("empty.csv", b"  \n", "empty file"),
    ("other.csv", b"name,value\na,1\n", "neither a query nor a title column"),
    ("queries.csv", b"query_id,query\n1,sofa\n", "contains queries only"),
    ("products.csv", b"product_id,product_title\nB1,Sofa\n", "no query column"),
    ("examples.csv", b"query,product_id,esci_label\nsofa,B1,E\n", "no item text"),
    ("fake.parquet", b"this is not parquet at all", "not a readable Parquet file"),
    ("doc.json", b'{"hello": 1}', "not a relevance file"),
    ("queryset.json", b'{"querySetQueries": [{"queryText": "sofa"}]}', "contains queries only"),
])
def test_bad_files_raise_one_data_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_records([path])
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("name, content", [
    ("latin1.csv", "query,title\nsofa,x\ncañón,x\nlamp,y\n".encode("latin-1")),
    ("latin1.jsonl", '{"query": "sofa", "title": "x"}\n{"query": "cañón", "title": "x"}\n{"query": "lamp", '
                     '"title": "y"}\n'.encode("latin-1")),
])
def test_a_byte_that_is_not_utf8_rejects_its_row_not_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    res = load_records([path])
    assert [r.query for r in res.records] == ["sofa", "lamp"]
    assert [(r["row"], r["field"], r["reason"]) for r in res.rejects] == [(2, "query", "not UTF-8: byte 0xf1 at position 2")]


def test_missing_file_and_parquet_named_csv(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records([tmp_path / "nope.csv"])
    pq.write_table(pa.Table.from_pylist([GOOD | {"attributes": None}]), tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_bytes((tmp_path / "p.parquet").read_bytes())
    with pytest.raises(DataError, match="is a Parquet file"):
        load_records([tmp_path / "p.csv"])
    assert len(load_records([tmp_path / "p.csv"], fmt="parquet").records) == 1


def test_clean_text():
    assert clean_text("<p>Café&nbsp;&amp; <b>niño</b></p>\n\n  x") == "Café & niño x"
    assert clean_text("a<br/>b <li>c</li>  d", multiline=True) == "a\nb\nc\nd"
    assert clean_text("2 < 3 and 5 > 4") == "2 < 3 and 5 > 4"  # not tags
    assert clean_text("Cafe\u0301") == "Café"  # NFC, accents kept
    assert clean_text("  <br> ") is None and clean_text(None) is None and clean_text(float("nan")) is None


# ---------------------------------------------------------------- ESCI merged, official, WANDS, OpenSearch

ESCI_HEADER = ("example_id,query,query_id,product_id,product_locale,esci_label,small_version,large_version,"
               "product_title,product_description,product_bullet_point,product_brand,product_color,query_source\n")


def test_esci_merged_csv(tmp_path):
    path = tmp_path / "esci.csv"
    path.write_text(
        ESCI_HEADER
        + '11,zapatillas niño,5,B01,es,E,1,1,"Zapatillas &amp; más","<b>Cómodas</b>","Suela\nLigera",Nike,Azul,negations\n'
        + ",sofa,6,B02,us,Substitute,0,1,Grey sofa,,,,,\n"
        + "13,sofa,6,B03,us,C,0,0,Sofa cover,,,,,\n"  # not in the large version
        + "14,sofa,6,B04,us,X,0,1,Lamp,,,,,\n",       # bad label
        encoding="utf-8",
    )
    res = load_records([path])
    _complete(res, 4)
    a, b = res.records
    assert (a.id, a.query, a.title, a.brand, a.attributes) == ("11", "zapatillas niño", "Zapatillas & más", "Nike", {"color": "Azul"})
    assert a.description == "Cómodas\nSuela\nLigera" and a.label == 4 and a.query_type == "negations"
    assert (b.id, b.label, b.description, b.attributes, b.query_type) == ("6:B02", 3, None, {}, None)
    rej = _by_row(res)
    assert rej[3]["field"] == "large_version" and rej[3]["reason"] == LARGE_VERSION_REASON
    assert rej[4]["field"] == "label"


def _official(tmp_path, products_drop=()):
    ex = [
        dict(example_id=1, query="sofa", query_id=10, product_id="P1", product_locale="us", esci_label="E", small_version=1, large_version=1, split="train"),
        dict(example_id=2, query="sofa", query_id=10, product_id="P2", product_locale="us", esci_label="I", small_version=0, large_version=1, split="test"),
        dict(example_id=3, query="sofá", query_id=11, product_id="P1", product_locale="es", esci_label="S", small_version=0, large_version=1, split="train"),
        dict(example_id=4, query="sofa", query_id=10, product_id="P3", product_locale="us", esci_label="C", small_version=0, large_version=0, split="train"),
        dict(example_id=5, query="sofa", query_id=10, product_id="MISSING", product_locale="us", esci_label="E", small_version=1, large_version=1, split="train"),
    ]
    pr = [dict(product_id=pid, product_title=title, product_description=desc, product_bullet_point=None,
               product_brand="B", product_color=None, product_locale=loc)
          for pid, loc, title, desc in [("P1", "us", "Grey sofa", "<p>Soft</p>"), ("P2", "us", "Lamp", None),
                                        ("P1", "es", "Sofá gris", "Cómodo"), ("P3", "us", "Cover", None)]]
    pq.write_table(pa.Table.from_pylist(ex), tmp_path / "shopping_queries_dataset_examples.parquet")
    pq.write_table(pa.Table.from_pylist(pr), tmp_path / "shopping_queries_dataset_products.parquet")
    (tmp_path / "shopping_queries_dataset_sources.csv").write_text("query_id,source\n10,other\n11,negations\n")
    return tmp_path / "shopping_queries_dataset_examples.parquet", tmp_path / "shopping_queries_dataset_products.parquet"


def test_esci_official_two_parquets(tmp_path):
    examples, products = _official(tmp_path)
    res = load_esci_official(examples, products, sources_csv=tmp_path / "shopping_queries_dataset_sources.csv",
                             rejects_path=tmp_path / "rej.jsonl")
    _complete(res, 5)
    assert [(r.id, r.query, r.title, r.label, r.query_type) for r in res.records] == [
        ("1", "sofa", "Grey sofa", 4, "other"), ("2", "sofa", "Lamp", 1, "other"), ("3", "sofá", "Sofá gris", 3, "negations")]
    assert res.records[0].description == "Soft" and res.skipped == {LARGE_VERSION_REASON: 1}
    assert [(r["row"], r["field"]) for r in res.rejects] == [(5, "product_id")]
    assert res.summary()["files"][str(examples)] == {"rows": 5, "records": 3, "rejects": 1, "skipped": 1}
    assert len((tmp_path / "rej.jsonl").read_text().splitlines()) == 1

    train_us = load_esci_official(examples, products, split="train", locale="us")
    _complete(train_us, 5)
    assert [r.id for r in train_us.records] == ["1"] and train_us.records[0].query_type is None
    assert train_us.skipped == {LARGE_VERSION_REASON: 1, "split != train": 1, "product_locale != us": 1}

    with pytest.raises(DataError, match="missing ESCI column"):
        load_esci_official(products, products)
    with pytest.raises(DataError, match="no such file"):
        load_esci_official(examples, tmp_path / "absent.parquet")


def test_wands_folder(tmp_path):
    (tmp_path / "query.csv").write_text("query_id\tquery\tquery_class\n0\tsalon chair\tMassage Chairs\n1\tsofá\tSofas\n")
    (tmp_path / "product.csv").write_text(
        "product_id\tproduct_name\tproduct_class\tcategory hierarchy\tproduct_description\tproduct_features\t"
        "rating_count\taverage_rating\treview_count\n"
        "100\tSalon Chair\tMassage Chairs\tFurniture / Chairs / Massage Chairs\tA <b>great</b> chair\t"
        "color:black|material:leather|junk\t10\t4.5\t8\n"
        "101\tGrey Sofa\tSofas\t\t\t\t\t\t\n")
    (tmp_path / "label.csv").write_text(
        "id\tquery_id\tproduct_id\tlabel\n0\t0\t100\tExact\n1\t1\t101\tPartial\n2\t0\t101\tIrrelevant\n"
        "3\t0\t999\tExact\n4\t7\t100\tExact\n5\t1\t100\tGood\n")
    res = load_wands(tmp_path)
    _complete(res, 6)
    chair = res.records[0]
    assert (chair.id, chair.query, chair.title, chair.category, chair.description) == (
        "0", "salon chair", "Salon Chair", "Massage Chairs", "A great chair")
    assert chair.attributes == {"color": "black", "material": "leather"}
    assert [r.label for r in res.records] == [4, 3, 1] and res.records[1].category == "Sofas"
    assert [(r["row"], r["field"]) for r in res.rejects] == [(4, "title"), (5, "query"), (6, "label")]
    assert "product_id 999 not in product.csv" in res.rejects[0]["reason"]
    assert len(load_records([tmp_path]).records) == 3  # a WANDS folder also loads through load_records
    (tmp_path / "label.csv").unlink()
    with pytest.raises(DataError, match="no label.csv"):
        load_wands(tmp_path)


def test_opensearch_judgments_are_rejected_row_by_row(tmp_path):
    path = tmp_path / "judgments.json"
    path.write_text(json.dumps({"name": "x", "judgmentRatings": [
        {"query": "sofa", "ratings": [{"docId": "B1", "rating": "100.000"}, {"docId": "B2", "rating": "0.000"}]},
        {"query": "lamp", "ratings": [{"docId": "B3", "rating": "10.000"}]}]}))
    res = load_records([path])
    _complete(res, 3)
    assert res.records == [] and {(r["field"], r["reason"]) for r in res.rejects} == {("title", "no product text (ids only)")}
    assert res.rejects[2]["raw"] == {"query": "lamp", "docId": "B3", "rating": "10.000"}


def test_inspect_files_reports_errors_and_writes_rejects(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | {"label": "?"}) + "\n")
    (tmp_path / "q.csv").write_text("query_id,query\n1,sofa\n")
    summary = inspect_files([good, tmp_path / "q.csv"], rejects_path=tmp_path / "r.jsonl")
    assert summary["records"] == 1 and summary["rejects"] == 1 and summary["rows"] == 2
    assert list(summary["errors"]) == [str(tmp_path / "q.csv")] and "queries only" in summary["errors"][str(tmp_path / "q.csv")]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
    table = format_summary(summary)
    assert table.row_count >= 8 and "1 loaded, 1 rejected of 2 rows" in str(table.title)


# ---------------------------------------------------------------- the real public files (../shared/data/real)


@needs_real
@pytest.mark.parametrize("name, loaded, labels", [
    ("underspec_esci_200.csv", 200, {"Excellent": 138, "Related": 49, "Mismatch": 1, "Irrelevant": 12, "unlabelled": 0}),
    ("grandi9_sample_2c_full_data_E485.csv", 485, {"Excellent": 485, "Related": 0, "Mismatch": 0, "Irrelevant": 0, "unlabelled": 0}),
    ("jahnavigajula_esci_E_exact_matches_sample100.csv", 100, {"Excellent": 0, "Related": 0, "Mismatch": 0, "Irrelevant": 0, "unlabelled": 100}),
    ("esci_eval_pool_normalized.jsonl", 785, {"Excellent": 723, "Related": 49, "Mismatch": 1, "Irrelevant": 12, "unlabelled": 0}),
])
def test_real_esci_files_load(name, loaded, labels):
    res = load_records([REAL / name])
    _complete(res, loaded)
    assert len(res.records) == loaded and res.rejects == [] and res.summary()["labels"] == labels
    assert all(r.title and r.query and r.id for r in res.records)
    assert len({r.id for r in res.records}) == loaded  # ids unique within the file
    assert not any("<br" in (r.description or "") or "&amp;" in r.title for r in res.records)


@needs_real
def test_real_files_details():
    pool = load_records([REAL / "esci_eval_pool_normalized.jsonl"]).summary()
    assert pool["query_types"] == {"other": 489, "parse_pattern": 129, "none": 100, "behavioral": 40, "negations": 27}
    spanish = load_records([REAL / "jahnavigajula_esci_E_exact_matches_sample100.csv"]).records
    assert any(c in r.title + r.query for r in spanish for c in "áéíóúñ")  # accents survive
    mama = load_records([REAL / "underspec_esci_200.csv"]).records[0]
    assert (mama.id, mama.query, mama.label, mama.attributes) == ("1288327", "mama koala", 4, {"color": "Jagger"})
    assert mama.description.startswith("Product Details\nMama Koala cloth diaper")


@needs_real
def test_real_opensearch_judgments_all_rejected():
    res = load_records([REAL / "opensearch_esci_us_judgments_ids_only.json"])
    _complete(res, 6678)
    assert res.records == [] and res.summary()["reject_reasons"] == {"title: no product text (ids only)": 6678}


@needs_real
@pytest.mark.parametrize("name", ["shopping_queries_dataset_sources.csv", "wands_query.tsv", "opensearch_esci_us_queryset.json"])
def test_real_queries_only_files_raise(name):
    with pytest.raises(DataError, match="contains queries only.*no items to judge") as err:
        load_records([REAL / name])
    assert name in str(err.value)


@needs_real
def test_real_inspect_all():
    files = sorted(p for p in REAL.iterdir() if p.suffix != ".md")
    summary = inspect_files(files)
    assert (summary["records"], summary["rejects"], len(summary["errors"])) == (1570, 6678, 3)
