"""`taosr cot | chat-serve`: teacher reasoning for labelled pairs, and a local OpenAI-compatible teacher server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data.result import DataError
from ..teacher.cot import TeacherConfig
from .inputs import console, load_input, model_option
from .options import config_command


def register(app: typer.Typer) -> None:
    @config_command(app, "cot", TeacherConfig)
    def cot(
        cfg: TeacherConfig,
        data: list[Path] = typer.Argument(..., help="Labelled pairs (any format `taosr data inspect` reads)."),
        out: Path = typer.Option(Path("cot.jsonl"), "--out", help="Output JSONL; rerun to resume."),
        model: Optional[Path] = model_option("teacher=local: the teacher's model folder.", None),
        cache: Optional[Path] = typer.Option(None, help="teacher=openai: SQLite response cache (default "
                                             "OUT.cache.sqlite)."),
        limit: Optional[int] = typer.Option(None, help="Only the first N records."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (for machines)."),
    ):
        """Five-step teacher reasoning for every labelled pair (ok / inconsistent / failed, all counted, and
        which teacher wrote each). The default teacher, auto, works offline on any catalogue."""
        from ..io import check_writable
        from ..teacher.cot import cot_line, make_teacher, read_rows, run_cot

        if cfg.teacher == "local" and model is None:
            raise typer.BadParameter("--teacher local needs the teacher's model folder", param_hint="--model")
        check_writable(out)
        records = load_input(data, rejects=out.with_suffix(".rejects.jsonl"))[:limit]
        if cfg.teacher == "local":
            typer.echo(f"cot: the local teacher generates up to 256 tokens per pair, {cfg.max_attempts} attempt(s), in "
                       "batches of 8 (slow on a CPU); progress after each batch, rows written every 32 pairs", err=True)
        summary = run_cot(records, make_teacher(cfg, model, cache or out.with_suffix(".cache.sqlite")), out,
                          verbose=False)
        if json_out:
            console.print_json(data=summary)
        else:
            typer.echo(cot_line(summary))
        if summary["written"] + summary["resumed"] == 0:
            raise DataError(f"no pair to explain: {summary['unlabelled']} unlabelled, {summary['duplicate_id']} "
                            "repeated ids")
        failed = [r for r in read_rows(out) if r.get("status") == "failed"]
        if failed:
            instead = "" if cfg.teacher in ("auto", "fields") else " (offline reasoning for any pair: --teacher auto)"
            typer.echo(f"warning: {len(failed)} pairs got no reasoning; first reason: {failed[0].get('reason')}"
                       f"{instead}", err=True)
        if summary["written"] and summary["failed"] == summary["written"]:
            typer.echo(f"error: every pair failed ({summary['failed']}); reasons in {out}", err=True)
            raise typer.Exit(1)

    @app.command("chat-serve")
    def chat_serve(
        backend: str = typer.Option("rules", help="rules (the rule teacher) | transformers (a local model)."),
        model: Optional[Path] = model_option("backend=transformers: the model folder.", None),
        host: str = typer.Option("127.0.0.1", help="Bind address."),
        port: int = typer.Option(8001, help="Port."),
    ):
        """An OpenAI-compatible /v1/chat/completions server for a local model (a teacher for `taosr cot`)."""
        from ..errors import InputError
        from ..teacher.chat_server import RuleBackend, TransformersBackend, serve_chat

        if backend not in ("rules", "transformers"):
            raise InputError(f"--backend {backend!r}: expected rules or transformers")
        if backend == "transformers" and model is None:
            raise InputError("--backend transformers needs the model folder: pass --model")
        serve_chat(RuleBackend() if backend == "rules" else TransformersBackend(model), host=host, port=port)
