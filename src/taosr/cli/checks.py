"""Checks the training commands run before and after a stage, so that a valid file of real pairs never ends in a
traceback or in a run that trained nothing: each names the cause and the fix (`DataError` -> one `error:` line).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import typer

from ..data.result import DataError

MIN_RL_PROMPTS = 8  # fewer GRPO prompts than this after class balancing is "a handful"
SAMPLED_FROM = "sampled_from.json"  # written by `taosr sample` into its folder: which model drew the samples


def check_reasoning(train, teacher, order: str, cot: Path | None) -> int:
    """Pairs of `train` with reasoning that concludes their gold level; none (in a think order) is an error."""
    if order == "answer_only":
        return len(train)
    usable = 0
    for r in train:
        out = teacher.reason(r)
        usable += out is not None and out.level == r.label
    if usable == 0:
        source = f"{cot}" if cot else "the default teacher"
        raise DataError(f"no training pair has usable reasoning ({source}: 0 of {len(train)}); order {order} needs "
                        "it: write it with `taosr cot TRAIN.jsonl --out cot.jsonl` (default teacher auto, offline) "
                        "and pass --cot cot.jsonl, or train --order answer_only")
    if usable < len(train):
        typer.echo(f"warning: {len(train) - usable} of {len(train)} training pairs have no usable reasoning and are "
                   "left out (listed in OUT/rejects.jsonl)", err=True)
    return usable


def check_report_to(report_to: str) -> None:
    """The experiment tracker must be installed (TRL would otherwise fail deep inside the trainer)."""
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise DataError(f"--report-to {report_to}: the {report_to} package is not installed (pip install "
                        f"{report_to}), or use --report-to none")


def record_sampler(out: Path, model: Path) -> None:
    """Remember which model drew the samples in `out` (read by `check_samples_origin`)."""
    (out / SAMPLED_FROM).write_text(json.dumps({"model": str(Path(model).resolve())}), encoding="utf-8")


def check_samples_origin(samples: Path, model: Path) -> None:
    """GRPO's difficulty filter needs pass@N samples of the policy it trains, not of another model."""
    path = samples / SAMPLED_FROM
    if not path.is_file():
        return
    drawn_by = json.loads(path.read_text(encoding="utf-8")).get("model")
    if drawn_by and Path(drawn_by) != Path(model).resolve():
        raise DataError(f"{samples} holds samples of {drawn_by}, not of the policy {model}; the difficulty filter "
                        f"needs the policy's own: `taosr sample --model {model} --data TRAIN --out NEW_FOLDER` and "
                        "pass --samples NEW_FOLDER (or --no-offline-filter)")


def check_selection(selection: dict, prompts_per_step: int) -> None:
    """Refuse a GRPO run left with no prompt, or with a handful because class balancing cut the rest."""
    n, start = selection.get("prompts_out", 0), selection.get("prompts_in", 0)
    if n == 0:
        why = ", ".join(f"{k.removeprefix('dropped_').replace('_', ' ')} {v}" for k, v in selection.items()
                        if k.startswith("dropped_") and v)
        raise DataError(f"no GRPO prompt left of {start} ({why or 'none given'}): the difficulty filter keeps "
                        "prompts the policy answers right in some samples but not all; pass --no-offline-filter "
                        "(and --no-balance-classes if balancing dropped the rest), or sample more (--n)")
    if selection.get("dropped_balance") and n < max(MIN_RL_PROMPTS, prompts_per_step):
        labels = selection.get("labels_out") or {}
        raise DataError(f"class balancing left {n} of {start} GRPO prompts (every level cut to its rarest's count; "
                        f"kept {labels}): pass --no-balance-classes, or add pairs of the rare levels")


def check_trained(summary: dict) -> None:
    """Every rollout group masked (no reward spread) means GRPO trained nothing: warn and exit non-zero."""
    total, masked = summary.get("groups_total") or 0, summary.get("groups_masked") or 0
    if total and masked == total:
        typer.echo(f"warning: GRPO trained nothing: all {total} rollout groups had zero reward spread (every "
                   "rollout of a prompt right, or every one wrong), so every group was masked; the saved model "
                   "equals its start. Try a higher --temperature, more --num-generations, the difficulty filter "
                   "(--samples of this policy) or --no-online-mask", err=True)
        raise typer.Exit(1)
