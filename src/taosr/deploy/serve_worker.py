"""The service's one batching worker: requests are scored in slices, small work first, so large requests
never hold small ones up for long.

A request (one query, n items) becomes a job; each item has a cost, its tokens (`item_costs`: the
item segment's tokens, at most the prompt's `max_item_tokens`, counted in a thread). The
worker repeats: move queued jobs to its active list (waiting `max_wait_ms` for more when it has
room), then build one micro-batch of at most `max_batch_items` items and `max_batch_tokens` cost:
whole jobs, least work left first, or else the next slice of the job with the least work left,
alone; and score it in one `score_groups` call in a thread. A large request is thus scored over
several micro-batches, and a small one that arrives meanwhile waits for the slice in flight only.
A job whose request has timed out (504) or gone is dropped before its next slice, so its remaining
work is abandoned. A micro-batch that fails is retried piece by piece, so one bad request never
fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..prompts import PromptConfig, item_segment
from ..records import Record
from .configs import ServeSettings
from .schema import ServingConfig

log = logging.getLogger(__name__)


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
        self.pairs = Counter("taosr_pairs_scored", "Pairs scored.", registry=r)
        self.queue_depth = Gauge("taosr_queue_depth", "Requests waiting for the worker.", registry=r)
        self.queue_depth.set_function(queue_depth)


def item_costs(records: list[Record], cfg: PromptConfig, tokenizer=None) -> list[int]:
    """Each item's tokens within the prompt's item budget (without a tokenizer: its UTF-8 bytes, an upper bound)."""
    texts = [item_segment(r, cfg) for r in records]
    sizes = ([len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if tokenizer is not None
             else [len(t.encode("utf-8", "replace")) for t in texts])
    return [max(1, min(n, cfg.max_item_tokens)) for n in sizes]


@dataclass
class _Job:
    records: list[Record]
    future: asyncio.Future
    costs: list[int]
    probs: np.ndarray | None = None
    next: int = 0  # items before it are scored or being scored
    scored: int = 0

    @property
    def work_left(self) -> int:
        return sum(self.costs[self.next:])


@dataclass
class _Piece:
    """Consecutive items of one job, scored in one micro-batch."""

    job: _Job
    start: int
    records: list[Record]


class RelevanceService:
    """The model, the request queue and the one worker task that micro-batches it."""

    def __init__(self, scorer, serving: ServingConfig, settings: ServeSettings):
        self.serving, self.settings = serving, settings
        self.scorer = scorer  # anything with score_groups([[records of one query], ...]) -> [(n_i, 4), ...]
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.metrics = Metrics(lambda: self.queue.qsize() if self.queue else 0)
        self._arrived: asyncio.Event | None = None
        self._active: list[_Job] = []  # taken from the queue, items left to slice
        self._inflight: list[_Piece] = []  # the micro-batch being scored

    @property
    def ready(self) -> bool:
        return self.worker is not None and not self.worker.done()

    async def start(self) -> None:
        self.queue, self._arrived = asyncio.Queue(self.settings.max_queue), asyncio.Event()
        await asyncio.to_thread(self.scorer.score_items, [Record(query="warm up", title="warm up")])
        self.worker = asyncio.create_task(self._run(), name="taosr-batcher")

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        pending = [p.job for p in self._inflight] + self._active
        while self.queue and not self.queue.empty():
            pending.append(self.queue.get_nowait())
        _fail(pending, RuntimeError("server shutting down"))

    async def submit(self, records: list[Record]) -> asyncio.Future:
        """Queue one request's records; raises asyncio.QueueFull when `max_queue` requests wait."""
        if self.queue.full():  # before the tokenizer's work
            raise asyncio.QueueFull
        costs = await asyncio.to_thread(item_costs, records, self.serving.prompt, getattr(self.scorer, "tok", None))
        job = _Job(records, asyncio.get_running_loop().create_future(), costs, np.zeros((len(records), 4)))
        self.queue.put_nowait(job)
        self._arrived.set()
        return job.future

    async def _gather(self) -> None:
        """Move queued jobs to the active list; with none active wait for one, then up to `max_wait_ms` for more."""
        carried = bool(self._active)
        if not carried:
            self._active.append(await self.queue.get())
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while len(self._active) < self.settings.max_queue:
            if not self.queue.empty():
                self._active.append(self.queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            waiting = sum(len(j.records) - j.next for j in self._active)
            if carried or left <= 0 or waiting >= self.settings.max_batch_items:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break

    def _slice(self) -> list[_Piece]:
        """One micro-batch within both budgets: whole jobs, least work first, or one slice of a large job alone."""
        items, tokens, pieces = self.settings.max_batch_items, self.settings.max_batch_tokens, []
        for job in sorted(self._active, key=lambda j: j.work_left):
            if pieces and (job.work_left > tokens or len(job.records) - job.next > items):
                break  # a job that cannot finish here gets a micro-batch of its own, not one with small jobs
            start = end = job.next
            while end < len(job.records) and items > 0 and (job.costs[end] <= tokens or not pieces and end == start):
                tokens, items, end = tokens - job.costs[end], items - 1, end + 1
            if end > start:
                pieces.append(_Piece(job, start, job.records[start:end]))
                job.next = end
            if items <= 0 or tokens <= 0:
                break
        self._active = [j for j in self._active if j.next < len(j.records)]
        return pieces

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
        """Gather requests, slice one micro-batch and score it in one call (`score_jobs` packs its queries)."""
        await self._gather()
        self._active = [j for j in self._active if not j.future.done()]  # done = timed out / gone: abandoned
        self._inflight = pieces = self._slice()
        if not pieces:
            return
        self.metrics.batch_requests.observe(len(pieces))
        self.metrics.batch_items.observe(sum(len(p.records) for p in pieces))
        await self._resolve(pieces)

    async def _resolve(self, pieces: list[_Piece]) -> None:
        """Score `pieces` in a thread; on failure retry one by one so only the culprit fails."""
        try:
            results = await asyncio.to_thread(self.score_jobs, pieces)
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
                        results.append((await asyncio.to_thread(self.score_jobs, [piece]))[0])
                    except Exception as e1:
                        results.append(e1)
        for piece, res in zip(pieces, results):
            job = piece.job
            if job.future.done():
                continue
            if isinstance(res, Exception):
                job.future.set_exception(res)
                continue
            job.probs[piece.start:piece.start + len(piece.records)] = res
            job.scored += len(piece.records)
            if job.scored == len(job.records):
                job.future.set_result(job.probs)
                self.metrics.pairs.inc(len(job.records))

    def score_jobs(self, pieces: list[_Piece]) -> list[np.ndarray]:
        """(n_i, 4) probabilities per piece: each piece (one query) is a group of `score_groups`, packed together."""
        return self.scorer.score_groups([piece.records for piece in pieces])


def _fail(jobs: list[_Job], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
