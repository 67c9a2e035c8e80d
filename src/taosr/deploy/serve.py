"""`taosr serve`: the relevance judge over HTTP (FastAPI), with micro-batching and Prometheus metrics.

    POST /v1/relevance  {"query": "...", "items": [{"id": "a", "title": "...", ...}, ...]}
      -> {"results": [{"id", "probs": {"1": P(1), .., "4": P(4)}, "level", "tier"}], "beta", "model"}
    GET  /healthz       the process answers
    GET  /readyz        the model is loaded and the batching worker runs (503 otherwise)
    GET  /metrics       Prometheus text: requests by status, latency, batch sizes, queue depth
    GET  /openapi.json  the schema (FastAPI's)
    GET  /docs          the schema as one self-contained HTML page (works offline; no Swagger UI from a CDN)

Probabilities are the answer-first ones (softmax over the four label tokens after `<answer>`,
computed with `PrefixScorer`: identical to the offline scorer); level = CumPT with the beta of
`<model_dir>/taosr_serving.json` (0.5 without it), tier = Good / Mid / Bad.

Request flow: a request is validated before any work (422 for wrong or missing fields, invalid
JSON or UTF-8, NaN, lone surrogates; 413 for too many items, an over-long text or a body over
`max_body_bytes`, chunked or not; each message names the field, and never echoes the input) and
put on a bounded `asyncio.Queue` (full -> 503 with Retry-After). Each text is cut to the prompt's
token budgets by the rule of `taosr.prompts`, once, when the request arrives. One worker task
(`taosr.deploy.serve_worker`) scores the requests in micro-batches sized to take about `batch_ms` of
model time (from its measured speed; at most `max_batch_tokens` tokens and `max_batch_items` pairs),
least work first, a large request in slices of its own, in one model thread (so the event
loop keeps accepting requests), each micro-batch in one call (`PrefixScorer.score_encoded` packs its
requests into shared forwards over the instructions' cached keys). A request past `request_timeout_s`
gets 504 and its remaining work is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..records import Record
from ..runtime import resolve_engine
from .configs import ServeSettings
from .cumpt import tiers_of
from .schema import ServingConfig, check_label_ids, load_serving_config
from .scorer import make_scorer
from .serve_api import (
    ItemResult,
    RelevanceRequest,
    RelevanceResponse,
    StrictJSONRoute,
    docs_page,
    too_long,
    validation_body,
)
from .serve_worker import RelevanceService

__all__ = ["RELEVANCE_PATH", "ServeSettings", "create_app", "run"]

log = logging.getLogger(__name__)
RELEVANCE_PATH = "/v1/relevance"


def create_app(model: str | Path | tuple, settings: ServeSettings | None = None,
               serving: ServingConfig | None = None) -> FastAPI:
    """The FastAPI app for a model folder, or for an in-memory `(model, tokenizer)` pair.

    `serving` defaults to the folder's `taosr_serving.json` (beta 0.5 without it).
    """
    settings = settings or ServeSettings()
    if isinstance(model, tuple):
        from ..infer.prefix import PrefixScorer

        (net, tok), name = model, settings.model_name or "in-memory"
        serving = serving or ServingConfig()
        check_label_ids(serving, tok)
        scorer = PrefixScorer(net, tok, serving.prompt, settings.batch_size)
    else:
        serving = serving or load_serving_config(model)
        name = settings.model_name or Path(model).resolve().name
        scorer = make_scorer(model, serving, resolve_engine(settings.engine), settings.device, settings.dtype,
                             settings.batch_size)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    service = RelevanceService(scorer, serving, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="taosr relevance judge", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
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
            raise HTTPException(413,
                                f"items: {len(body.items)} items, over the limit of {settings.max_items} (max_items)")
        if message := too_long(body, settings.max_text_chars):
            raise HTTPException(413, message)
        ids = [str(it.id) if it.id is not None else str(i) for i, it in enumerate(body.items)]
        try:
            records = [Record(id=ids[i], query=body.query, title=it.title, category=it.category, brand=it.brand,
                              attributes=it.attributes, price=it.price, description=it.description)
                       for i, it in enumerate(body.items)]
        except ValidationError as e:  # what the request model lets through but a record refuses
            return JSONResponse(validation_body(e.errors()), status_code=422)
        try:
            future = await service.submit(records)
        except asyncio.QueueFull:
            busy = f"server busy: {settings.max_queue} requests queued (max_queue); retry later"
            return JSONResponse({"detail": busy}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
        try:
            probs = await asyncio.wait_for(future, settings.request_timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"no result within {settings.request_timeout_s} s (request_timeout_s)") from None
        except Exception as e:
            log.error("scoring failed: %s", e)
            raise HTTPException(500, f"scoring failed: {type(e).__name__}") from None
        levels = serving.levels(probs)
        tiers = tiers_of(levels)
        results = [ItemResult(id=ids[i], probs={str(k + 1): float(probs[i, k]) for k in range(4)},
                              level=int(levels[i]), tier=str(tiers[i])) for i in range(len(records))]
        return RelevanceResponse(results=results, rule=serving.rule, beta=serving.beta, model=name)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        """The API as one self-contained page (FastAPI's Swagger UI loads from a CDN, blank offline)."""
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/healthz")
    async def healthz():
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Ready when the model is loaded and the batching worker runs."""
        body = {"ready": service.ready, "model": name, "rule": serving.rule, "beta": serving.beta}
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
