"""The method bench: the TaoSR1 table over seeds, each RL row beside its continued-SFT control.

Per seed (fine-tuning, sampling and RL seeds; the data split and the base model are fixed) it runs
answer-only, think-first and answer-first SFT, DPO for both CoT orders, GRPO on post-CoT, CumPT,
and a continued-SFT control for every DPO and GRPO stage; DPO, GRPO and control steps are chosen on
dev. Then it prints mean macro-F1 with a 95% CI (bootstrap over queries and seeds), each RL row's
delta against its control (paired bootstrap), pass@k beside the label-prior floor and the
discriminative-hallucination rate, and writes the JSON the README's table is generated from.

    python bench/method.py --preset cpu                  # 2 CPU cores; prints its budgets first
    python bench/method.py --preset cpu-long             # cpu with the CoT SFT parents trained 2x longer
    python bench/method.py --preset gpu --jobs 3         # one GPU, the seeds as parallel processes
    python bench/method.py --preset gpu --model smollm2-135m
    python bench/method.py --preset quick                # a few-minute smoke run of the same code
    python bench/method.py --preset smollm2 --seeds 0    # SmolLM2-135M: `taosr demo --preset smollm2` + controls

Resumable: finished stages are read back from runs/<name>/seed<k>/ (see `taosr demo`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TAOSR_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent


def preset(name: str, model: str, run_name: str, seed: int, controls: bool = True):
    """DemoConfig of one seed. quick: tiny smoke run; cpu: sized for ~75 min on 2 AVX2 cores; cpu-long: cpu
    with the think-first and post-CoT SFT parents trained 2x longer (~100 min); gpu: the demo's
    SFT budgets with larger RL budgets; smollm2: the SmolLM2-135M demo preset (its model and budgets)."""
    from taosr.evaluation.configs import BaselineConfig
    from taosr.modeling import ModelConfig
    from taosr.run.presets import load_preset
    from taosr.train.configs import DPOStageConfig, GRPOStageConfig, PretrainConfig

    base = load_preset({"quick": "tiny", "smollm2": "smollm2"}.get(name, "default"), run_name)
    upd: dict = {"seed": seed, "controls": controls}
    run_upd: dict = {"runs_dir": "runs/" + run_name.rsplit("/", 1)[0], "name": run_name.rsplit("/", 1)[1]}
    if name == "smollm2":  # `taosr demo --preset smollm2` (taosr/configs/demo/smollm2.yaml), its model and budgets
        cfg = base.model_copy(update=upd)
        return cfg.model_copy(update={"run": cfg.run.model_copy(update=run_upd)})
    if name == "quick":
        upd["sample_prompts"] = {"answer_first": 48, "think_first": 16}
    elif name in ("cpu", "cpu-long"):
        run_upd["sft"] = base.run.sft.model_copy(update={"max_steps": 300})
        upd.update(sft_by_order={"answer_only": {"learning_rate": 1e-3, "max_steps": 300},
                                 "think_first": {"max_steps": 250},
                                 "answer_first": {"learning_rate": 1e-3, "label_weight": 10.0}},
                   pretrain=PretrainConfig(max_steps=300), dpo=DPOStageConfig(max_steps=60),
                   sample_prompts={"answer_first": 4096, "think_first": 512},
                   grpo=GRPOStageConfig(max_steps=40), grpo_candidates=256, dev_checks=4, dev_limit=384)
        if name == "cpu-long":  # the CoT SFT parents of the RL stages trained 2x longer (cpu's controls still gained)
            upd["sft_by_order"] = {**upd["sft_by_order"], "think_first": {"max_steps": 500},
                                   "answer_first": {**upd["sft_by_order"]["answer_first"], "max_steps": 600}}
    elif name == "gpu":  # the SFT budgets measured for the demo on 2 cores before it was cut to fit AVX2 CPUs
        run_upd.update(eval_batch_size=256, max_new_tokens=128,
                       sft=base.run.sft.model_copy(update={"max_steps": 500}))
        upd.update(sft_by_order={"answer_only": {"learning_rate": 1e-3, "max_steps": 600},
                                 "think_first": {"max_steps": 400},
                                 "answer_first": {"learning_rate": 1e-3, "label_weight": 10.0}},
                   pretrain=PretrainConfig(max_steps=400), baseline=BaselineConfig(),
                   dpo=DPOStageConfig(max_steps=150, batch_size=32), grpo=GRPOStageConfig(max_steps=100),
                   grpo_candidates=1024, sample_prompts={"answer_first": None, "think_first": 1024},
                   dev_checks=5, dev_limit=768)
        if model != "fresh":  # ~4x the fresh model's time per step: SFT and RL budgets cut to fit one call
            run_upd["sft"] = base.run.sft.model_copy(update={"max_steps": 300})
            upd.update(sft_by_order={"answer_only": {"max_steps": 300}, "think_first": {"max_steps": 300},
                                     "answer_first": {"label_weight": 10.0}},
                       dpo=DPOStageConfig(max_steps=80, batch_size=32), grpo=GRPOStageConfig(max_steps=60),
                       grpo_candidates=512, sample_prompts={"answer_first": 4096, "think_first": 512},
                       dev_checks=3, dev_limit=512)
    else:
        raise ValueError(f"unknown preset {name!r} (quick | cpu | cpu-long | gpu | smollm2)")
    if model != "fresh":  # a pretrained model: no stage 0, smaller learning rates (full fine-tuning)
        run_upd["model"] = ModelConfig(name_or_path=model)
        upd["pretrain"] = PretrainConfig(max_steps=0)
        upd["sft_by_order"] = {o: {**v, "learning_rate": 1e-4} for o, v in
                               (upd.get("sft_by_order") or base.sft_by_order).items()}
        upd["dpo"] = (upd.get("dpo") or base.dpo).model_copy(update={"learning_rate": 5e-6})
        upd["grpo"] = (upd.get("grpo") or base.grpo).model_copy(update={"learning_rate": 2e-6})
    if seed != 0:
        upd["baseline"] = base.baseline.model_copy(update={"model_dir": ""})  # the encoder baseline runs once
    cfg = base.model_copy(update=upd)
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=run_upd)})


def seed_demo(args, seed: int):
    """The Demo of one seed, its data split and base model shared with the first seed's."""
    from rich.console import Console

    from taosr.io import write_json
    from taosr.run.demo import Demo
    from taosr.run.rundir import prepare_data, save_config

    cfg = preset(args.preset, args.model, f"{args.name}/seed{seed}", seed, args.controls)
    if seed != args.seeds[0]:  # share the split and the base model of the first seed
        first = cfg.run.dir.parent / f"seed{args.seeds[0]}"
        cfg.run.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "base", "tokenizer"):
            link = cfg.run.dir / sub
            if (first / sub).exists() and not link.exists():
                link.symlink_to((first / sub).resolve())
    save_config(cfg.run)
    write_json(cfg.run.dir / "demo_config.json", cfg.model_dump())
    d = Demo(cfg, Console())
    d.splits = prepare_data(cfg.run)
    return d


