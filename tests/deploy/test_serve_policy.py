"""The worker's batching policy with fake work (`plan_batch`, `BatchBudget`), and its answers against the offline
scorer's (`RelevanceService` on a tiny model, no HTTP)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from taosr.deploy.configs import ServeSettings
from taosr.deploy.schema import ServingConfig
from taosr.deploy.serve_worker import AGING, FLOOR_TOKENS, BatchBudget, Job, plan_batch
from taosr.infer.prefix import PrefixScorer
from taosr.records import Record


def job(name: str, costs: list[int], arrived: float = 0.0, query: int = 5) -> Job:
    return Job([Record(id=f"{name}{i}", query=name, title="t") for i in range(len(costs))], None, costs,
               query_cost=query, arrived=arrived)


def simulate(arrivals: list[tuple[float, Job]], budget: int, rate: float = 10_000.0, items: int = 256,
             overdue_s: float = 1.0, whole: int = 0) -> tuple[dict[str, float], list[list[tuple[str, int]]]]:
    """The worker's loop on a fake clock: a micro-batch takes tokens / rate seconds; a job joins the active list
    when it has arrived by the start of a micro-batch. Returns each job's finish time and the batches' pieces."""
    pending, active, clock, done, batches = sorted(arrivals, key=lambda a: a[0]), [], 0.0, {}, []
    while pending or active:
        if not active and pending[0][0] > clock:
            clock = pending[0][0]  # idle until the next arrival
        while pending and pending[0][0] <= clock:
            active.append(pending.pop(0)[1])
        pieces = plan_batch(active, budget, items, clock, overdue_s, whole)
        assert pieces, "a non-empty active list always yields a micro-batch"
        clock += sum(p.tokens for p in pieces) / rate
        batches.append([(p.job.records[0].query, p.end - p.start) for p in pieces])
        for p in pieces:
            if p.end == len(p.job.records):
                done[p.job.records[0].query] = clock
        active = [j for j in active if j.next < len(j.records)]
    return done, batches


def test_a_large_request_cannot_hold_up_a_small_one():
    """A small request arriving during a large one's slice goes alone in the very next micro-batch."""
    large, small = job("large", [288] * 20), job("small", [12], arrived=0.01)
    done, batches = simulate([(0.0, large), (0.01, small)], budget=600)
    assert batches[0] == [("large", 2)]  # a slice of 2 x 288 (+ query) tokens, ~60 ms at 10k tokens/s
    assert batches[1] == [("small", 1)]
    assert done["small"] - 0.01 < 2 * 600 / 10_000  # waited for the slice in flight, then its own
    assert sum(n for b in batches for q, n in b if q == "large") == 20  # every item scored once


def test_a_full_queue_forms_full_batches():
    """Equal requests queued together: each micro-batch takes as many whole ones as the budget holds."""
    jobs = [job(f"q{i}", [17] * 20, arrived=i * 1e-6) for i in range(10)]  # 345 tokens each with the query
    _, batches = simulate([(0.0, j) for j in jobs], budget=1100)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert all(n == 20 for b in batches for _, n in b)  # whole requests, none sliced
    assert [q for b in batches for q, _ in b] == [f"q{i}" for i in range(10)]  # equal work: first come first


def test_a_typical_request_over_the_budget_goes_whole_and_alone():
    """With a time budget below one typical request, requests up to `whole` tokens are not sliced (each slice
    would recompute the query); each goes alone, smaller ones first; a larger one is still sliced."""
    def typical():
        return [job(f"q{i}", [20] * 20, arrived=i * 1e-6, query=175) for i in range(3)]  # 575 tokens each

    large = job("large", [288] * 20, arrived=1.0, query=175)
    _, batches = simulate([(0.0, j) for j in typical()] + [(0.0, large)], budget=256, whole=1024)
    assert batches[:3] == [[("q0", 20)], [("q1", 20)], [("q2", 20)]]
    assert all(b[0][0] == "large" and len(b) == 1 for b in batches[3:])
    assert [n for (_, n), in batches[3:]] == [1] * 18 + [2]  # sliced, until its last 2 items (751 tokens) fit whole
    _, sliced = simulate([(0.0, j) for j in typical()], budget=256, whole=0)
    assert len(sliced) > 3 and all(n < 20 for b in sliced for _, n in b)


def test_least_work_first_and_the_item_cap():
    jobs = [job("big", [100] * 6), job("mid", [50] * 3), job("tiny", [10])]
    pieces = plan_batch(jobs, tokens=10_000, items=4, now=0.0, overdue_s=1.0)
    assert [(p.job.records[0].query, p.start, p.end) for p in pieces] == [("tiny", 0, 1), ("mid", 0, 3)]
    pieces = plan_batch(jobs, tokens=10_000, items=4, now=0.0, overdue_s=1.0)
    assert [(p.job.records[0].query, p.start, p.end) for p in pieces] == [("big", 0, 4)]  # a slice, alone


