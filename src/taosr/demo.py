"""`taosr demo`: the whole pipeline on the synthetic benchmark, printed as the paper's table.

Every row is a real run of its stage, read back from `runs/<name>/<stage>/metrics.json`; a stage
whose metrics already exist is not run again, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable

from rich.console import Console

from .evaluate import evaluate, majority_baseline, query_type_table, stage_table
from .modeling import ModelConfig, load_model
from .pipeline import RunConfig, fresh_model, prepare_data, save_config, write_json
from .pretrain import PretrainConfig, run_pretrain
from .sft import SFTStageConfig, run_sft
from .synth import SynthConfig
from .teacher import RuleTeacher

ROW_NAMES = {
    "sft_answer_only": "LLM base, answer-only SFT",
    "sft_think_first": "CoT think-first SFT",
    "sft_answer_first": "CoT answer-first SFT (post-CoT)",
}


def make_preset(name: str, run_name: str) -> tuple[RunConfig, PretrainConfig]:
    """`default`: the measured demo (about 15 min on 2 cores); `tiny`: a smoke run for tests."""
    if name == "tiny":
        cfg = RunConfig(
            name=run_name,
            synth=SynthConfig(n_queries=120, items_per_query=3),
            model=ModelConfig(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                              intermediate_size=128),
            sft=SFTStageConfig(max_steps=4, batch_size=8, save_steps=1000),
            max_new_tokens=48,
        )
        return cfg, PretrainConfig(max_steps=4, batch_size=8)
    if name == "default":
        return RunConfig(name=run_name, sft=SFTStageConfig(max_steps=400, learning_rate=1e-3)), PretrainConfig(max_steps=400)
    raise ValueError(f"unknown preset {name!r} (default | tiny)")


def _stage(cfg: RunConfig, stage: str, console: Console, fn: Callable[[], dict]) -> dict:
    """Run one stage unless its metrics already exist; return its metrics."""
    path = cfg.dir / stage / "metrics.json"
    if path.exists():
        console.print(f"[dim]{stage}: already done, reading {path}[/dim]")
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    metrics = fn()
    metrics["stage_wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(path, metrics)
    console.print(f"{stage}: macro-F1 {100 * metrics['macro_f1']:.2f}, accuracy {100 * metrics['accuracy']:.2f} "
                  f"({metrics['stage_wall_s']} s)")
    return metrics


def run_demo(name: str = "demo", preset: str = "default", fresh: bool = False,
             console: Console | None = None) -> dict:
    console = console or Console()
    cfg, pre_cfg = make_preset(preset, name)
    if fresh and cfg.dir.exists():
        shutil.rmtree(cfg.dir)
    save_config(cfg)
    t_start = time.perf_counter()
    splits = prepare_data(cfg)
    console.print(f"benchmark: {', '.join(f'{k} {len(v)} pairs' for k, v in splits.items())} -> {cfg.dir / 'data'}")
    teacher = RuleTeacher()

    base_dir = cfg.dir / "base"
    if not (base_dir / "model" / "config.json").exists():
        model, tok = fresh_model(cfg, splits["train"])
        if not cfg.model.name_or_path and pre_cfg.max_steps > 0:
            s = run_pretrain(model, tok, splits["train"], pre_cfg, base_dir, cfg.prompt)
            console.print(f"base model pre-training: loss {s['loss_first']:.2f} -> {s['loss_last']:.2f} ({s['wall_s']} s)")
        else:
            from .modeling import save

            save(model, tok, base_dir / "model")

    rows: list[tuple[str, dict]] = [("majority class", majority_baseline(splits["train"], splits["test"]))]
    for order in ("answer_only", "think_first", "answer_first"):
        stage = f"sft_{order}"

        def train_and_eval(order=order, stage=stage) -> dict:
            model, tok = load_model(base_dir / "model")
            sft_cfg = cfg.sft.model_copy(update={"order": order})
            summary = run_sft(model, tok, splits["train"], sft_cfg, cfg.dir / stage, teacher, cfg.prompt)
            metrics, out = evaluate(model, tok, splits["test"], order, cfg.prompt,
                                    batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens)
            metrics["train"] = {k: v for k, v in summary.items() if k != "loss_curve"}
            _write_samples(cfg, stage, splits["test"], out)
            return metrics

        rows.append((ROW_NAMES[stage], _stage(cfg, stage, console, train_and_eval)))

    wall = time.perf_counter() - t_start
    console.print(stage_table(rows))
    console.print(query_type_table(rows))
    result = {"rows": [{"name": n, **m} for n, m in rows], "wall_s": round(wall, 1)}
    write_json(cfg.dir / "results.json", result)
    console.print(f"demo finished in {wall:.0f} s; everything is under {cfg.dir}/")
    return result


def _write_samples(cfg: RunConfig, stage: str, records, out: dict, n: int = 50) -> None:
    """Keep a few predictions next to gold for the report (texts for think-first, probabilities otherwise)."""
    rows = []
    for i, r in enumerate(records[:n]):
        row = {"id": r.id, "query": r.query, "title": r.title, "gold": r.label, "pred": out["pred"][i]}
        if "texts" in out:
            row["text"] = out["texts"][i]
        if "probs" in out:
            row["probs"] = [round(float(x), 4) for x in out["probs"][i]]
        rows.append(row)
    write_json(cfg.dir / stage / "samples.json", rows)
