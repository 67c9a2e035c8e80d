"""GRPO ablation on one run folder, same rollout budget for every variant.

Starts every variant from the same policy (the demo's post-CoT + DPO model), with the same seed,
steps, prompts per step and group size (so the same number of rollouts), and reports test
macro-F1 (answer-first scoring), mean accuracy reward and the share of zero-spread groups:

    dynamic sampling (offline pass@N filter + online zero-spread mask), balanced labels
    no dynamic sampling, balanced labels
    dynamic sampling, natural label mix

Usage: python bench/grpo_ablation.py runs/demo [--steps 30]   (after `taosr demo`)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from taosr.data.splits import read_split
from taosr.evaluation.evaluate import evaluate
from taosr.modeling import load_model
from taosr.progress import quiet_libraries
from taosr.prompts import PromptConfig
from taosr.train.configs import GRPOStageConfig
from taosr.train.grpo import label_stratified, run_grpo, select_prompts
from taosr.train.sample import read_samples

VARIANTS = {
    "dynamic sampling, balanced": dict(offline_filter=True, online_mask=True, balance_classes=True),
    "no dynamic sampling, balanced": dict(offline_filter=False, online_mask=False, balance_classes=True),
    "dynamic sampling, natural mix": dict(offline_filter=True, online_mask=True, balance_classes=False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=None, help="GRPO candidates (default: the demo's).")
    args = ap.parse_args()
    quiet_libraries()
    console, pc = Console(width=140), PromptConfig()
    train = read_split(args.run / "data" / "train.jsonl")
    test = read_split(args.run / "data" / "test.jsonl")
    demo = json.loads((args.run / "demo_config.json").read_text())  # the prompts `samples_grpo` was drawn for
    cands = label_stratified(train[demo["sample_prompts"]:], args.candidates or demo["grpo_candidates"],
                             demo["grpo"]["seed"])
    samples = read_samples(args.run / "samples_grpo")
    start = args.run / "dpo_answer_first" / "model"
    results = {}
    for name, flags in VARIANTS.items():
        cfg = GRPOStageConfig(max_steps=args.steps, **flags)
        prompts, sel = select_prompts(cands, samples if cfg.offline_filter else None, cfg)
        model, tok = load_model(start)
        t0 = time.perf_counter()
        s = run_grpo(model, tok, prompts, cfg, args.run / "ablation" / name.replace(" ", "_").replace(",", ""), pc)
        m, _ = evaluate(model, tok, test, "answer_first", pc)
        results[name] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "prompts": len(prompts),
                         "labels": sel["labels_out"], "cv": sel["cv_after"], "mean_reward": s["mean_accuracy_reward"],
                         "frac_zero_spread": s["frac_zero_spread_groups"], "rollouts": s["steps"] * cfg.prompts_per_step * cfg.num_generations,
                         "wall_s": round(time.perf_counter() - t0, 1)}
    base_model, base_tok = load_model(start)
    base, _ = evaluate(base_model, base_tok, test, "answer_first", pc)
    t = Table(title=f"GRPO ablation ({args.steps} steps each, same rollouts); start = post-CoT + DPO "
                    f"(macro-F1 {100 * base['macro_f1']:.2f})")
    for col in ("variant", "prompts", "label CV", "rollouts", "mean reward", "zero-spread groups", "test macro-F1", "acc", "s"):
        t.add_column(col)
    for name, r in results.items():
        t.add_row(name, str(r["prompts"]), f"{r['cv']:.2f}", str(r["rollouts"]), "-" if r["mean_reward"] is None else f"{r['mean_reward']:.3f}",
                  f"{100 * r['frac_zero_spread']:.0f}%", f"{100 * r['macro_f1']:.2f}", f"{100 * r['accuracy']:.2f}",
                  str(r["wall_s"]))
    console.print(t)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "grpo_ablation.json").write_text(json.dumps({"start_macro_f1": base["macro_f1"], **results}, indent=1))


if __name__ == "__main__":
    main()
