"""The HTTP judge: answers equal the offline scorer, every error path, overload, micro-batching, metrics."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from taosr.deploy.configs import ServeSettings
from taosr.deploy.cumpt import cumpt_levels, tiers_of
from taosr.deploy.schema import SERVING_FILE, ServingConfig
from taosr.deploy.serve import create_app
from taosr.infer.scoring import score_records
from taosr.modeling import build_model, save
from taosr.prompts import PromptConfig
from taosr.records import Record

PC = PromptConfig()
URL = "/v1/relevance"


@pytest.fixture(scope="module")
def net(tiny_tokenizer, tiny_config):
    return build_model(tiny_tokenizer, tiny_config).eval(), tiny_tokenizer


@pytest.fixture(scope="module")
def by_query(tiny_splits):
    """Test pairs grouped by query: [(query, [records])]."""
    groups: dict[str, list[Record]] = {}
    for r in tiny_splits["test"]:
        groups.setdefault(r.query, []).append(r)
    return list(groups.items())


def payload(query: str, recs: list[Record], with_ids: bool = True) -> dict:
    items = [{"title": r.title, "category": r.category, "brand": r.brand, "attributes": r.attributes,
              "price": r.price, "description": r.description} | ({"id": r.id} if with_ids else {}) for r in recs]
    return {"query": query, "items": items}


def offline(net, query: str, recs: list[Record]) -> np.ndarray:
    model, tok = net
    return score_records(model, tok, [r.model_copy(update={"query": query}) for r in recs], PC, batch_size=8)


def check_answer(body: dict, net, query: str, recs: list[Record], beta: float = 0.5) -> None:
    probs = np.array([[res["probs"][k] for k in "1234"] for res in body["results"]])
    assert [res["id"] for res in body["results"]] == [r.id for r in recs]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, offline(net, query, recs), atol=1e-5)
    levels = cumpt_levels(probs, beta)
    assert [res["level"] for res in body["results"]] == levels.tolist()
    assert [res["tier"] for res in body["results"]] == tiers_of(levels).tolist()
    assert body["beta"] == beta


def gate(service):
    """Make the worker's first micro-batch wait until `release` is set (the rest run normally)."""
    entered, release, calls = threading.Event(), threading.Event(), []
    original = service.score_jobs

    def gated(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            entered.set()
            release.wait(10)
        return original(jobs)

    service.score_jobs = gated
    return entered, release, calls


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def sample(app, name: str, **labels) -> float | None:
    return app.state.service.metrics.registry.get_sample_value(name, labels)


def test_success_matches_offline_scorer(net, by_query):
    app = create_app(net, ServeSettings(model_name="tiny"))
    with TestClient(app) as client:
        query, recs = by_query[0]
        r = client.post(URL, json=payload(query, recs))
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "tiny"
        check_answer(r.json(), net, query, recs)
        # ids default to the item's position
        r = client.post(URL, json=payload(query, recs, with_ids=False))
        assert [x["id"] for x in r.json()["results"]] == [str(i) for i in range(len(recs))]


def test_model_dir_uses_stored_beta(net, by_query, tmp_path):
    model, tok = net
    save(model, tok, tmp_path / "m")
    (tmp_path / "m" / SERVING_FILE).write_text(ServingConfig(beta=0.9).model_dump_json())
    app = create_app(tmp_path / "m", ServeSettings())
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"ready": True, "model": "m", "rule": "cumpt", "beta": 0.9}
        query, recs = by_query[1]
        r = client.post(URL, json=payload(query, recs))
        check_answer(r.json(), net, query, recs, beta=0.9)


def test_not_ready_before_startup(net):
    client = TestClient(create_app(net))  # no `with`: the lifespan (worker) has not started
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False


GOOD = {"query": "red shoes", "items": [{"title": "red running shoes"}]}
BAD = [  # (body or raw bytes, status, text the message must contain)
    ({"items": [{"title": "x"}]}, 422, "query: Field required"),
    ({"query": "   ", "items": [{"title": "x"}]}, 422, "query: String should have at least 1 character"),
    ({"query": "q", "items": [{"brand": "nike"}]}, 422, "items[0].title: Field required"),
    ({"query": "q", "items": [{"title": 123}]}, 422, "items[0].title: Input should be a valid string"),
    ({"query": "q", "items": []}, 422, "items: List should have at least 1 item"),
    ({"query": "q", "items": {"title": "x"}}, 422, "items: Input should be a valid list"),
    ({"query": "q", "items": [{"title": "x", "price": -3}]}, 422, "items[0].price: Input should be greater"),
    ({"query": "q", "items": [{"title": "x", "attributes": ["red"]}]}, 422, "items[0].attributes"),
    (b'{"query": "q", "items": [', 422, "JSON"),
    (b"not json at all", 422, "JSON"),
    ({"query": "q", "items": [{"title": f"t{i}"} for i in range(5)]}, 413, "items: 5 items, over the limit of 4"),
    ({"query": "q" * 81, "items": [{"title": "x"}]}, 413, "query: 81 characters, over the limit of 80"),
    ({"query": "q", "items": [{"title": "x"}, {"title": "y", "description": "d" * 100}]}, 413,
     "items[1].description: 100 characters"),
    ({"query": "q", "items": [{"title": "x", "attributes": {"color": "c" * 90}}]}, 413, "items[0].attributes.color"),
    ({"query": "q", "items": [{"title": "x" * 60}] * 4}, 413, "max_body_bytes"),
]


