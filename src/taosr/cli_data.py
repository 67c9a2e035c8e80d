"""`taosr data`: inspect, validate and split labelled files (any layout `taosr.loaders` reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

data_app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")
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


@data_app.command("split")
def data_split(
    files: list[Path] = typer.Argument(..., help="Labelled files or a WANDS folder (any format `data inspect` reads)."),
    out: Path = typer.Option(..., help="Output folder for train/dev/test.jsonl (what `taosr sft --data` reads)."),
    esci_products: Optional[Path] = typer.Option(None, help="ESCI products parquet: FILES[0] is then the examples parquet."),
    esci_split: Optional[str] = typer.Option(None, help="Keep only this ESCI split (train / test)."),
    locale: Optional[str] = typer.Option(None, help="Keep only this ESCI product_locale (us / es / jp)."),
    dev_frac: float = typer.Option(0.1, help="Share of query strings in dev."),
    test_frac: float = typer.Option(0.15, help="Share of query strings in test."),
    seed: int = typer.Option(0, help="Split seed."),
):
    """Validate labelled pairs and split them by query (no query in two splits) into train/dev/test.jsonl."""
    from .loaders import load_esci_official, load_records
    from .synth import split_by_query, write_splits

    out.mkdir(parents=True, exist_ok=True)
    rejects = out / "rejects.jsonl"
    if esci_products:
        res = load_esci_official(files[0], esci_products, split=esci_split, locale=locale, rejects_path=rejects)
    else:
        res = load_records(files, require_label=True, rejects_path=rejects)
    stats = write_splits(split_by_query(res.records, dev_frac, test_frac, seed), out)
    stats["rejects"] = {"count": len(res.rejects), "file": str(rejects)}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    console.print_json(data=stats)
