"""The service never answers 5xx to a client's input: strict JSON, unicode, body caps, budgets, timeouts."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from taosr.deploy.configs import ServeSettings
from taosr.deploy.serve import create_app
from taosr.modeling import build_model
from taosr.prompts import PromptConfig

URL = "/v1/relevance"
GOOD = {"query": "red shoes", "items": [{"title": "red running shoes"}]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def net(tiny_tokenizer, tiny_config):
    return build_model(tiny_tokenizer, tiny_config).eval(), tiny_tokenizer


@pytest.fixture(scope="module")
def client(net):
    app = create_app(net, ServeSettings(max_body_bytes=100_000))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("raw, where", [
    (b'{"query": "q", "items": [{"title": "x", "price": NaN}]}', "NaN is not JSON"),
    (b'{"query": "q", "items": [{"price": NaN}]}', "NaN is not JSON"),  # invalid *and* unserialisable
    (b'{"query": "q", "items": [{"title": "x", "attributes": {"w": Infinity}}]}', "Infinity is not JSON"),
    (b'{"query": "q", "items": [{"title": "x", "price": 1e309}]}', "items[0].price: Input should be a finite number"),
    (b'{"query": "q", "items": [{"title": "x", "attributes": {"w": -1e999}}]}', "items[0].attributes.w"),
    (b'{"query": "q\\ud800", "items": [{"title": "x"}]}', "query: Value error, invalid unicode"),
    (b'{"query": "q", "items": [{"brand": "\\udfff"}]}', "items[0].brand: Value error, invalid unicode"),
    (b'{"query": "q", "items": [{"title": "x", "attributes": {"\\ud800": "v"}}]}', "invalid unicode"),
    (b'{"query": "caf\xe9", "items": [{"title": "x"}]}', "invalid UTF-8 (byte 14)"),
    (b'\xff\xfe{}', "invalid UTF-8 (byte 0)"),
])
def test_bad_input_is_422_never_500(client, raw, where):
    r = client.post(URL, content=raw, headers=JSON)
    assert r.status_code == 422, r.text
    assert where in r.json()["message"]
    assert "input" not in r.text  # the input is never echoed


def test_chunked_body_is_capped(client):
    chunk = b" " * 65_536
    r = client.post(URL, content=iter([b'{"query": "q", "items": [{"title": "x"}]}'] + [chunk] * 130), headers=JSON)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]  # 8.5 MB without Content-Length
    r = client.post(URL, content=iter([b'{"query": "q", "items": [{"title": "x"}]}', b" " * 1000]), headers=JSON)
    assert r.status_code == 200, r.text


def test_openapi_lists_every_status(client):
    responses = client.get("/openapi.json").json()["paths"][URL]["post"]["responses"]
    assert {"200", "400", "413", "422", "503", "504"} <= set(responses)


def test_large_items_are_cut_to_the_token_budget_before_scoring(net):
    cfg = PromptConfig(max_item_tokens=40, max_prompt_tokens=200)
    from taosr.deploy.schema import ServingConfig

    app = create_app(net, ServeSettings(), serving=ServingConfig(prompt=cfg))
    scorer = app.state.service.scorer
    seen, original = [], scorer.encode_groups
    scorer.encode_groups = lambda groups: seen.append(original(groups)) or seen[-1]
    big = {"query": "smile", "items": [{"title": "\U0001F600" * 2000,
                                        "attributes": {f"a{j}": "\U0001F601" * 2000 for j in range(3)}} for _ in range(20)]}
    with TestClient(app) as client:
        t0 = time.perf_counter()
        r = client.post(URL, json=big)
        assert r.status_code == 200 and len(r.json()["results"]) == 20
        assert time.perf_counter() - t0 < 30
    q_ids, suffixes = seen[-1]
    answer = len(app.state.service.scorer.answer_ids)
    assert max(len(q_ids[0]) + len(s) for s in suffixes[0]) <= cfg.max_query_tokens + cfg.max_item_tokens + answer


def test_a_timed_out_request_is_answered_504_and_its_work_abandoned(net):
    app = create_app(net, ServeSettings(request_timeout_s=0.5))
    service = app.state.service
    entered, release, scored = threading.Event(), threading.Event(), []
    original = service.score_jobs

    def gated(jobs):
        scored.extend(r.title for j in jobs for r in j.records)
        if len(scored) == 1:
            entered.set()
            release.wait(10)
        return original(jobs)

    service.score_jobs = gated
    with TestClient(app) as client:
        holder = threading.Thread(target=client.post, args=(URL,), kwargs={"json": GOOD})
        holder.start()
        assert entered.wait(5)
        r = client.post(URL, json={"query": "late", "items": [{"title": "never scored"}]})
        assert r.status_code == 504 and "request_timeout_s" in r.json()["detail"]
        release.set()
        holder.join(10)
        assert client.post(URL, json=GOOD).status_code == 200
    assert "never scored" not in scored and scored.count("red running shoes") == 2


def test_a_large_request_is_sliced_and_a_small_one_goes_first(net, tiny_splits):
    """With max_batch_tokens, a large request is scored over several micro-batches; a small request that
    arrives meanwhile is in the next one, and the large request's answer equals the offline scores."""
    from taosr.infer.scoring import score_records

    big = [r for r in tiny_splits["test"] if r.query == tiny_splits["test"][0].query][:3]
    big = (big * 4)[:12]
    app = create_app(net, ServeSettings(max_batch_tokens=100))
    service = app.state.service
    entered, release, slices = threading.Event(), threading.Event(), []
    original = service.score_jobs

    def gated(pieces):
        slices.append([(p.records[0].query, len(p.records)) for p in pieces])
        if len(slices) == 1:
            entered.set()
            release.wait(10)
        return original(pieces)

    service.score_jobs = gated
    body = {"query": big[0].query, "items": [{"id": str(i), "title": r.title, "category": r.category, "brand": r.brand,
                                              "attributes": r.attributes, "price": r.price,
                                              "description": r.description} for i, r in enumerate(big)]}
    with TestClient(app) as client:
        result = {}
        holder = threading.Thread(target=lambda: result.update(r=client.post(URL, json=body)))
        holder.start()
        assert entered.wait(5)
        small = threading.Thread(target=lambda: result.update(s=client.post(URL, json=GOOD)))
        small.start()
        time.sleep(0.3)
        release.set()
        small.join(10)
        holder.join(10)
    assert result["s"].status_code == 200 and result["r"].status_code == 200
    assert len(slices) >= 3 and slices[1][0] == ("red shoes", 1)  # the small request first in the 2nd batch
    assert sum(n for s in slices for q, n in s if q == big[0].query) == len(big)
    probs = [[x["probs"][k] for k in "1234"] for x in result["r"].json()["results"]]
    import numpy as np

    np.testing.assert_allclose(probs, score_records(net[0], net[1], big, PromptConfig()), atol=1e-5)
