"""The `taosr` command line (typer): one command per stage; `taosr demo` runs them all.

The commands live with their stage: `cli.data` (synth, data), `cli.teacher` (cot, chat-serve), `cli.train`
(sft, sample, dpo, grpo), `cli.evaluate` (eval, baseline, report), `cli.deploy` (calibrate, score, serve).
Their settings are generated from the stage configs (`cli.options`); modules load lazily inside each
command, so `taosr --help` starts fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from . import bench, data, deploy, evaluate, teacher, train  # noqa: E402  (after the environment above)
from .inputs import console, guard_commands  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="taosr: train, evaluate and serve TaoSR1-style thinking relevance judges.")
for stage in (data, teacher, train, evaluate, deploy, bench):
    stage.register(app)


def show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"taosr {__version__}")
        raise typer.Exit()


@app.callback()
def options(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                         help="Print the taosr version and exit.")):
    """taosr: train, evaluate and serve TaoSR1-style thinking relevance judges."""


@app.command()
def demo(
    name: str = typer.Option("demo", help="Run name (folder under runs/)."),
    preset: str = typer.Option("default", help="Budgets: a preset (taosr/configs/demo/; default: the full demo, about "
                               "20 min on 2 cores; tiny: a smoke run of about 80 s on 2 cores) or a YAML file of "
                               "DemoConfig."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file whose settings override the preset's "
                                          "(nested mappings merged key by key)."),
    fresh: bool = typer.Option(False, help="Delete the run folder first instead of resuming it."),
):
    """Generate the benchmark, run every stage, print the TaoSR1-shaped table."""
    from ..run.presets import load_preset
    from ..run.stages import run_demo
    from .options import read_config

    overrides = read_config(config)
    load_preset(preset, name, overrides, source=config)  # a refused setting stops here, naming its file
    run_demo(name=name, preset=preset, fresh=fresh, console=console, overrides=overrides)


guard_commands(app)  # every command: input and environment failures are one `error:` line, exit status 2


def main() -> None:
    from ..progress import quiet_libraries

    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    app()
