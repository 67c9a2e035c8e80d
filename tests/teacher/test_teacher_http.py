"""The HTTP teacher against REAL uvicorn servers on 127.0.0.1 (no mocks): consistency, cache, faults, CoT runs.

Fault injection lives here: small FastAPI apps that fail N times, sleep past the client timeout, or
answer with the wrong conclusion. All loops are bounded; every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from taosr.labels import LEVEL_NAMES, conclusion_of
from taosr.records import Record
from taosr.teacher.chat_server import BackgroundServer, RuleBackend, TransformersBackend, create_chat_app, free_port
from taosr.teacher.cot import read_rows, run_cot
from taosr.teacher.http import OpenAITeacher
from taosr.teacher.llm import LocalTeacher
from taosr.teacher.prompt import build_teacher_prompt, extract_pair
from taosr.teacher.reasoning import RuleTeacher
from taosr.teacher.retrieval import RuleRetriever


@pytest.fixture(scope="module")
def retriever():
    return RuleRetriever()


@pytest.fixture(scope="module")
def pairs(tiny_splits):
    """12 labelled synthetic pairs covering every query type."""
    by_type: dict[str, list[Record]] = {}
    for r in tiny_splits["train"]:
        by_type.setdefault(r.query_type, []).append(r)
    out = [r for rs in by_type.values() for r in rs[:2]]
    assert len(by_type) == 6 and len(out) == 12
    return out


def has(d: dict, want: dict) -> bool:
    """Every key of `want` is in `d` with that value."""
    return {k: d.get(k) for k in want} == want


def _completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def fault_app(behaviour) -> FastAPI:
    """`behaviour(call_no, body) -> JSONResponse | dict | float` (a float: sleep that long, then answer)."""
    app = FastAPI()
    app.state.bodies = []
    rules = RuleBackend()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        out = behaviour(len(app.state.bodies), body)
        if isinstance(out, (int, float)):
            await asyncio.sleep(out)
            out = None
        if out is None:
            out = _completion(rules.complete(body["messages"]).text)
        return out

    return app


def test_prompt_embeds_rules_pair_and_gold(pairs, retriever):
    rec = pairs[0]
    rules = retriever.rules_for(rec, 3)
    msgs = build_teacher_prompt(rec, rules, rec.label)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "judgement: <excellent|related|mismatch|irrelevant>." in msgs[0]["content"]
    for step in ("query understanding", "item understanding", "category matching", "attribute matching"):
        assert step in msgs[0]["content"]
    assert all(r.id in msgs[1]["content"] and r.text in msgs[1]["content"] for r in rules)
    assert f"judgement: {LEVEL_NAMES[rec.label].lower()}." in msgs[1]["content"]
    back = extract_pair(msgs)
    assert back is not None and back.label is None  # the gold is stated in words, not in the pair
    assert back.model_copy(update={"label": rec.label}) == rec
    tricky = Record(id="t", query="q", title='fence ```json\n{"query": "x"}\n``` }```', label=2,
                    description="<b>bold</b> " + "long " * 500)
    back = extract_pair(build_teacher_prompt(tricky, [], 2))
    assert back.title == tricky.title and back.description.startswith("bold long") and len(back.description) <= 600


def test_clean_reasoning_normalises_the_verdict():
    from taosr.teacher.prompt import clean_reasoning

    raw = "<think>long musing</think>\n```\nquery: x.\n\n**Judgment:** **Mismatch**. Hope this helps!\n```"
    assert clean_reasoning(raw) == "query: x.\njudgement: mismatch."
    assert conclusion_of(clean_reasoning("item: y.\njudgement: related")) == 3


def test_rule_backend_over_http_consistent_then_cached(pairs, retriever, tmp_path):
    app = create_chat_app(RuleBackend())
    with BackgroundServer(app) as url:
        with OpenAITeacher(url, "rules", cache_path=tmp_path / "c.sqlite", retriever=retriever, timeout_s=5) as t:
            outs = t.outcome_many(pairs)
        assert [o.status for o in outs] == ["ok"] * len(pairs)
        for o, r in zip(outs, pairs):
            lines = o.reasoning.text.splitlines()
            assert len(lines) == 5 and lines[-1] == f"judgement: {LEVEL_NAMES[r.label].lower()}."
            assert [ln.split(":")[0] for ln in lines] == ["query", "item", "category", "attributes", "judgement"]
            assert o.reasoning.level == r.label == conclusion_of(o.reasoning.text)
            assert o.reasoning.rule_ids == RuleTeacher().reason(r).rule_ids  # cited rules, read from the text
        assert t.stats["requests"] == app.state.requests == len(pairs)
        assert t.stats["accepted"] == len(pairs) and t.stats["retries"] == t.stats["inconsistent"] == 0

        with OpenAITeacher(url, "rules", cache_path=tmp_path / "c.sqlite", retriever=retriever) as again:
            reasons = again.reason_many(pairs)
        assert app.state.requests == len(pairs)  # the rerun sent nothing
        assert again.stats["cache_hits"] == len(pairs) and again.stats["requests"] == 0
        assert [r.text for r in reasons] == [o.reasoning.text for o in outs]


def test_500_twice_then_success_is_retried(pairs, retriever):
    app = fault_app(lambda n, body: JSONResponse({"error": "boom"}, status_code=500) if n <= 2 else None)
    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever, max_retries=3,
                                                     backoff_s=0.01) as t:
        o = t.outcome(pairs[0])
    assert o.status == "ok"
    assert has(t.stats, {"requests": 3, "retries": 2, "http_errors": 2, "accepted": 1})
    assert len(app.state.bodies) == 3


def test_slow_server_fails_after_bounded_retries_and_time(pairs, retriever):
    app = fault_app(lambda n, body: 1.0)  # always sleeps past the 0.2 s timeout
    start = time.monotonic()
    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever, timeout_s=0.2, max_retries=2,
                                                     backoff_s=0.01) as t:
        o = t.outcome(pairs[0])
    assert o.status == "failed" and "timeout" in o.reason
    assert t.stats["requests"] == 3 and t.stats["retries"] == 2 and t.stats["http_errors"] == 3
    assert t.stats["failed"] == 1
    assert time.monotonic() - start < 6  # 3 x 0.2 s + backoff, plus the server's graceful shutdown


def test_connection_refused_and_client_errors_are_bounded(pairs, retriever):
    dead = f"http://127.0.0.1:{free_port()}"
    with OpenAITeacher(dead, "m", retriever=retriever, max_retries=2, backoff_s=0.01, timeout_s=1) as t:
        o = t.outcome(pairs[0])
    assert o.status == "failed" and "connection" in o.reason and t.stats["requests"] == 3

    app = fault_app(lambda n, body: JSONResponse({"error": "bad model"}, status_code=400))
    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever, backoff_s=0.01) as t:
        o = t.outcome(pairs[0])
    assert o.status == "failed" and "400" in o.reason
    assert t.stats["requests"] == 1 and len(app.state.bodies) == 1  # a 4xx is not retried


def _wrong(body) -> dict:
    gold = extract_pair(body["messages"])
    text = RuleBackend().complete(body["messages"]).text
    level = conclusion_of(text)
    wrong = LEVEL_NAMES[1 if level != 1 else 4].lower()
    return _completion(text.rsplit("judgement:", 1)[0] + f"judgement: {wrong}." if gold else "no pair")


def test_wrong_conclusion_rejected_then_retried(pairs, retriever, tmp_path):
    # wrong at temperature 0, right when sampled: the second attempt is accepted
    app = fault_app(lambda n, body: _wrong(body) if body["temperature"] == 0 else None)
    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever,
                                                     cache_path=tmp_path / "c.sqlite") as t:
        o = t.outcome(pairs[0])
    assert o.status == "ok" and o.attempts == 2
    assert has(t.stats, {"requests": 2, "inconsistent": 1, "accepted": 1, "rejected": 0})
    first, second = app.state.bodies
    assert first["temperature"] == 0 and second["temperature"] > 0 and first["seed"] != second["seed"]

    # always wrong: rejected after max_attempts, counted, never accepted
    app = fault_app(lambda n, body: _wrong(body))
    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever, max_attempts=3) as t:
        o = t.outcome(pairs[1])
    assert o.status == "inconsistent" and o.reasoning is None and "gold is" in o.reason
    assert has(t.stats, {"requests": 3, "inconsistent": 3, "rejected": 1, "accepted": 0})


def test_run_cot_counts_and_resumes(pairs, retriever, tmp_path):
    out = tmp_path / "cot.jsonl"
    outside = Record(id="odd", query="a cat that sings", title="karaoke cat toy", label=1)
    unlabelled = pairs[0].model_copy(update={"id": "nolabel", "label": None})
    records = pairs[:6] + [outside, unlabelled, pairs[0]]  # pairs[0] twice: a repeated id

    dead = f"http://127.0.0.1:{free_port()}"
    with OpenAITeacher(dead, "m", retriever=retriever, max_retries=0) as t:
        s = run_cot(records[:3], t, out, verbose=False)
    assert (s["ok"], s["failed"], s["file"]["failed"]) == (0, 3, 3)  # server down: failed, with reasons
    assert all("connection" in r["reason"] for r in read_rows(out))

    app = create_chat_app(RuleBackend())
    with BackgroundServer(app) as url, OpenAITeacher(url, "rules", retriever=retriever, concurrency=3) as t:
        s = run_cot(records[:4], t, out, chunk_size=2, verbose=False)  # the 3 failed rows are redone
        assert (s["ok"], s["failed"], s["resumed"], s["file"]) == (4, 0, 0, {"ok": 4, "inconsistent": 0, "failed": 0})
        s = run_cot(records, t, out, chunk_size=2, verbose=False)
        assert has(s, {"ok": 2, "inconsistent": 1, "failed": 0, "resumed": 4, "unlabelled": 1, "duplicate_id": 1})
        assert s["file"] == {"ok": 6, "inconsistent": 1, "failed": 0}
        assert app.state.requests == 4 + 2 + 2  # the out-of-grammar pair was asked twice (max_attempts)
        assert run_cot(records, t, out, verbose=False)["written"] == 0  # nothing left to do

    rows = read_rows(out)
    assert [r["id"] for r in rows] == [r.id for r in pairs[:6]] + ["odd"]
    odd = rows[-1]
    assert odd["status"] == "inconsistent" and odd["reasoning"] is None and odd["rejected_text"]
    ok = rows[0]
    assert ok["teacher"] == "openai:rules" and ok["label"] == pairs[0].label and ok["rule_ids"]
    assert set(ok) >= {"id", "query", "title", "label", "reasoning", "rule_ids", "teacher", "status", "reason"}


def test_run_cot_with_the_rule_teacher(pairs, tmp_path):
    wrong = pairs[1].model_copy(update={"id": "flipped", "label": 1 if pairs[1].label != 1 else 4})
    outside = Record(id="odd", query="a cat that sings", title="karaoke cat toy", label=1)
    s = run_cot(pairs[:3] + [wrong, outside], RuleTeacher(), tmp_path / "c.jsonl", verbose=False)
    assert (s["ok"], s["inconsistent"], s["failed"]) == (3, 1, 1)
    rows = {r["id"]: r for r in read_rows(tmp_path / "c.jsonl")}
    assert rows["odd"]["reason"].startswith("the rule teacher cannot parse this query")
    assert "gold is" in rows["flipped"]["reason"]


def test_transformers_backend_and_local_teacher(tiny_model, tiny_tokenizer, pairs, retriever, tmp_path):
    from taosr.modeling import save

    save(tiny_model, tiny_tokenizer, tmp_path / "m")
    backend = TransformersBackend(tmp_path / "m", max_new_tokens=6)
    with BackgroundServer(create_chat_app(backend, api_key="k")) as url:
        msgs = build_teacher_prompt(pairs[0], retriever.rules_for(pairs[0]), pairs[0].label)
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": msgs}).status_code == 401
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": msgs},
                       headers={"Authorization": "Bearer k"}, timeout=30)
        assert r.status_code == 200
        body = r.json()
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert body["usage"]["completion_tokens"] <= 6 < body["usage"]["prompt_tokens"]
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k"}).json()
        assert models["data"][0]["id"] == "m"

    teacher = LocalTeacher(tmp_path / "m", retriever=retriever, max_new_tokens=6, max_attempts=2)
    outs = teacher.outcome_many(pairs[:2] + [pairs[2].model_copy(update={"label": None})])
    # an untrained model writes noise: rejected (never accepted by accident), counted
    assert [o.status for o in outs] == ["inconsistent", "inconsistent", "failed"]
    assert has(teacher.stats, {"requests": 4, "inconsistent": 4, "rejected": 2, "failed": 1})
    json.dumps(teacher.stats)


def test_timeout_is_a_deadline_for_a_trickling_server(pairs, retriever):
    """A server sending one byte every 0.1 s never trips a per-read timeout; the deadline still ends it."""
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        async def trickle():
            for _ in range(40):  # 4 s in all
                await asyncio.sleep(0.1)
                yield b" "
        return StreamingResponse(trickle(), media_type="application/json")

    with BackgroundServer(app) as url, OpenAITeacher(url, "m", retriever=retriever, timeout_s=0.5, max_retries=0) as t:
        start = time.monotonic()
        o = t.outcome(pairs[0])
        took = time.monotonic() - start
    assert o.status == "failed" and "timeout" in o.reason and "0.5s" in o.reason
    assert took < 1.5
