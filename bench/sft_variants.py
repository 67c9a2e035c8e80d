"""SFT variants of a pretrained model, measured on dev: the prompt layout and LoRA vs full fine-tuning.

From the same base model and data (a preset's benchmark subset), SFT in one output order once per variant,
with the same budget and seed; then macro-F1 on the whole dev split with a query-bootstrap CI and each
variant's paired delta against `plain`. Test is never read. Variants:
    plain   the plain prompt layout, full fine-tuning (the preset's default)
    chat    the model's chat template around the prompt (`prompts.chat_prompt_config`)
    lora    the plain layout with LoRA r=16 on every linear layer, the label/tag rows trained too

    python bench/sft_variants.py                                      # SmolLM2-135M, answer-only, 150 steps
    python bench/sft_variants.py --variants plain chat                # the layout alone
    python bench/sft_variants.py --steps 2 --dev-limit 16             # smoke run of the same code

Resumable: a variant whose metrics exist under runs/<name>/<variant>/ is read back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="smollm2", help="Demo preset giving the model, data subset and SFT settings.")
    ap.add_argument("--order", default="answer_only", choices=["answer_only", "think_first", "answer_first"])
    ap.add_argument("--steps", type=int, default=150, help="SFT steps per layout.")
    ap.add_argument("--dev-limit", type=int, default=None, help="Only the first N dev pairs (smoke runs).")
    ap.add_argument("--variants", nargs="+", default=["plain", "chat", "lora"], choices=["plain", "chat", "lora"])
    ap.add_argument("--lora-lr", type=float, default=1e-3, help="LoRA learning rate (adapters take a larger one).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="sft-variants")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "sft_variants.json")
    args = ap.parse_args()
    os.chdir(ROOT)

    from taosr.evaluation.evaluate import evaluate
    from taosr.evaluation.stats import paired_delta, seed_stats
    from taosr.io import write_json
    from taosr.modeling import load_model, save
    from taosr.prompts import chat_prompt_config
    from taosr.run.presets import load_preset
    from taosr.run.rundir import fresh_model, prepare_data
    from taosr.runtime import resolve_bf16
    from taosr.teacher.reasoning import RuleTeacher
    from taosr.train.sft import run_sft

    cfg = load_preset(args.preset, args.name)
    run = cfg.run.model_copy(update={"runs_dir": "runs"})
    sft_cfg = run.sft.model_copy(update={"order": args.order, "seed": args.seed,
                                         **cfg.sft_by_order.get(args.order, {}), "max_steps": args.steps})
    print(f"SFT variants {args.variants}: model {run.model.name_or_path or 'fresh'}, order {args.order}, {args.steps} steps "
          f"x {sft_cfg.batch_size} at lr {sft_cfg.learning_rate}, precision "
          f"{'bf16' if resolve_bf16(None) else 'fp32'}", flush=True)
    splits = prepare_data(run)
    dev = splits["dev"][: args.dev_limit]
    base = run.dir / "base" / "model"
    if not (base / "config.json").exists():
        model, tok = fresh_model(run, splits["train"])
        save(model, tok, base)
    _, tok = load_model(base)
    lora = sft_cfg.lora.model_copy(update={"r": 16})
    variants = {"plain": (run.prompt, sft_cfg), "chat": (chat_prompt_config(tok, run.prompt), sft_cfg),
                "lora": (run.prompt, sft_cfg.model_copy(update={"lora": lora, "learning_rate": args.lora_lr}))}
    variants = {v: variants[v] for v in dict.fromkeys(["plain", *args.variants])}

    preds = {}
    for name, (prompt, stage_cfg) in variants.items():
        path = run.dir / name / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
        else:
            t0 = time.perf_counter()
            model, tok = load_model(base)
            s = run_sft(model, tok, splits["train"], stage_cfg, run.dir / name, RuleTeacher(), prompt)
            m, out = evaluate(model, tok, dev, args.order, prompt, batch_size=run.eval_batch_size,
                              max_new_tokens=run.max_new_tokens)
            m = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "pred": [int(p) for p in out["pred"]],
                 "loss_last": s["loss_last"], "trainable_params": s.get("trainable_params"), "tokens": s.get("tokens"),
                 "wall_s": round(time.perf_counter() - t0, 1)}
            write_json(path, m)
        preds[name] = m["pred"]
        print(f"{name}: dev macro-F1 {100 * m['macro_f1']:.2f}, accuracy {100 * m['accuracy']:.2f}, "
              f"last loss {m['loss_last']:.3f} ({m['wall_s']} s)", flush=True)

    gold, qids = [r.label for r in dev], [r.query for r in dev]
    result = {"benchmark": f"taosr synthetic ({args.preset} subset), dev split", "model": run.model.name_or_path,
              "order": args.order, "steps": args.steps, "batch_size": sft_cfg.batch_size,
              "learning_rate": sft_cfg.learning_rate, "dev_pairs": len(dev),
              "variants": {n: seed_stats(gold, [preds[n]], qids) for n in variants},
              "train": {n: {k: json.loads((run.dir / n / "metrics.json").read_text()).get(k)
                            for k in ("loss_last", "tokens", "trainable_params", "wall_s")} for n in variants},
              "minus_plain": {n: paired_delta(gold, [preds[n]], [preds["plain"]], qids) for n in variants if n != "plain"},
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip() or None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for n, d in result["minus_plain"].items():
        print(f"{n} - plain: {d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] macro-F1 points on dev")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
