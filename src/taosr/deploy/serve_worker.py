"""The service's one batching worker: micro-batches sized by time, least work first, large requests in slices.

A request (one query, n items) becomes a job. With `PrefixScorer` it is tokenized once, in a thread,
when it arrives (`encode_groups`); its micro-batches are then scored from those tokens
(`score_encoded`), so no tokenizer runs between forwards. Each item costs its tokens, and the job
its query's tokens once per micro-batch it is in (other scorers: `item_costs`, no query cost).

The worker repeats: move queued jobs to its active list (when idle, waiting up to `max_wait_ms` for
more), take one micro-batch (`plan_batch`) and score it in one call in a thread. A micro-batch holds
whole jobs, least work left first, within a token budget (`BatchBudget`: the tokens the model scores
in about `batch_ms`, from its own measured speed, at most `max_batch_tokens`) and `max_batch_items`;
a job that does not fit whole gets a slice of its own, never shared with smaller jobs, unless it is
at most `whole_tokens` (a typical request: it then goes whole, alone, so its query is computed once). A request that
arrives meanwhile thus waits for the micro-batch in flight only (about `batch_ms`) and goes first in
the next, and a large request is scored over several micro-batches. A job passed over for
`AGING` micro-batch times goes first once, so a stream of small requests cannot starve a large one.
A job whose request has timed out (504) or gone is dropped before its next slice. A micro-batch that
fails is retried piece by piece, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from ..prompts import PromptConfig, item_segment
from ..records import Record
from .configs import ServeSettings
from .schema import ServingConfig

log = logging.getLogger(__name__)
AGING = 20  # micro-batch times (batch_ms) a job may be passed over before it goes first
FLOOR_TOKENS = 256  # the smallest token budget, however slow the model measures: smaller forwards waste work


class Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one process)."""

    def __init__(self, queue_depth):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("taosr_requests", "Relevance requests by HTTP status.", ["status"], registry=r)
        self.latency = Histogram("taosr_request_latency_seconds", "Relevance request latency.", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch_items = Histogram("taosr_batch_items", "Pairs per micro-batch.", registry=r,
                                     buckets=(1, 2, 5, 10, 20, 50, 100, 200, 256, 512, 1024))
        self.batch_requests = Histogram("taosr_batch_requests", "Requests per micro-batch.", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_tokens = Histogram("taosr_batch_tokens", "Tokens per micro-batch (items, and each query once).",
                                      registry=r, buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384))
        self.batch_seconds = Histogram("taosr_batch_seconds", "Seconds scoring one micro-batch (the model's time).",
                                       registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.queue_seconds = Histogram("taosr_queue_seconds", "Seconds from a request's arrival at the worker to the "
                                       "start of its first micro-batch.", registry=r,
                                       buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.budget = Gauge("taosr_batch_token_budget", "Token budget of the next micro-batch.", registry=r)
        self.pairs = Counter("taosr_pairs_scored", "Pairs scored.", registry=r)
        self.queue_depth = Gauge("taosr_queue_depth", "Requests waiting for the worker.", registry=r)
        self.queue_depth.set_function(queue_depth)
        ProcessCollector(registry=r)  # process_cpu_seconds_total etc. (Linux)


def item_costs(records: list[Record], cfg: PromptConfig, tokenizer=None) -> list[int]:
    """Each item's tokens within the prompt's item budget (without a tokenizer: its UTF-8 bytes, an upper bound)."""
    texts = [item_segment(r, cfg) for r in records]
    sizes = ([len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if tokenizer is not None
             else [len(t.encode("utf-8", "replace")) for t in texts])
    return [max(1, min(n, cfg.max_item_tokens)) for n in sizes]


@dataclass
class Job:
    """One request: its items, their costs, and (with an encoding scorer) its tokens."""

    records: list[Record]
    future: asyncio.Future | None
    costs: list[int]  # tokens of each item
    query_cost: int = 0  # tokens the query adds to every micro-batch the job is in
    query_ids: list[int] | None = None  # the query's tokens (query + the items' common start), if encoded
    item_ids: list[list[int]] | None = None  # each item's own tokens, if encoded
    arrived: float = 0.0  # time.perf_counter() when queued
    served: float = 0.0  # when it last got a micro-batch (or arrived)
    next: int = 0  # items before it are scored or being scored
    scored: int = 0
    probs: np.ndarray = field(init=False)

    def __post_init__(self):
        self.probs = np.zeros((len(self.records), 4))
        self.served = self.served or self.arrived

    @property
    def work_left(self) -> int:
        return self.query_cost + sum(self.costs[self.next:])


@dataclass
class Piece:
    """Items start:end of one job, scored in one micro-batch."""

    job: Job
    start: int
    end: int

    @property
    def records(self) -> list[Record]:
        return self.job.records[self.start:self.end]

    @property
    def tokens(self) -> int:
        return self.job.query_cost + sum(self.job.costs[self.start:self.end])


def plan_batch(jobs: list[Job], tokens: int, items: int, now: float, overdue_s: float,
               whole: int = 0) -> list[Piece]:
    """The next micro-batch of at most `tokens` tokens and `items` items; advances each job's `next`.

    Jobs go least work left first, ties by arrival; jobs not served for `overdue_s` go before all others, the
    longest unserved first;
    whole jobs while they fit; a job that does not fit whole is sliced, but only into an empty
    micro-batch (its slice alone, at least one item), so a small job never waits for a large one's slice.
    A job of at most `whole` tokens is never sliced: it goes whole into an empty micro-batch even over
    `tokens` (slicing it would recompute its query's tokens in every slice, the work prefix sharing saves).
    """
    def key(j: Job):
        overdue = now - j.served >= overdue_s
        return (0, j.served, 0) if overdue else (1, j.work_left, j.arrived)

    order = sorted(jobs, key=key)
    pieces: list[Piece] = []
    for job in order:
        left = len(job.records) - job.next
        if left <= 0:
            continue
        if left <= items and (job.work_left <= tokens or (not pieces and job.work_left <= whole)):
            end = len(job.records)
        elif pieces:
            break
        else:  # a slice of this job alone: as many items as fit, at least one
            end, used = job.next + 1, job.query_cost + job.costs[job.next]
            while end < len(job.records) and end - job.next < items and used + job.costs[end] <= tokens:
                used, end = used + job.costs[end], end + 1
        piece = Piece(job, job.next, end)
        pieces.append(piece)
        tokens, items, job.next, job.served = tokens - piece.tokens, items - (end - piece.start), end, now
        if end < len(job.records) or tokens <= 0 or items <= 0:
            break
    return pieces


class BatchBudget:
    """Tokens per micro-batch so that one takes about `target_s`: the tokens per second measured so far (a moving
    average over micro-batches that filled at least half the budget), within [FLOOR_TOKENS, cap]."""

    def __init__(self, target_s: float, cap: int, start: int = 1024):
        self.target_s, self.cap, self.start = target_s, cap, start
        self.rate: float | None = None  # tokens per second

    def tokens(self) -> int:
        guess = self.start if self.rate is None else self.rate * self.target_s
        return int(min(max(guess, FLOOR_TOKENS), self.cap))

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens * 2 < self.tokens() or seconds <= 0:  # a small batch is mostly fixed costs
            return
        rate = tokens / seconds
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate


class RelevanceService:
    """The model, the request queue and the one worker task that micro-batches it."""

    def __init__(self, scorer, serving: ServingConfig, settings: ServeSettings):
        self.serving, self.settings = serving, settings
        self.scorer = scorer  # score_groups([[records of one query], ...]) -> [(n_i, 4), ...]; PrefixScorer also
        self.encodes = hasattr(scorer, "encode_groups") and hasattr(scorer, "score_encoded")  # scores from tokens
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        self.metrics = Metrics(lambda: self.queue.qsize() if self.queue else 0)
        self.budget = BatchBudget(settings.batch_ms / 1000, settings.max_batch_tokens)
        self._arrived: asyncio.Event | None = None
        self._active: list[Job] = []  # taken from the queue, items left to slice
        self._inflight: list[Piece] = []  # the micro-batch being scored
        # Every forward runs on this one thread: torch's OpenMP threads form one team per calling thread, and
        # forwards from rotating threads (asyncio.to_thread's pool) left about half the cores idle.
        self._model_thread: ThreadPoolExecutor | None = None

    @property
    def ready(self) -> bool:
        return self.worker is not None and not self.worker.done()

    async def start(self) -> None:
        self.queue, self._arrived = asyncio.Queue(self.settings.max_queue), asyncio.Event()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="taosr-model")
        await self.on_model_thread(self.scorer.score_items, [Record(query="warm up", title="warm up")])
        self.worker = asyncio.create_task(self._run(), name="taosr-batcher")

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        pending = [p.job for p in self._inflight] + self._active
        while self.queue and not self.queue.empty():
            pending.append(self.queue.get_nowait())
        _fail(pending, RuntimeError("server shutting down"))
        if self._model_thread:
            self._model_thread.shutdown(wait=False, cancel_futures=True)

    async def on_model_thread(self, fn, *args):
        """`fn(*args)` on the service's one model thread."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, fn, *args)

    def make_job(self, records: list[Record], future: asyncio.Future | None = None) -> Job:
        """A job for `records`: tokenized once where the scorer scores from tokens (runs in a thread)."""
        now = time.perf_counter()
        if not self.encodes:
            costs = item_costs(records, self.serving.prompt, getattr(self.scorer, "tok", None))
            return Job(records, future, costs, arrived=now)
        (q_ids,), (item_ids,) = self.scorer.encode_groups([records])
        return Job(records, future, [len(x) for x in item_ids], len(q_ids), q_ids, item_ids, arrived=now)

    async def submit(self, records: list[Record]) -> asyncio.Future:
        """Queue one request's records; raises asyncio.QueueFull when `max_queue` requests wait."""
        if self.queue.full():  # before the tokenizer's work
            raise asyncio.QueueFull
        job = await asyncio.to_thread(self.make_job, records, asyncio.get_running_loop().create_future())
        job.arrived = job.served = time.perf_counter()
        self.queue.put_nowait(job)
        self._arrived.set()
        return job.future

    async def _gather(self) -> None:
        """Move queued jobs to the active list; with none active wait for one, then up to `max_wait_ms` for more
        (less once a micro-batch's worth waits)."""
        carried = bool(self._active)
        if not carried:
            self._active.append(await self.queue.get())
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while len(self._active) < self.settings.max_queue:
            if not self.queue.empty():
                self._active.append(self.queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            items = sum(len(j.records) - j.next for j in self._active)
            if (carried or left <= 0 or items >= self.settings.max_batch_items
                    or sum(j.work_left for j in self._active) >= self.budget.tokens()):
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep serving; the batch's unanswered requests get the error
                log.exception("batching worker step failed")
                _fail([p.job for p in self._inflight], e)
            self._inflight = []

    async def _step(self) -> None:
        """Gather requests, plan one micro-batch and score it in one call (`score_jobs` packs its queries)."""
        await self._gather()
        self._active = [j for j in self._active if not j.future.done()]  # done = timed out / gone: abandoned
        now, budget = time.perf_counter(), self.budget.tokens()
        self._inflight = pieces = plan_batch(self._active, budget, self.settings.max_batch_items, now,
                                             AGING * self.settings.batch_ms / 1000,
                                             min(self.settings.whole_tokens, self.settings.max_batch_tokens))
        self._active = [j for j in self._active if j.next < len(j.records)]
        if not pieces:
            return
        tokens = sum(p.tokens for p in pieces)
        m = self.metrics
        m.budget.set(budget)
        m.batch_requests.observe(len(pieces))
        m.batch_items.observe(sum(p.end - p.start for p in pieces))
        m.batch_tokens.observe(tokens)
        for p in pieces:
            if p.start == 0:
                m.queue_seconds.observe(now - p.job.arrived)
        t0 = time.perf_counter()
        failed = await self._resolve(pieces)
        seconds = time.perf_counter() - t0
        m.batch_seconds.observe(seconds)
        if not failed:
            self.budget.observe(tokens, seconds)

    async def _resolve(self, pieces: list[Piece]) -> bool:
        """Score `pieces` in a thread; on failure retry one by one so only the culprit fails. True if any failed."""
        try:
            results = await self.on_model_thread(self.score_jobs, pieces)
        except Exception as e:
            results = [e]
            if len(pieces) > 1:
                log.warning("a group of %d requests failed (%s); retrying them one by one", len(pieces), e)
                results = []
                for piece in pieces:
                    if piece.job.future.done():  # timed out meanwhile: its work is abandoned
                        results.append(None)
                        continue
                    try:
                        results.append((await self.on_model_thread(self.score_jobs, [piece]))[0])
                    except Exception as e1:
                        results.append(e1)
        for piece, res in zip(pieces, results):
            job = piece.job
            if job.future.done():
                continue
            if isinstance(res, Exception):
                job.future.set_exception(res)
                continue
            job.probs[piece.start:piece.end] = res
            job.scored += piece.end - piece.start
            if job.scored == len(job.records):
                job.future.set_result(job.probs)
                self.metrics.pairs.inc(len(job.records))
        return any(isinstance(res, Exception) for res in results)

    def score_jobs(self, pieces: list[Piece]) -> list[np.ndarray]:
        """(n_i, 4) probabilities per piece: each piece (one query) is a group of the scorer, packed together."""
        if self.encodes:
            return self.scorer.score_encoded([p.job.query_ids for p in pieces],
                                             [p.job.item_ids[p.start:p.end] for p in pieces])
        return self.scorer.score_groups([p.records for p in pieces])


def _fail(jobs: list[Job], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
