"""`taosr score | serve | cot | chat-serve`: the commands that score or explain pairs (registered by `taosr.cli`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from .cli_data import console, input_errors, load_input
from .loaders import DataError
from .scale import DEVICE_HELP, DTYPE_HELP

ITEMS_PER_FORWARD = ("Items per forward pass where items are batched (no prefix sharing, or models the packed "
                     "layout does not cover); the packed layout fills forwards of up to 1024 tokens.")


@input_errors
def score(
    model: Path = typer.Option(..., help="Model folder (calibrated with `taosr calibrate`, else beta = 0.5)."),
    input: Path = typer.Option(..., "--input", help="Pairs to score (JSONL/CSV/Parquet)."),
    output: Path = typer.Option(..., "--output", help="Output Parquet; rejects -> OUTPUT.rejects.jsonl."),
    batch_queries: int = typer.Option(64, help="Queries per part file (the unit of resume)."),
    batch_size: int = typer.Option(32, help=ITEMS_PER_FORWARD),
    prefix_sharing: bool = typer.Option(True, "--prefix-sharing/--no-prefix-sharing", help="Share the query's KV cache."),
    fresh: bool = typer.Option(False, help="Discard an interrupted run's parts instead of resuming."),
    engine: str = typer.Option("auto", help="auto | transformers | vllm (GPU; batching is vLLM's own, --batch-size and "
                               "--prefix-sharing do not apply) | ray (a Ray Data actor pool)."),
    actors: int = typer.Option(2, help="--engine ray: actors (one model each)."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: cluster address (default: RAY_ADDRESS or a local instance)."),
    ray_gpus: float = typer.Option(0.0, min=0.0, help="--engine ray without vLLM: GPUs per actor (0.5: two actors "
                                   "share one; 0: CPU actors). vLLM actors take one GPU each."),
    device: str = typer.Option("auto", help="--engine transformers: " + DEVICE_HELP),
    dtype: str = typer.Option("float32", help="--engine transformers or ray: " + DTYPE_HELP),
):
    """Batch-score a file: P(1..4), CumPT level and tier per row; streaming, resumable output."""
    from .batch_score import check_paths

    check_paths(input, output)
    if engine == "ray":
        from .ray_score import score_file_ray
        from .scale import resolve_engine

        info = score_file_ray(model, input, output, actors, batch_size, address=ray_address,
                              engine=resolve_engine("auto"), gpus_per_actor=ray_gpus, dtype=dtype)
    else:
        from .batch_score import score_file

        info = score_file(model, input, output, batch_queries, prefix_sharing, batch_size, fresh, engine, device, dtype)
    console.print_json(data=info)
    typer.echo(f"{input}: {info['rows'] + info['rejects']} rows, {info['rows']} scored, {info['rejects']} rejected -> "
               f"{info['rejects_path']}", err=True)


def serve(
    model: Path = typer.Option(..., help="Model folder."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    max_items: int = typer.Option(200, help="Most items in one request."),
    max_wait_ms: float = typer.Option(5.0, help="Longest a request waits for its micro-batch."),
    max_queue: int = typer.Option(64, help="Requests queued before the server answers 503."),
    engine: str = typer.Option("auto", help="auto (vLLM when it and a GPU are present) | transformers | vllm."),
    device: str = typer.Option("auto", help="--engine transformers: " + DEVICE_HELP),
    dtype: str = typer.Option("float32", help="--engine transformers: " + DTYPE_HELP),
):
    """Run the relevance service: POST /v1/relevance, /healthz, /readyz, /metrics, /docs."""
    from .serve import ServeSettings, run

    run(model, ServeSettings(host=host, port=port, max_items=max_items, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             engine=engine, device=device, dtype=dtype))


@input_errors
def cot(
    data: list[Path] = typer.Argument(..., help="Labelled pairs (any format `taosr data inspect` reads)."),
    out: Path = typer.Option(Path("cot.jsonl"), help="Output JSONL; rerun to resume."),
    teacher: str = typer.Option("rules", help="rules | openai | local."),
    base_url: str = typer.Option("http://127.0.0.1:8001", help="OpenAI-compatible server (teacher=openai)."),
    model: str = typer.Option("taosr-rules", help="Model name sent to the server."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key."),
    model_dir: Optional[Path] = typer.Option(None, help="Local HF model folder (teacher=local)."),
    concurrency: int = typer.Option(4, help="Requests in flight."),
    timeout_s: float = typer.Option(30.0, help="Deadline in seconds for each request's whole answer (then retried)."),
    max_retries: int = typer.Option(3, help="Retries on errors and timeouts (exponential backoff)."),
    max_attempts: int = typer.Option(2, help="Asks per pair until the reasoning concludes the gold label."),
    k: int = typer.Option(3, help="Rules retrieved per pair."),
    embeddings: bool = typer.Option(False, help="Fuse MiniLM embeddings into rule retrieval."),
    cache: Optional[Path] = typer.Option(None, help="SQLite response cache (default OUT.cache.sqlite)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N records."),
):
    """Teacher CoT for every labelled pair, from rules retrieved per pair (ok / inconsistent / failed, all counted)."""
    from .cot import run_cot
    from .retrieval import RuleRetriever

    records = load_input(data, rejects=out.with_suffix(".rejects.jsonl"))[:limit]
    retriever = RuleRetriever(use_embeddings=embeddings)
    if teacher == "openai":
        from .llm_teacher import OpenAITeacher

        t = OpenAITeacher(base_url, model, api_key=os.environ.get(api_key_env), concurrency=concurrency,
                          timeout_s=timeout_s, max_retries=max_retries, max_attempts=max_attempts, k=k,
                          retriever=retriever, cache_path=cache or out.with_suffix(".cache.sqlite"))
    elif teacher == "local":
        from .llm_teacher import LocalTeacher

        t = LocalTeacher(model_dir, retriever=retriever, k=k, max_attempts=max_attempts)
    elif teacher == "rules":
        from .teacher import RuleTeacher

        t = RuleTeacher()
    else:
        raise typer.BadParameter(f"unknown teacher {teacher!r} (rules | openai | local)")
    summary = run_cot(records, t, out)
    console.print_json(data=summary)
    if summary["written"] + summary["resumed"] == 0:
        raise DataError(f"no pair to explain: {summary['unlabelled']} unlabelled, {summary['duplicate_id']} repeated ids")
    if summary["written"] and summary["failed"] == summary["written"]:
        typer.echo(f"error: every pair failed ({summary['failed']}); reasons in {out}", err=True)
        raise typer.Exit(1)


def chat_serve(
    backend: str = typer.Option("rules", help="rules (the rule teacher) | transformers (a local model)."),
    model_dir: Optional[Path] = typer.Option(None, help="Model folder for the transformers backend."),
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8001, help="Port."),
):
    """An OpenAI-compatible /v1/chat/completions server for a local model (a teacher for `taosr cot`)."""
    from .chat_server import RuleBackend, TransformersBackend, serve_chat

    serve_chat(RuleBackend() if backend == "rules" else TransformersBackend(model_dir), host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command()(score)
    app.command()(serve)
    app.command()(cot)
    app.command("chat-serve")(chat_serve)