def run_seed(args, seed: int) -> None:
    """One seed's whole table; its rows (with test predictions) land in <run>/rows.json after every stage."""
    from taosr.io import write_json
    from taosr.run.demo import run_stages

    d = seed_demo(args, seed)

    def save_rows() -> None:
        write_json(d.run.dir / "rows.json", [{"name": n, **meta, "macro_f1": m["macro_f1"], "pred": m.get("pred"),
                                              "pass_at_k": m.get("pass_at_k"), "pass_at_k_prior": m.get("pass_at_k_prior"),
                                              "hallucination": m.get("hallucination"), "train": m.get("train"),
                                              "rule": m.get("rule"), "beta": m.get("beta"),
                                              "stage_wall_s": m.get("stage_wall_s")}
                                             for n, m, meta in d.rows])

    d.on_row = save_rows
    run_stages(d, think_first_grpo=args.think_first_grpo)


def aggregate(args, wall_s: float) -> dict:
    """The bench JSON: one row per table row with per-seed macro-F1, mean and CI; deltas against controls."""
    from taosr.data.splits import read_split
    from taosr.evaluation.stats import paired_delta, seed_stats

    runs = ROOT / "runs" / args.name
    test = read_split(runs / f"seed{args.seeds[0]}" / "data" / "test.jsonl")
    gold, qids = [r.label for r in test], [r.query for r in test]
    per_seed = {s: json.loads((runs / f"seed{s}" / "rows.json").read_text()) for s in args.seeds
                if (runs / f"seed{s}" / "rows.json").exists()}  # a seed cut off by the deadline gives what it has
    first = max(per_seed.values(), key=len)
    names = {r["key"]: r["name"] for r in first}
    rows = []
    for r0 in first:
        found = [(s, next(r for r in per_seed[s] if r["key"] == r0["key"])) for s in sorted(per_seed)
                 if any(r["key"] == r0["key"] for r in per_seed[s])]
        seeds = [s for s, _ in found]
        if r0["pred"] is None:  # rows without stored predictions (the encoder baseline): the point value only
            stats = {"macro_f1": [round(100 * r0["macro_f1"], 3)], "mean": round(100 * r0["macro_f1"], 3), "ci95": None}
        else:
            stats = seed_stats(gold, [r["pred"] for _, r in found], qids, n_boot=args.boot)
        row = {"name": r0["name"], "stage": r0["stage"], "order": r0.get("order"),
               "parent": names.get(r0.get("parent")), "control": names.get(r0.get("control")), "seeds": seeds, **stats,
               "extra": {s: {k: r.get(k) for k in ("pass_at_k", "pass_at_k_prior", "hallucination", "rule", "beta",
                                                     "stage_wall_s") if r.get(k) is not None}
                         | ({"dev_best_step": r["train"].get("dev_best_step")} if r.get("train") else {})
                         for s, r in found}}
        for rel in ("control", "parent"):
            other = r0.get(rel)
            both = [(r, next((x for x in per_seed[s] if x["key"] == other), None)) for s, r in found]
            both = [(a, b) for a, b in both if b is not None and b.get("pred") is not None]
            if other and r0["pred"] is not None and both:
                row[f"delta_vs_{rel}"] = paired_delta(gold, [a["pred"] for a, _ in both], [b["pred"] for _, b in both],
                                                      qids, n_boot=args.boot) | {"seeds": len(both)}
        rows.append(row)
    return {"benchmark": "taosr synthetic (default split)", "model": args.model, "preset": args.preset,
            "rows": rows, "machine": machine(), "wall_s": round(wall_s, 1), "command": " ".join(sys.argv),
            "commit": git_commit()}


