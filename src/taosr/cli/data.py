"""`taosr synth` and `taosr data inspect | split`: the benchmark and the datasets every stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data.splits import SplitConfig
from ..data.synth import SynthConfig
from ..labels import LEVEL_NAMES
from .inputs import INPUT_ERROR, claim_out, console, overwrite_option
from .options import config_command

data_app = typer.Typer(no_args_is_help=True, help="Inspect, validate and split datasets.")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

    @config_command(app, "synth", SynthConfig)
    def synth(cfg: SynthConfig, out: Path = typer.Option(Path("data/synth"), "--out",
                                                         help="Output folder for train/dev/test.jsonl."),
              overwrite: bool = overwrite_option(),
              json_out: bool = typer.Option(False, "--json", help="Print the statistics as JSON (for machines).")):
        """Generate the synthetic benchmark (splits share no query)."""
        from ..data.splits import write_splits

        claim_out(out, "synth", {"synth": cfg.model_dump()}, overwrite)
        from ..data.synth import generate
        from ..io import write_json

        stats = write_splits(generate(cfg), out)
        write_json(out / "stats.json", stats)
        if json_out:
            console.print_json(data=stats)
        else:
            typer.echo(split_line(out, stats))


@data_app.command("inspect")
def data_inspect(
    files: list[Path] = typer.Argument(..., help="JSONL / CSV / Parquet / ESCI / WANDS files or folders."),
    rejects: Path = typer.Option(Path("rejects.jsonl"), help="Where rejected rows are written, with reasons."),
):
    """Load and validate FILES; print label and query-type counts and where rejected rows went."""
    from ..data.summary import format_summary, inspect_files

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


@config_command(data_app, "split", SplitConfig)
def data_split(
    cfg: SplitConfig,
    files: list[Path] = typer.Argument(..., help="Labelled files or a WANDS folder (any format `data inspect` reads)."),
    out: Path = typer.Option(..., "--out",
                             help="Output folder for train/dev/test.jsonl (what `taosr sft --data` reads)."),
    esci_products: Optional[Path] = typer.Option(None,
                                                 help="ESCI products parquet: FILES[0] is then the examples parquet."),
    esci_split: Optional[str] = typer.Option(None, help="Keep only this ESCI split (train / test)."),
    locale: Optional[str] = typer.Option(None, help="Keep only this ESCI product_locale (us / es / jp)."),
    overwrite: bool = overwrite_option(),
    json_out: bool = typer.Option(False, "--json", help="Print the split's statistics as JSON (for machines)."),
):
    """Validate labelled pairs and split them by query (no query in two splits) into train/dev/test.jsonl."""
    from ..data.loaders import load_records
    from ..data.sources import load_esci_official
    from ..data.splits import split_by_query, write_splits
    from ..io import write_json

    claim_out(out, "data split", {"split": cfg.model_dump(), "files": [str(f.resolve()) for f in files],
                                  "esci_products": esci_products, "esci_split": esci_split, "locale": locale},
              overwrite)
    rejects = out / "rejects.jsonl"
    if esci_products:
        res = load_esci_official(files[0], esci_products, split=esci_split, locale=locale, rejects_path=rejects)
    else:
        res = load_records(files, require_label=True, rejects_path=rejects)
    stats = write_splits(split_by_query(res.records, cfg.dev_frac, cfg.test_frac, cfg.seed), out)
    stats["rejects"] = {"count": len(res.rejects), "file": str(rejects)}
    typer.echo(f"{len(res.rejects) + len(res.records)} rows, {len(res.records)} loaded, {len(res.rejects)} rejected "
               f"-> {rejects}", err=True)
    write_json(out / "stats.json", stats)
    for line in missing_levels(stats):
        typer.echo(f"warning: {line}", err=True)
    if json_out:
        console.print_json(data=stats)
    else:
        typer.echo(split_line(out, stats))


def split_line(out: Path, stats: dict) -> str:
    """The readable summary of written splits: pairs, queries and levels per split."""
    return f"splits -> {out}: " + " | ".join(
        f"{name} {s['pairs']} pairs, {s['queries']} queries, levels {dict(sorted(s['labels'].items()))}"
        for name, s in stats.items() if name in ("train", "dev", "test"))


def missing_levels(stats: dict) -> list[str]:
    """A line per dev/test split lacking a level the data has: its macro-F1 would count that level as 0."""
    have = {str(lv) for s in stats.values() if isinstance(s, dict) for lv in s.get("labels", {})}
    lines = []
    for name in ("dev", "test"):
        split = stats.get(name)
        if isinstance(split, dict) and (lack := sorted(have - {str(lv) for lv in split.get("labels", {})})):
            named = ", ".join(f"{lv} {LEVEL_NAMES[int(lv)]}" for lv in lack)
            lines.append(f"{name} has no pair of level(s) {named} (the data has them): its macro-F1 over "
                         "four levels counts them as 0; `taosr eval` also reports macro-F1 over the levels present. "
                         "Add pairs of those levels, or change --seed / --dev-frac / --test-frac")
    return lines
