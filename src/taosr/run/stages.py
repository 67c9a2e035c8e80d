"""The table's stages in pipeline order, and `taosr demo`: every stage of a preset on one run folder, then the
paper-shaped table, the per-query-type table and the HTML report."""

from __future__ import annotations

import json
import shutil
import time

from rich.console import Console

from ..evaluation.devselect import still_rising
from ..evaluation.evaluate import majority_baseline, query_type_table, stage_table
from ..io import write_json
from ..runtime import resolve_bf16
from .demo import Demo
from .presets import STAGES, budgets, load_preset
from .rundir import prepare_data, save_config


def grpo_arm(d: Demo, arm: str) -> None:
    """One of `grpo_arms`, from the DPO model of its order (post-CoT unless it says think_first)."""
    order = d.cfg.grpo_arms[arm].get("order", "answer_first")
    parent = "post-CoT" if order == "answer_first" else "think-first"
    d.grpo(f"{parent} + DPO + GRPO ({arm} arm)", f"{parent} + DPO + continued SFT (GRPO {arm} arm control)", order, arm)


def run_stages(d: Demo) -> None:
    """Every row of the table, in pipeline order, up to `d.cfg.stop_after` (controls run where `d.cfg.controls`)."""
    d.rows.append(("majority class", majority_baseline(d.splits["train"], d.test),
                   {"key": "majority", "stage": "majority", "order": None, "parent": None}))
    steps = {
        "baseline": d.baseline,
        "answer_only": lambda: d.sft("answer_only", "LLM base, answer-only SFT"),
        "think_first": lambda: d.sft("think_first", "CoT think-first SFT"),
        "answer_first": lambda: d.sft("answer_first", "CoT answer-first SFT (post-CoT)"),
        "dpo_think_first": lambda: d.dpo("think_first", "think-first + DPO",
                                         "think-first + continued SFT (DPO control)"),
        "dpo_answer_first": lambda: d.dpo("answer_first", "post-CoT + DPO", "post-CoT + continued SFT (DPO control)"),
        "grpo": lambda: d.grpo("post-CoT + DPO + GRPO (full)", "post-CoT + DPO + continued SFT (GRPO control)"),
        "grpo_arms": lambda: [grpo_arm(d, arm) for arm in d.cfg.grpo_arms],
        "final": lambda: d.cumpt("full, first-token probs (CumPT or argmax, chosen on dev)", "full, generated label"),
    }
    for name in STAGES:
        if name == "answer_only":
            d.base()
        steps[name]()
        if name == d.cfg.stop_after:
            break


def run_demo(name: str = "demo", preset: str = "default", fresh: bool = False,
             console: Console | None = None, overrides: dict | None = None) -> dict:
    """Every stage of the preset (`taosr/configs/demo/<preset>.yaml`, `overrides` merged in) under runs/<name>/."""
    console = console or Console()
    cfg = load_preset(preset, name, overrides)
    if fresh and cfg.run.dir.exists():
        shutil.rmtree(cfg.run.dir)
    save_config(cfg.run)
    write_json(cfg.run.dir / "demo_config.json", cfg.model_dump())
    console.print(f"precision: {'bf16' if resolve_bf16(None) else 'fp32'} "
                  "(bf16 only where the hardware runs it natively)")
    console.print(f"budgets: {json.dumps(budgets(cfg))}")
    t_start = time.perf_counter()
    d = Demo(cfg, console)
    d.splits = prepare_data(cfg.run)
    sizes = ", ".join(f"{k} {len(v)} pairs" for k, v in d.splits.items())
    console.print(f"benchmark: {sizes} -> {cfg.run.dir / 'data'}")
    run_stages(d)

    wall = time.perf_counter() - t_start
    rows = [(n, m) for n, m, _ in d.rows]
    console.print(stage_table(rows))
    console.print(query_type_table(rows))
    majority = rows[0][1]["macro_f1"]
    for row, m in rows[1:]:
        if m["macro_f1"] < majority + 0.05:  # a row within 5 points of the majority class has not learned the task
            console.print(f"[red]warning[/red]: {row!r} is within 5 macro-F1 points of the majority class: "
                          "it has not learned the task (raise its budget)")
    rising = {n: still_rising((m.get("train") or {}).get("dev_curve") or [], cfg.converged_within) for n, m in rows}
    for row in (n for n, up in rising.items() if up):
        console.print(f"[yellow]dev still rising[/yellow]: {row!r} gained {cfg.converged_within} or more macro-F1 "
                      "points on dev at its last check: its budget ran out before it converged")
    result = {"rows": [{"name": n, **{k: v for k, v in m.items() if k != "pred"}, "dev_still_rising": rising[n]}
                       for n, m in rows],
              "wall_s": round(wall, 1)}
    write_json(cfg.run.dir / "results.json", result)
    from ..evaluation.report import build_report

    console.print(f"report: {build_report(cfg.run.dir)}")
    console.print(f"demo finished in {wall:.0f} s; everything is under {cfg.run.dir}/")
    return result
