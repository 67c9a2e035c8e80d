"""`taosr data`: inspect, validate and split labelled files (any layout `taosr.loaders` reads).

Also the input handling every command shares: `load_input` loads, prints how many rows were
rejected and where they went, and refuses a file with no usable row; `input_errors` turns a
`DataError` (an unusable file, or a refused run) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

data_app = typer.Typer(no_args_is_help=True, help="Inspect and validate datasets.")
console = Console(width=None if os.isatty(1) else 140)
INPUT_ERROR = 2  # exit status of a command refused for its input


def input_errors(command):
    """Decorate a command: a `DataError` prints `error: <message>` (one line, no traceback) and exits 2."""
    from .loaders import DataError

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DataError as e:
            typer.echo(f"error: {' '.join(str(e).split())}", err=True)
            raise typer.Exit(INPUT_ERROR) from None

    return run


def load_input(paths: Path | list[Path], rejects: Path, require_label: bool = False, read_labels: bool = True):
    """Records of `paths`; prints `<rows> rows: <n> loaded, <k> rejected -> <rejects>`; no record -> DataError."""
    from .loaders import DataError, load_records

    paths = [paths] if isinstance(paths, Path) else list(paths)
    res = load_records(paths, require_label=require_label, rejects_path=rejects, read_labels=read_labels)
    s, names = res.summary(), ", ".join(map(str, paths))
    typer.echo(f"{names}: {s['rows']} rows, {s['records']} loaded, {s['rejects']} rejected -> {rejects}", err=True)
    if not res.records:
        raise DataError(f"{names}: no usable row ({s['rejects']} of {s['rows']} rejected; reasons in {rejects})")
    return res.records


@data_app.command("inspect")
@input_errors
def data_inspect(
    files: list[Path] = typer.Argument(..., help="JSONL / CSV / Parquet / ESCI / WANDS files or folders."),
    rejects: Path = typer.Option(Path("rejects.jsonl"), help="Where rejected rows are written, with reasons."),
):
    """Load and validate FILES; print label and query-type counts and where rejected rows went."""
    from .data_summary import format_summary, inspect_files

    summary = inspect_files(files, rejects)
    console.print(format_summary(summary))
    for f, msg in summary.get("errors", {}).items():
        typer.echo(f"error: {f}: {' '.join(msg.split())}", err=True)
    typer.echo(f"{summary['rows']} rows, {summary['records']} loaded, {summary['rejects']} rejected -> {rejects}",
               err=True)
    if not summary.get("records"):
        if not summary.get("errors"):
            typer.echo(f"error: no usable row ({summary['rejects']} of {summary['rows']} rejected; reasons in "
                       f"{rejects})", err=True)
        raise typer.Exit(INPUT_ERROR)


@data_app.command("split")
@input_errors
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
    typer.echo(f"{len(res.records) + len(res.rejects)} rows, {len(res.records)} loaded, {len(res.rejects)} rejected "
               f"-> {rejects}", err=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    console.print_json(data=stats)