def machine() -> dict:
    import torch

    from taosr.runtime import bf16_native

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "bf16_native": bf16_native(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result['benchmark']}, {result['model']}: test macro-F1 %, mean [95% CI] over seeds")
    for col in ("row", "seeds", "mean", "95% CI", "vs control", "vs parent"):
        t.add_column(col, justify="left" if col == "row" else "right")

    def delta(d):
        return f"{d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else "-"

    for r in result["rows"]:
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "-"
        t.add_row(r["name"], str(len(r["seeds"])), f"{r['mean']:.2f}", ci, delta(r.get("delta_vs_control")),
                  delta(r.get("delta_vs_parent")))
    Console().print(t)
    for r in result["rows"]:
        for s, e in r["extra"].items():
            if "pass_at_k" in e:
                print(f"{r['name']} seed {s}: pass@k " + ", ".join(f"@{k} {100 * v:.1f}" for k, v in e["pass_at_k"].items())
                      + " | label-prior floor " + ", ".join(f"@{k} {100 * v:.1f}" for k, v in e["pass_at_k_prior"].items()))
            if e.get("hallucination"):
                print(f"{r['name']} seed {s}: discriminative hallucination {e['hallucination']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu", choices=["quick", "cpu", "cpu-long", "gpu", "smollm2"])
    ap.add_argument("--model", default="fresh", help="fresh (the small model from a config) | smollm2-135m | a model folder.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="Seeds run as this many parallel processes (after the first "
                                                          "seed's data and base model exist).")
    ap.add_argument("--no-controls", dest="controls", action="store_false", help="Skip the continued-SFT controls.")
    ap.add_argument("--think-first-grpo", action="store_true", help="Also run GRPO (and its control) on think-first.")
    ap.add_argument("--boot", type=int, default=1000, help="Bootstrap replicates.")
    ap.add_argument("--deadline-s", type=float, default=float("inf"), help="Stop the seeds after this many seconds "
                    "and write the table of the stages that finished (a later run resumes them).")
    ap.add_argument("--name", default=None, help="Run folder under runs/ (default method-<preset>-<model>).")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default docs/results/method.json for the "
                                                           "fresh model, docs/results/<model>.json otherwise).")
    ap.add_argument("--only-seed", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.preset == "smollm2":
        args.model = "smollm2-135m"
    args.name = args.name or f"method-{args.preset}-{Path(args.model).name}"
    os.chdir(ROOT)
    if args.only_seed is not None:
        run_seed(args, args.only_seed)
        return
    from taosr.run.presets import budgets
    from taosr.runtime import gpu_available, resolve_bf16

    cfg = preset(args.preset, args.model, f"{args.name}/seed{args.seeds[0]}", args.seeds[0], args.controls)
    print(f"method bench: preset {args.preset}, model {args.model}, seeds {args.seeds}, jobs {args.jobs}, "
          f"precision {'bf16' if resolve_bf16(None) else 'fp32'}; machine {machine()}", flush=True)
    print("budgets per seed: " + json.dumps(budgets(cfg)), flush=True)
    t0 = time.perf_counter()
    seed_demo(args, args.seeds[0]).base()  # the shared data split and base model, before the seeds fork
    rest = list(args.seeds)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    while rest and time.perf_counter() - t0 < args.deadline_s:
        batch, rest = rest[: args.jobs], rest[args.jobs:]
        if "OMP_NUM_THREADS" not in os.environ and not gpu_available():  # the cores shared by the parallel seeds
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(batch)))
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--only-seed", str(s)], env=env)
                 for s in batch]
        for p in procs:
            try:
                p.wait(timeout=max(1.0, args.deadline_s - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                print(f"deadline of {args.deadline_s} s reached: stopping the seeds; the table keeps what finished")
                for q in procs:
                    q.kill()
                rest = []
                break
        if any(p.returncode not in (0, None, -9) for p in procs):
            sys.exit(f"a seed process failed: {[p.returncode for p in procs]}")
    result = aggregate(args, time.perf_counter() - t0)
    out = args.out or ROOT / "docs" / "results" / ("method.json" if args.model == "fresh" else f"{Path(args.model).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"wrote {out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