def test_a_stream_of_small_requests_cannot_starve_a_large_one():
    """More small requests than the model can score (one every 25 ms, 30 ms of work each): least work first alone
    would never reach the large one; passed over for `overdue_s`, it gets a slice, and finishes."""
    large = job("large", [288] * 20)
    smalls = [(i * 0.025, job(f"s{i:03}", [300], arrived=i * 0.025)) for i in range(1, 400)]
    done, batches = simulate([(0.0, large)] + smalls, budget=600, overdue_s=0.5)
    slices = [i for i, b in enumerate(batches) if b[0][0] == "large"]
    assert len(slices) == 10 and all(len(batches[i]) == 1 for i in slices)  # 2 items a slice, alone
    assert slices[1] - slices[0] <= 0.5 / 0.0305 + 2  # a slice after each overdue period of small batches
    assert done["large"] < max(done.values()) - 2  # seconds before the backlog of small ones is through
    for j in [large] + [j for _, j in smalls]:
        j.next, j.served = 0, j.arrived
    done, _ = simulate([(0.0, large)] + smalls, budget=600, overdue_s=1e9)  # least work first alone
    assert done["large"] == max(done.values())  # the large one last


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 400), min_size=1, max_size=30), min_size=1, max_size=8),
       st.integers(50, 3000), st.integers(1, 64))
def test_every_item_once_within_the_budgets(costs, budget, items):
    """Any jobs: each item is scored exactly once, in order; a micro-batch stays within both budgets unless it is
    one item that alone exceeds the token budget."""
    jobs = [job(f"j{i}", c, arrived=i) for i, c in enumerate(costs)]
    _, batches = simulate([(0.0, j) for j in jobs], budget=budget, items=items, overdue_s=1e9)
    for j, c in zip(jobs, costs):
        assert sum(n for b in batches for q, n in b if q == j.records[0].query) == len(c)
    for b in batches:
        assert sum(n for _, n in b) <= items
    assert all(j.next == len(j.records) for j in jobs)


def test_budget_follows_the_measured_speed():
    b = BatchBudget(target_s=0.05, cap=4096, start=1024)
    assert b.tokens() == 1024  # nothing measured yet
    b.observe(1000, 0.1)  # 10k tokens/s -> 500 tokens in 50 ms
    assert b.tokens() == 500
    b.observe(100, 1.0)  # under half the budget: fixed costs, not speed; ignored
    assert b.tokens() == 500
    for _ in range(30):
        b.observe(b.tokens(), b.tokens() / 50_000)  # full batches at 50k tokens/s -> 2,500
    assert abs(b.tokens() - 2500) <= 5
    for _ in range(30):
        b.observe(b.tokens(), b.tokens() / 1e6)
    assert b.tokens() == 4096  # the cap
    slow = BatchBudget(target_s=0.05, cap=4096)
    slow.observe(1024, 100.0)
    assert slow.tokens() == FLOOR_TOKENS
    assert AGING >= 2


def test_service_answers_equal_the_offline_scorer(tiny_model, tiny_tokenizer, tiny_splits):
    """Concurrent requests, one large one sliced over many micro-batches (a 60-token budget), small ones arriving
    between its slices: every answer equals the offline scorer's to 1e-5."""
    from taosr.deploy.serve_worker import RelevanceService

    groups: dict[str, list[Record]] = {}
    for r in tiny_splits["test"]:
        groups.setdefault(r.query, []).append(r)
    requests = list(groups.values())[:6]
    large = [r.model_copy(update={"query": requests[0][0].query}) for g in requests for r in g]  # ~18 items
    offline = PrefixScorer(tiny_model, tiny_tokenizer)
    want = [offline.score_items(large)] + [offline.score_items(g) for g in requests[1:]]
    service = RelevanceService(PrefixScorer(tiny_model, tiny_tokenizer), ServingConfig(),
                               ServeSettings(max_batch_tokens=60, max_wait_ms=0))
    slices, threads = [], set()
    original = service.score_jobs
    service.score_jobs = lambda pieces: slices.append(len(pieces)) or threads.add(threading.get_ident()) or original(
        pieces)

    async def main():
        await service.start()
        try:
            first = await service.submit(large)
            futures = [first]
            for g in requests[1:]:
                await asyncio.sleep(0.005)
                futures.append(await service.submit(g))
            return await asyncio.wait_for(asyncio.gather(*futures), 60)
        finally:
            await service.stop()

    got = asyncio.run(main())
    assert len(slices) > 6  # the large request took several micro-batches
    assert len(threads) == 1 and threading.get_ident() not in threads  # every forward on the one model thread
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
