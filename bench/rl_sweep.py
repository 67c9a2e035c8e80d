"""Choosing a DPO or GRPO setting on dev: the stage re-run at each value from a finished run's parent.

Each value of the swept setting (the learning rate by default, or e.g. DPO's beta) gets its own run folder
under runs/<name>/<stage>-<setting><value>/ whose data, base model, SFT stages and pass@N samples are links
to the finished run, so only the swept stage trains (with its usual dev-best step selection). Every
value's model and the parent are then scored on the whole dev split; the value with the best dev
macro-F1 is the choice. The test split is not read.

    python bench/rl_sweep.py runs/method-smollm2/seed0 --stage dpo --values 5e-5 2e-4
    python bench/rl_sweep.py runs/method-cpu-long/seed0 --stage dpo --setting beta --values 0.5 --over learning_rate=5e-5
    python bench/rl_sweep.py runs/method-smollm2/seed0 --stage grpo --values 1e-5 5e-5 \\
        --dpo-from runs/rl-sweep-smollm2/dpo-learning_rate5e-05

The stage's other settings are the finished run's own (its demo_config.json), or --preset's.
Resumable: a value whose stage finished is read back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("data", "base", "tokenizer", "sft_answer_only", "sft_think_first", "sft_answer_first", "samples_answer_first",
          "samples_think_first")


def link(src: Path, dst: Path) -> None:
    if src.exists() and not dst.exists():
        dst.symlink_to(src.resolve())


def stage_run(args, value: float):
    """The Demo of one value: the preset with the swept setting of the stage, its parent stages linked in."""
    from rich.console import Console

    from taosr.io import write_json
    from taosr.run.demo import Demo
    from taosr.run.presets import DemoConfig, load_preset, merge
    from taosr.run.rundir import prepare_data, save_config

    fixed = "".join(f"-{k}{v:g}" if isinstance(v, float) else f"-{k}{v}" for k, v in args.over.items())
    name = f"{args.stage}-{args.setting}{value:g}{fixed}"
    over = {args.stage: {**args.over, args.setting: value}, "seed": args.seed, "controls": False}
    if args.preset:
        cfg = load_preset(args.preset, name, over)
    else:  # the settings the finished run used (a demo preset or a bench preset such as cpu-long)
        cfg = DemoConfig.model_validate(merge(json.loads((args.source / "demo_config.json").read_text()), over))
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": name, "runs_dir": f"runs/{args.name}"})})
    cfg.run.dir.mkdir(parents=True, exist_ok=True)
    for sub in SHARED:
        link(args.source / sub, cfg.run.dir / sub)
    if args.stage == "grpo":
        link(args.dpo_from / "dpo_answer_first", cfg.run.dir / "dpo_answer_first")
    save_config(cfg.run)
    write_json(cfg.run.dir / "demo_config.json", cfg.model_dump())
    d = Demo(cfg, Console())
    d.splits = prepare_data(cfg.run)
    d.base()
    return d


def setting_value(text: str):
    """A --over value: a number, true/false, or text (e.g. balance_mode=downsample)."""
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def dev_score(model_dir: Path, dev, prompt) -> dict:
    """Dev macro-F1 and accuracy (%) of a model, and how often it predicts each level."""
    from collections import Counter

    from taosr.evaluation.evaluate import evaluate
    from taosr.modeling import load_model

    model, tok = load_model(model_dir)
    m, out = evaluate(model, tok, dev, "answer_first", prompt, batch_size=32)
    return {"macro_f1": round(100 * m["macro_f1"], 3), "accuracy": round(100 * m["accuracy"], 3),
            "pred_counts": dict(sorted(Counter(int(p) for p in out["pred"]).items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="A finished run's seed folder (its SFT stages and samples are reused).")
    ap.add_argument("--preset", default=None, help="A demo preset to take the settings from (default: the source "
                    "run's own, its demo_config.json).")
    ap.add_argument("--stage", choices=["dpo", "grpo"], default="dpo", help="dpo: post-CoT DPO; grpo: GRPO after it.")
    ap.add_argument("--setting", default="learning_rate", help="The stage's setting to sweep (a DPOStageConfig or "
                    "GRPOStageConfig field).")
    ap.add_argument("--values", type=float, nargs="+", required=True, help="Values of that setting to try.")
    ap.add_argument("--over", nargs="*", default=[], help="Other settings of the stage held fixed, as key=value "
                    "(numbers, true/false or text: balance_classes=false).")
    ap.add_argument("--dpo-from", type=Path, default=None, help="grpo: the run folder whose dpo_answer_first GRPO "
                    "starts from (default: the source run's).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="rl-sweep-smollm2", help="Folder under runs/.")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default docs/results/rl_<stage>_<setting>.json).")
    args = ap.parse_args()
    args.over = {k: setting_value(v) for k, v in (o.split("=", 1) for o in args.over)}
    args.source, args.dpo_from = args.source.resolve(), (args.dpo_from or args.source).resolve()
    if args.preset is None and not (args.source / "demo_config.json").is_file():
        ap.error(f"{args.source / 'demo_config.json'} not found: name the run's demo preset with --preset")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "bench"))
    from taosr.data.splits import read_split
    from taosr.prompts import model_prompt
    from taosr.run.bench import git_commit, machine

    parent = args.source / "sft_answer_first" if args.stage == "dpo" else args.dpo_from / "dpo_answer_first"
    dev = read_split(args.source / "data" / "dev.jsonl")
    prompt = model_prompt(args.source / "base" / "model")
    print(f"rl_sweep: {args.stage} {args.setting} at {args.values} (fixed: {args.over}) from {parent}; dev {len(dev)} "
          "pairs", flush=True)
    t0, commit = time.perf_counter(), git_commit()  # the code that runs
    rows = [{"value": None, "model": str(parent), **dev_score(parent / "model", dev, prompt)}]
    print(f"parent: dev macro-F1 {rows[0]['macro_f1']:.2f}", flush=True)
    for value in args.values:
        d = stage_run(args, value)
        if args.stage == "dpo":
            d.dpo("answer_first", "post-CoT + DPO")
            key = "dpo_answer_first"
        else:
            d.grpo("post-CoT + DPO + GRPO (full)")
            key = "grpo"
        train = json.loads((d.run.dir / key / "metrics.json").read_text())["train"]
        row = {"value": value, "model": str(d.run.dir / key), **dev_score(d.run.dir / key / "model", dev, prompt),
               "dev_best_step": train.get("dev_best_step"), "dev_curve": train.get("dev_curve"),
               "wall_s": train.get("wall_s")}
        rows.append(row)
        print(f"{args.setting} {value:g}: dev macro-F1 {row['macro_f1']:.2f} (dev-best step {row['dev_best_step']})", flush=True)
    best = max(rows[1:], key=lambda r: r["macro_f1"])
    result = {"stage": args.stage, "setting": args.setting, "fixed": args.over, "preset": args.preset,
              "source": str(args.source), "dev_pairs": len(dev), "rows": rows, "chosen": best["value"],
              "machine": machine(),
              "wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(sys.argv), "commit": commit}
    out = args.out or ROOT / "docs" / "results" / f"rl_{args.stage}_{args.setting}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"chosen on dev: {args.stage} {args.setting} {best['value']:g} ({best['macro_f1']:.2f}); wrote {out}")


if __name__ == "__main__":
    main()
