"""`taosr serve`: the relevance judge over HTTP (FastAPI), with micro-batching and Prometheus metrics.

    POST /v1/relevance  {"query": "...", "items": [{"id": "a", "title": "...", ...}, ...]}
      -> {"results": [{"id", "probs": {"1": P(1), .., "4": P(4)}, "level", "tier"}], "beta", "model"}
    GET  /healthz       the process answers
    GET  /readyz        the model is loaded and the batching worker runs (503 otherwise)
    GET  /metrics       Prometheus text: requests by status, latency, batch sizes, queue depth
    GET  /openapi.json  the schema (FastAPI's)

Probabilities are the answer-first ones (softmax over the four label tokens after `<answer>`,
computed with `PrefixScorer`: identical to the offline scorer); level = CumPT with the beta of
`<model_dir>/taosr_serving.json` (0.5 without it), tier = Good / Mid / Bad.

Request flow: a request is validated (422 for wrong or missing fields and invalid JSON, 413 for too
many items, an over-long text or an over-large body, each message naming the field) and put on a
bounded `asyncio.Queue` (full -> 503 with Retry-After). One worker task drains the queue: it takes
requests until `max_batch_items` pairs are gathered or `max_wait_ms` has passed since the first,
runs the torch work in a thread (`asyncio.to_thread`, so the event loop keeps accepting requests),
scores the whole micro-batch in one call (`PrefixScorer.score_groups` packs its requests into shared
forwards over the instructions' cached keys), handing each request exactly its own rows. A
micro-batch that fails is retried request by request, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .calibrate import ServingConfig, check_label_ids, load_serving_config
from .cumpt import cumpt_levels, tiers_of
from .prefix import PrefixScorer
from .records import Record
from .scale import resolve_engine
from .serve_api import (ItemIn, ItemResult, RelevanceRequest, RelevanceResponse, ServeSettings,  # noqa: F401
                        StrictJSONRoute, too_long, validation_body)

log = logging.getLogger(__name__)
RELEVANCE_PATH = "/v1/relevance"


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


@dataclass
class _Job:
    records: list[Record]
    future: asyncio.Future


class RelevanceService:
    """The model, the request queue and the one worker task that micro-batches it."""

    def __init__(self, model, tokenizer, serving: ServingConfig, settings: ServeSettings, scorer=None):
        self.serving, self.settings = serving, settings
        if scorer is None:
            check_label_ids(serving, tokenizer)
            scorer = PrefixScorer(model, tokenizer, serving.prompt, settings.batch_size)
        self.scorer = scorer  # anything with score_groups([[records of one query], ...]) -> [(n_i, 4), ...]
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.metrics = Metrics(lambda: self.queue.qsize() if self.queue else 0)
        self._arrived: asyncio.Event | None = None
        self._held: _Job | None = None  # a job that did not fit the last batch: first in the next one
        self._inflight: list[_Job] = []  # the micro-batch being scored

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
        pending = self._inflight + ([self._held] if self._held else [])
        while self.queue and not self.queue.empty():
            pending.append(self.queue.get_nowait())
        _fail(pending, RuntimeError("server shutting down"))

    def submit(self, records: list[Record]) -> asyncio.Future:
        """Queue one request's records; raises asyncio.QueueFull when `max_queue` requests wait."""
        job = _Job(records, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        self._arrived.set()
        return job.future

    async def _collect(self) -> list[_Job]:
        """Up to `max_batch_items` pairs (at least one request), waiting at most `max_wait_ms`."""
        first = self._held or await self.queue.get()
        self._held, jobs, n = None, [first], len(first.records)
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        while n < self.settings.max_batch_items:
            if self.queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
                continue
            job = self.queue.get_nowait()
            if n + len(job.records) > self.settings.max_batch_items:
                self._held = job
                break
            jobs.append(job)
            n += len(job.records)
        return jobs

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep serving; the batch's unanswered requests get the error
                log.exception("batching worker step failed")
                _fail(self._inflight, e)
            self._inflight = []

    async def _step(self) -> None:
        """Gather one micro-batch and score it in one call (`score_jobs` packs its queries together)."""
        self._inflight = jobs = [j for j in await self._collect() if not j.future.done()]  # done = timed out / gone
        if not jobs:
            return
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.batch_items.observe(sum(len(j.records) for j in jobs))
        await self._resolve(jobs)

    async def _resolve(self, jobs: list[_Job]) -> None:
        """Score `jobs` in a thread; on failure retry one by one so only the culprit fails."""
        try:
            results = await asyncio.to_thread(self.score_jobs, jobs)
        except Exception as e:
            results = [e]
            if len(jobs) > 1:
                log.warning("a group of %d requests failed (%s); retrying them one by one", len(jobs), e)
                results = []
                for job in jobs:
                    if job.future.done():  # timed out meanwhile: its work is abandoned
                        results.append(None)
                        continue
                    try:
                        results.append((await asyncio.to_thread(self.score_jobs, [job]))[0])
                    except Exception as e1:
                        results.append(e1)
        for job, res in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(res, Exception):
                job.future.set_exception(res)
            else:
                job.future.set_result(res)
                self.metrics.pairs.inc(len(job.records))

    def score_jobs(self, jobs: list[_Job]) -> list[np.ndarray]:
        """(n_i, 4) probabilities per job: each job (one query) is a group of `score_groups`, packed together."""
        return self.scorer.score_groups([job.records for job in jobs])


def _fail(jobs: list[_Job], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


def create_app(model: str | Path | tuple, settings: ServeSettings | None = None,
               serving: ServingConfig | None = None) -> FastAPI:
    """The FastAPI app for a model folder, or for an in-memory `(model, tokenizer)` pair.

    `serving` defaults to the folder's `taosr_serving.json` (beta 0.5 without it).
    """
    settings = settings or ServeSettings()
    scorer = None
    if isinstance(model, tuple):
        (net, tok), name = model, settings.model_name or "in-memory"
    else:
        serving = serving or load_serving_config(model)
        name = settings.model_name or Path(model).resolve().name
        if resolve_engine(settings.engine) == "vllm":
            from .vllm_engine import VLLMScorer

            scorer, net, tok = VLLMScorer(model, serving), None, None
        else:
            from .modeling import load_model

            net, tok = load_model(model, settings.dtype, settings.device)
    serving = serving or ServingConfig()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    service = RelevanceService(net, tok, serving, settings, scorer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="taosr relevance judge", version="1", lifespan=lifespan,
                  description="TaoSR1-style answer-first relevance scores with CumPT levels.")
    app.router.route_class = StrictJSONRoute  # strict UTF-8 JSON bodies (FastAPI's custom route class)
    app.state.service = service
    metrics = service.metrics

    @app.middleware("http")
    async def observe(request: Request, call_next):
        if request.url.path != RELEVANCE_PATH:
            return await call_next(request)
        t0 = time.perf_counter()
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > settings.max_body_bytes:
            response = JSONResponse({"detail": f"body: {size} bytes, over the limit of {settings.max_body_bytes} "
                                     "(max_body_bytes)"}, status_code=413)
        else:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error")
                response = JSONResponse({"detail": "internal error"}, status_code=500)
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413 and exc.detail == "Content Too Large":  # the route's body limit, read as it streams
            exc = HTTPException(413, f"body: over the limit of {settings.max_body_bytes} bytes (max_body_bytes)")
        return await http_exception_handler(request, exc)

    @app.post(RELEVANCE_PATH, response_model=RelevanceResponse, max_body_size=settings.max_body_bytes,
              responses={400: {"description": "The body could not be read"},
                         413: {"description": "Body too large, too many items or text too long"},
                         503: {"description": "Queue full; retry after Retry-After seconds"},
                         504: {"description": "No result within request_timeout_s; the request's work is abandoned"}})
    async def relevance(body: RelevanceRequest):
        """Judge every item against the query: P(level 1..4), CumPT level and tier."""
        if len(body.items) > settings.max_items:
            raise HTTPException(413, f"items: {len(body.items)} items, over the limit of {settings.max_items} (max_items)")
        if message := too_long(body, settings.max_text_chars):
            raise HTTPException(413, message)
        ids = [it.id if it.id is not None else str(i) for i, it in enumerate(body.items)]
        try:
            records = [Record(id=ids[i], query=body.query, title=it.title, category=it.category, brand=it.brand,
                              attributes=it.attributes, price=it.price, description=it.description)
                       for i, it in enumerate(body.items)]
        except ValidationError as e:  # what the request model lets through but a record refuses
            return JSONResponse(validation_body(e.errors()), status_code=422)
        try:
            future = service.submit(records)
        except asyncio.QueueFull:
            return JSONResponse({"detail": f"server busy: {settings.max_queue} requests queued (max_queue); retry later"},
                                status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
        try:
            probs = await asyncio.wait_for(future, settings.request_timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"no result within {settings.request_timeout_s} s (request_timeout_s)") from None
        except Exception as e:
            log.error("scoring failed: %s", e)
            raise HTTPException(500, f"scoring failed: {type(e).__name__}") from None
        levels = cumpt_levels(probs, serving.beta)
        tiers = tiers_of(levels)
        results = [ItemResult(id=ids[i], probs={str(k + 1): float(probs[i, k]) for k in range(4)},
                              level=int(levels[i]), tier=str(tiers[i])) for i in range(len(records))]
        return RelevanceResponse(results=results, beta=serving.beta, model=name)

    @app.get("/healthz")
    async def healthz():
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Ready when the model is loaded and the batching worker runs."""
        body = {"ready": service.ready, "model": name, "beta": serving.beta}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics")
    async def prometheus():
        """Prometheus exposition of this app's registry."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def run(model_dir: str | Path, settings: ServeSettings | None = None) -> None:
    """Serve `model_dir` with uvicorn (one process; bound to 127.0.0.1 unless settings.host says otherwise)."""
    import uvicorn

    settings = settings or ServeSettings()
    uvicorn.run(create_app(model_dir, settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, workers=1)