def test_bad_requests_get_clear_4xx_and_do_not_disturb_others(net):
    app = create_app(net, ServeSettings(max_items=4, max_text_chars=80, max_body_bytes=200))
    with TestClient(app) as client:
        for body, status, text in BAD:
            kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
            r = client.post(URL, **kw)
            assert r.status_code == status, (body, r.text)
            message = r.json().get("message") or r.json()["detail"]
            assert text in message, (text, r.json())
        r = client.post(URL, json=GOOD)
        assert r.status_code == 200 and len(r.json()["results"]) == 1
        assert client.get("/readyz").status_code == 200
    assert sample(app, "taosr_requests_total", status="422") == 10
    assert sample(app, "taosr_requests_total", status="413") == 5
    assert sample(app, "taosr_requests_total", status="200") == 1


def test_queue_full_answers_503_with_retry_after(net):
    app = create_app(net, ServeSettings(max_queue=1, retry_after_s=2))
    service = app.state.service
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        entered, release, _ = gate(service)
        first = pool.submit(client.post, URL, json=GOOD)  # taken by the worker, which then blocks
        assert entered.wait(5)
        second = pool.submit(client.post, URL, json=GOOD)  # waits in the queue (size 1)
        wait_for(lambda: service.queue.qsize() == 1)
        r = client.post(URL, json=GOOD)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert "max_queue" in r.json()["detail"]
        release.set()
        assert first.result(10).status_code == 200 and second.result(10).status_code == 200
        assert client.get("/readyz").status_code == 200
    assert sample(app, "taosr_requests_total", status="503") == 1
    assert sample(app, "taosr_requests_total", status="200") == 2


def test_concurrent_requests_share_a_batch_but_get_their_own_answers(net, by_query):
    app = create_app(net, ServeSettings(max_batch_items=256, max_batch_tokens=100_000, max_wait_ms=5))
    service = app.state.service
    service.budget.start = 100_000  # before any measured speed, a budget that holds them all
    asks = [by_query[i] for i in range(7)] + [(by_query[0][0], by_query[8][1])]  # two requests share a query
    with TestClient(app) as client, ThreadPoolExecutor(9) as pool:
        entered, release, calls = gate(service)
        held = pool.submit(client.post, URL, json=GOOD)
        assert entered.wait(5)
        futures = [pool.submit(client.post, URL, json=payload(q, recs)) for q, recs in asks]
        wait_for(lambda: service.queue.qsize() == len(asks))
        release.set()
        for (query, recs), fut in zip(asks, futures):
            r = fut.result(10)
            assert r.status_code == 200, r.text
            check_answer(r.json(), net, query, recs)
        assert held.result(10).status_code == 200
    # the 8 waiting requests formed one micro-batch, scored in one call (7 queries packed together)
    assert calls == [1, 8]
    assert sample(app, "taosr_batch_requests_count") == 2
    assert sample(app, "taosr_batch_requests_sum") == 1 + len(asks)
    assert sample(app, "taosr_batch_items_sum") == 1 + sum(len(recs) for _, recs in asks)


def test_a_failing_request_does_not_fail_its_batch_mates(net, by_query):
    app = create_app(net)
    service = app.state.service
    original = service.score_jobs

    def fragile(pieces):
        if any(r.title == "BOOM" for p in pieces for r in p.records):
            raise RuntimeError("boom")
        return original(pieces)

    service.score_jobs = fragile
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        entered, release, calls = gate(service)
        held = pool.submit(client.post, URL, json=GOOD)
        assert entered.wait(5)
        query, recs = by_query[2]
        bad = pool.submit(client.post, URL, json={"query": query, "items": [{"title": "BOOM"}]})
        good = pool.submit(client.post, URL, json=payload(query, recs))  # same query: same group
        wait_for(lambda: service.queue.qsize() == 2)
        release.set()
        assert bad.result(10).status_code == 500 and "RuntimeError" in bad.result().json()["detail"]
        assert good.result(10).status_code == 200
        check_answer(good.result().json(), net, query, recs)
        assert held.result(10).status_code == 200
    assert calls == [1, 2, 1, 1]  # the failed group of 2 was retried one request at a time


def test_metrics_and_openapi(net):
    app = create_app(net)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post(URL, json=GOOD).status_code == 200
        assert client.post(URL, json={"query": "q"}).status_code == 422
        text = client.get("/metrics").text
        schema = client.get("/openapi.json").json()
    assert 'taosr_requests_total{status="200"} 3.0' in text
    assert 'taosr_requests_total{status="422"} 1.0' in text
    assert "taosr_request_latency_seconds_count 4.0" in text
    assert "taosr_batch_items_bucket" in text and "taosr_pairs_scored_total 3.0" in text
    assert "taosr_queue_depth 0.0" in text
    assert URL in schema["paths"] and "RelevanceRequest" in json.dumps(schema)
