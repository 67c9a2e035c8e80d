"""The service and the loaders accept and refuse the same item values; /docs works offline."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from taosr.data.loaders import load_records
from taosr.deploy.serve import create_app
from taosr.modeling import build_model

ITEMS = [  # (item fields, accepted)
    ({"title": "t", "price": True}, False),
    ({"title": "t", "price": False}, False),
    ({"title": "t", "price": 3}, True),
    ({"title": "t", "price": -1}, False),
    ({"title": "t", "attributes": {"waterproof": True}}, True),
    ({"title": "t", "attributes": {"colour": None, "size": 4}}, True),
    ({"title": "t", "attributes": {"x": [1]}}, False),
    ({"title": "a\u0000b"}, False),
    ({"title": "t", "brand": "\ud800"}, False),
    ({"title": "t", "id": 12}, True),
    ({"title": "t", "description": "x\u0000"}, False),
]


@pytest.fixture(scope="module")
def client(tiny_tokenizer, tiny_config):
    with TestClient(create_app((build_model(tiny_tokenizer, tiny_config).eval(), tiny_tokenizer))) as c:
        yield c


def test_service_and_loader_accept_the_same_items(client, tmp_path):
    lines = [json.dumps({"query": "q", **item}) for item, _ in ITEMS]
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    res = load_records([tmp_path / "items.jsonl"])
    rejected = {r["row"] for r in res.rejects}
    loader = [i + 1 not in rejected for i in range(len(ITEMS))]
    service = [client.post("/v1/relevance", content=json.dumps({"query": "q", "items": [item]}),
                           headers={"content-type": "application/json"}).status_code == 200 for item, _ in ITEMS]
    assert loader == service == [ok for _, ok in ITEMS]
    assert "12" in {r.id for r in res.records}  # the loader's readings: a number id is text, null is absent
    assert {"size": "4"} in [r.attributes for r in res.records]
    waterproof = next(r for r in res.records if "waterproof" in r.attributes)
    assert waterproof.attributes == {"waterproof": "true"}


def test_docs_page_works_offline(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "POST /v1/relevance" in page and "/openapi.json" in page and "ItemIn" in page
    assert "<script" not in page and "cdn" not in page.lower() and "http" not in page
    assert client.get("/redoc").status_code == 404
