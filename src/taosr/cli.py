"""The `taosr` command line (typer). Each stage is one command; `taosr demo` runs them all."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="taosr: train, evaluate and serve TaoSR1-style thinking relevance judges.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")
app.add_typer(data_app, name="data")
console = Console(width=None if os.isatty(1) else 140)


@data_app.command("inspect")
def data_inspect(
    files: list[Path] = typer.Argument(..., help="JSONL / CSV / Parquet / ESCI / WANDS files or folders."),
    rejects: Path = typer.Option(Path("rejects.jsonl"), help="Where rejected rows are written, with reasons."),
):
    """Load and validate FILES; print label and query-type counts and where rejected rows went."""
    from .loaders import format_summary, inspect_files

    summary = inspect_files(files, rejects)
    console.print(format_summary(summary))
    for f, msg in summary.get("errors", {}).items():
        console.print(f"[red]error[/red] {msg}")
    if summary.get("errors") and not summary.get("records"):
        raise typer.Exit(2)


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synth"), help="Output folder for train/dev/test.jsonl."),
    n_queries: int = typer.Option(3000, help="Queries to generate."),
    items_per_query: int = typer.Option(4, help="Items per query."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Generate the synthetic benchmark (splits share no query)."""
    from .synth import SynthConfig, generate, write_splits

    stats = write_splits(generate(SynthConfig(n_queries=n_queries, items_per_query=items_per_query, seed=seed)), out)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    console.print_json(data=stats)


@app.command()
def sft(
    data: Path = typer.Option(..., help="Folder with train.jsonl (e.g. from `taosr synth`)."),
    out: Path = typer.Option(..., help="Output folder (model in OUT/model)."),
    order: str = typer.Option("answer_first", help="answer_only | think_first | answer_first."),
    model: Optional[str] = typer.Option(None, help="Local HF model dir or 'smollm2-135m'; default: a fresh small model."),
    max_steps: int = typer.Option(600, help="Optimiser steps."),
    batch_size: int = typer.Option(32, help="Sequences per step."),
    learning_rate: float = typer.Option(2e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed."),
):
    """Stage 1: SFT on teacher CoT in one output order."""
    from .modeling import ModelConfig
    from .pipeline import RunConfig, fresh_model, read_split
    from .sft import SFTStageConfig, run_sft
    from .teacher import RuleTeacher

    cfg = RunConfig(name=out.name, runs_dir=str(out.parent), model=ModelConfig(name_or_path=model, seed=seed),
                    sft=SFTStageConfig(order=order, max_steps=max_steps, batch_size=batch_size,
                                       learning_rate=learning_rate, seed=seed))
    train = read_split(data / "train.jsonl")
    m, tok = fresh_model(cfg, train)
    summary = run_sft(m, tok, train, cfg.sft, out, RuleTeacher(), cfg.prompt)
    console.print({k: v for k, v in summary.items() if k != "loss_curve"})


@app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., help="Model folder (e.g. runs/demo/sft_answer_first/model)."),
    data: Path = typer.Option(..., help="Labelled file to evaluate on (JSONL/CSV/Parquet)."),
    order: str = typer.Option("answer_first", help="How the model answers: answer_only | think_first | answer_first."),
    out: Optional[Path] = typer.Option(None, help="metrics.json path (default: next to the model)."),
    batch_size: int = typer.Option(64, help="Scoring / generation batch size."),
):
    """Macro-F1, per-class F1, accuracy, confusion matrix and per-query-type scores."""
    from .evaluate import evaluate, query_type_table, stage_table
    from .modeling import load_model
    from .pipeline import read_split, write_json
    from .prompts import PromptConfig

    m, tok = load_model(model)
    records = read_split(data)
    metrics, _ = evaluate(m, tok, records, order, PromptConfig(), batch_size=batch_size)
    write_json(out or model.parent / "metrics.json", metrics)
    console.print(stage_table([(f"{model} ({order})", metrics)], title=f"eval on {data}"))
    console.print(query_type_table([(str(model), metrics)]))


@app.command()
def demo(
    name: str = typer.Option("demo", help="Run name (folder under runs/)."),
    preset: str = typer.Option("default", help="default (the full demo, ~15 min here) | tiny (a 1-minute smoke run)."),
    fresh: bool = typer.Option(False, help="Delete the run folder first instead of resuming it."),
):
    """Generate the benchmark, run every stage, print the TaoSR1-shaped table."""
    from .demo import run_demo

    run_demo(name=name, preset=preset, fresh=fresh, console=console)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
