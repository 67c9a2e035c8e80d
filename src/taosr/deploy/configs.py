"""The settings of `taosr calibrate | score | serve`, each field defined once with its help text.

`taosr_serving.json`, what calibration exports with a model, is `taosr.deploy.schema.ServingConfig`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..runtime import DeviceConfig, Engine
from ..settings import StrictConfig

ITEMS_PER_FORWARD = ("Items per forward pass where items are batched (no prefix sharing, or models the packed "
                     "layout does not cover); the packed layout fills forwards of up to 1024 tokens.")


class CalibrateConfig(StrictConfig):
    """What `taosr calibrate` tunes beta for, and how it scores the dev split."""

    objective: Literal["macro_f1", "accuracy"] = Field("macro_f1", description="What beta maximises on dev.")
    rule: Literal["auto", "cumpt", "argmax"] = Field(
        "auto", description="Level rule to serve: auto = CumPT at the best beta unless argmax scores at least as "
        "well on dev (no single threshold reproduces argmax).")
    batch_size: int = Field(32, ge=1, description=ITEMS_PER_FORWARD)


class ScoreConfig(StrictConfig):
    """How `taosr score` runs: engine, batching, resume, and the Ray actor pool (`--engine ray`)."""

    engine: Literal["auto", "transformers", "vllm", "ray"] = Field(
        "auto", description="auto (vLLM when it and a GPU are present, else transformers) | transformers | vllm "
        "(GPU; batching is vLLM's own, batch_size and prefix_sharing do not apply) | ray (a Ray Data actor pool).")
    batch_queries: int = Field(64, ge=1, description="Queries per part file (the unit of resume).")
    batch_size: int = Field(32, ge=1, description=ITEMS_PER_FORWARD)
    prefix_sharing: bool = Field(True, description="Share the instructions' and the query's KV cache between items.")
    fresh: bool = Field(False, description="Discard an interrupted run's parts instead of resuming.")
    actors: int = Field(2, ge=1, description="engine ray: actors (one model each).")
    ray_address: str | None = Field(None, description="engine ray: cluster address (default: RAY_ADDRESS or a "
                                    "local instance).")
    ray_gpus: float = Field(0.0, ge=0.0, description="engine ray without vLLM: GPUs per actor (0.5: two actors share "
                            "one; 0: CPU actors). vLLM actors take one GPU each.")


class ServeSettings(DeviceConfig):
    """Server and batching knobs (`taosr serve --help` shows these); `device` and `dtype` place the transformers
    engine."""

    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps the server local.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    max_items: int = Field(200, ge=1, description="Most items in one request (more -> 413).")
    max_text_chars: int = Field(2000, ge=1,
                                description="Longest query / item text field in characters (longer -> 413).")
    max_body_bytes: int = Field(4_000_000, ge=1, description="Largest request body in bytes, by Content-Length or "
                                "as read (chunked bodies too; larger -> 413).")
    max_batch_items: int = Field(256, ge=1, description="Most pairs the worker gathers into one micro-batch.")
    batch_ms: float = Field(50.0, gt=0, description="Model time per micro-batch the worker aims at: it fills each "
                            "with the tokens its measured speed scores in about this long (at most "
                            "max_batch_tokens), so a request that arrives waits about this long for the one in "
                            "flight; smaller requests go first, a larger one is scored in slices.")
    max_batch_tokens: int = Field(4096, ge=1, description="Most tokens (items, and each query once) in one "
                                  "micro-batch, whatever batch_ms allows.")
    whole_tokens: int = Field(1024, ge=0, description="A request of at most this many tokens (its items, and its "
                              "query once) is scored whole in one micro-batch even over batch_ms's budget: slicing "
                              "it would recompute the query's tokens in every slice. Larger requests are sliced.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long the worker waits for more requests after the first.")
    max_queue: int = Field(64, ge=1, description="Requests waiting for the worker; beyond it -> 503 + Retry-After.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503.")
    request_timeout_s: float = Field(60.0, gt=0, description="A request waiting longer for its scores gets 504.")
    batch_size: int = Field(32, ge=1, description="Items per forward in the batched layout (models not packed).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: torch's default).")
    model_name: str | None = Field(None, description="Name reported in responses (default: the model folder's name).")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="uvicorn log level.")
    engine: Engine = Field("auto", description="auto | transformers | vllm: vLLM (taosr.deploy.scorer) when it and a "
                        "GPU are present.")
