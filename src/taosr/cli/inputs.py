"""The input handling every command shares, and the console it prints to.

`load_input` loads, prints how many rows were rejected and where they went, and refuses a file with
no usable row; `input_errors` (applied to every command by `cli.main`) turns an `InputError` (an
unusable file, a refused setting or run, a model folder that cannot be loaded) or an operating-system
error (disk full, no permission, no such file) into one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import typer
from rich.console import Console

from ..data.result import DataError
from ..errors import InputError, os_error_line

console = Console(width=None if os.isatty(1) else 140)
INPUT_ERROR = 2  # exit status of a command refused for its input


def fail(message: str) -> typer.Exit:
    """Print `error: <message>` as one line on stderr; the exit (status 2) to raise."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(INPUT_ERROR)


def input_errors(command):
    """Decorate a command: an `InputError` or `OSError` prints one `error:` line (no traceback) and exits 2."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as e:
            raise fail(str(e)) from None
        except OSError as e:  # disk full, no permission, a path that is not there: the environment, not taosr
            raise fail(os_error_line(e)) from None

    return run


def guard_commands(app: typer.Typer) -> None:
    """Apply `input_errors` to every command of `app` and of its sub-command groups."""
    for info in app.registered_commands:
        info.callback = input_errors(info.callback)
    for group in app.registered_groups:
        guard_commands(group.typer_instance)


def load_input(paths: Path | list[Path], rejects: Path | None = None, require_label: bool = False,
               read_labels: bool = True):
    """Records of `paths`; prints `<rows> rows: <n> loaded, <k> rejected -> <rejects>`; no record -> DataError.

    Rejected rows go to `rejects` (default: `<first path>.rejects.jsonl`, next to the input).
    """
    from ..data.loaders import load_records

    paths = [paths] if isinstance(paths, Path) else list(paths)
    rejects = rejects or paths[0].with_suffix(".rejects.jsonl")
    res = load_records(paths, require_label=require_label, rejects_path=rejects, read_labels=read_labels)
    s, names = res.summary(), ", ".join(map(str, paths))
    typer.echo(f"{names}: {s['rows']} rows, {s['records']} loaded, {s['rejects']} rejected -> {rejects}", err=True)
    if not res.records:
        raise DataError(f"{names}: no usable row ({s['rejects']} of {s['rows']} rejected; reasons in {rejects})")
    return res.records


MODEL_HELP = "Model folder (a stage's OUT/model), or 'smollm2-135m' (pretrained weights)."


def model_option(help: str = MODEL_HELP, default=...):
    """`--model`: in every command a model folder, or the name of pretrained weights."""
    return typer.Option(default, "--model", help=help)


OVERWRITE_HELP = ("Replace an --out folder that another command, or this one with other settings, made "
                  "(default: refuse it; the same command with the same settings resumes it).")


def overwrite_option():
    """`--overwrite`: every command that writes an output folder offers it."""
    return typer.Option(False, "--overwrite", help=OVERWRITE_HELP)


def claim_out(out: Path, command: str, settings: dict, overwrite: bool) -> Path:
    """`io.claim_folder` on the main process first (under `accelerate launch` the others then find it claimed).
    Paths in `settings` are recorded resolved, so a rerun from another folder still matches."""
    from ..io import claim_folder
    from ..runtime import main_process_first

    settings = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in settings.items()}
    with main_process_first():
        return claim_folder(out, command, settings, overwrite)
ORDER_HELP = ("Output order: answer_only | think_first | answer_first. Default: the order stored with the model "
              "(taosr_prompt.json, written by `taosr sft`), else answer_first; a different order is refused.")


def resolve_order(model, given: str | None, default: str = "answer_first") -> str:
    """The output order to use with `model`: the one stored with it (`taosr sft` writes it), `given` when it
    agrees or nothing is stored, else `default`. A `given` order that contradicts the stored one is refused."""
    from ..prompts import ORDERS, PROMPT_FILE, model_order

    if given is not None and given not in ORDERS:
        raise DataError(f"--order {given}: expected one of {', '.join(ORDERS)}")
    stored = model_order(model)
    if given and stored and given != stored:
        raise DataError(f"--order {given} contradicts {Path(str(model)) / PROMPT_FILE}: the model was trained in "
                        f"{stored} order; drop --order (it is read from the model) or pass --order {stored}")
    return given or stored or default


def summary_line(stage: str, summary: dict, model_dir: Path) -> None:
    """The readable end of a training command: the stage's main numbers on one line (all of them are in
    OUT/summary.json)."""
    keys = ("order", "examples", "pairs", "prompts", "steps", "wall_s", "loss_first", "loss_last",
            "mean_accuracy_reward", "groups_masked", "groups_total", "rejects")
    shown = " ".join(f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
                     for k in keys if summary.get(k) is not None)
    typer.echo(f"{stage}: {shown} -> {model_dir} (summary: {model_dir.parent / 'summary.json'})")


def warn_think_first(model) -> None:
    """First-token scoring (calibrate, score, serve) reads the label a model gives first; a think-first model
    gives it after its reasoning."""
    from ..prompts import model_order

    if model_order(model) == "think_first":
        typer.echo(f"warning: {model} was trained think_first (its label comes after its reasoning); first-token "
                   "scoring reads a label it was not trained to give first: use an answer_first model, or "
                   "`taosr eval`, which generates the reasoning", err=True)
