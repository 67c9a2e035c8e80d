"""`taosr bench method`: the method table over seeds, from a preset (taosr/configs/demo/*.yaml)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .inputs import console

bench_app = typer.Typer(no_args_is_help=True, help="Experiments over seeds: the method table with controls and CIs.")


@bench_app.command("method")
def method(
    preset: str = typer.Option("cpu-long", help="A preset of taosr/configs/demo/ (cpu-long, regime-noisy-15, "
                               "regime-noisy-30, smollm2, ...) or a YAML file of DemoConfig."),
    seeds: list[int] = typer.Option([0, 1, 2], "--seeds", help="Seeds (repeat the option: --seeds 0 --seeds 1)."),
    name: Optional[str] = typer.Option(None, help="Run folder under runs/ (default method-<preset>)."),
    out: Optional[Path] = typer.Option(None, help="Table JSON (default docs/results/<name>.json)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file whose settings override the preset's."),
    jobs: int = typer.Option(1, min=1, help="Seeds run as this many parallel processes."),
    deadline_s: float = typer.Option(float("inf"), help="Stop the seeds after this many seconds and write the table "
                                     "of what finished (a later run resumes)."),
    boot: int = typer.Option(1000, min=100, help="Bootstrap replicates."),
):
    """Run the preset's stages for every seed (resumable) and write the table: CIs, deltas, reverted stages."""
    from ..run.bench import run_method_bench
    from ..run.presets import load_preset
    from .options import read_config

    overrides = read_config(config)
    load_preset(preset, "check", overrides, config)  # refuse a bad preset or --config before anything runs
    run_method_bench(preset, list(seeds), name, out, overrides, deadline_s, jobs, boot, console)


@bench_app.command("seed", hidden=True)
def seed(preset: str = typer.Option(...), name: str = typer.Option(...), seed: int = typer.Option(...),
         first: int = typer.Option(...), overrides_json: str = typer.Option("{}")):
    """One seed of `bench method` (run in its own process)."""
    from ..run.bench import run_seed

    run_seed(preset, name, seed, first, json.loads(overrides_json), console)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
