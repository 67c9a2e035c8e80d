"""`taosr bench method`: the TaoSR1 table over seeds, each RL row beside its continued-SFT control.

Per seed (fine-tuning, sampling and RL seeds; the data split and the base model are shared) it runs the
preset's stages as `taosr demo` does, then writes one JSON: mean test macro-F1 with a 95% CI (bootstrap over
queries and seeds), the same per query type, each row's paired delta against its control and its parent,
and for every RL and control row whether dev kept the parent (`kept_parent`), with the dev curves, the
last-step dev score, pair counts and GRPO's prompts per level. Presets are YAML files of `DemoConfig`
(taosr/configs/demo/); `--config` overrides single settings.

Resumable: finished stages are read back from runs/<name>/seed<k>/; a stage with other settings is refused.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..data.splits import read_split, test_subset
from ..evaluation.devselect import still_rising
from ..evaluation.stats import paired_delta, seed_stats
from ..io import write_json
from ..runtime import bf16_native, gpu_available, resolve_bf16
from .demo import Demo
from .presets import DemoConfig, budgets, load_preset
from .rundir import prepare_data, save_config
from .stages import run_stages

RL_STAGES = ("dpo", "grpo", "control")


def seed_config(preset: str, name: str, seed: int, overrides: dict | None) -> DemoConfig:
    """The DemoConfig of one seed: runs/<name>/seed<k>, the preset's settings with `seed` set."""
    cfg = load_preset(preset, f"{name}/seed{seed}", overrides)
    return cfg.model_copy(update={"seed": seed})


def seed_demo(preset: str, name: str, seed: int, first: int, overrides: dict | None, console: Console) -> Demo:
    """The Demo of one seed, its data split and base model linked to the first seed's."""
    cfg = seed_config(preset, name, seed, overrides)
    if seed != first:
        src = cfg.run.dir.parent / f"seed{first}"
        cfg.run.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "base", "tokenizer"):
            link = cfg.run.dir / sub
            if (src / sub).exists() and not link.exists():
                link.symlink_to((src / sub).resolve())
        # the encoder baseline runs once, for the first seed
        cfg = cfg.model_copy(update={"baseline": cfg.baseline.model_copy(update={"model_dir": ""})})
    save_config(cfg.run)
    write_json(cfg.run.dir / "demo_config.json", cfg.model_dump())
    d = Demo(cfg, console)
    d.splits = prepare_data(cfg.run)
    return d


def run_seed(preset: str, name: str, seed: int, first: int, overrides: dict | None, console: Console) -> None:
    """One seed's rows; they land in <run>/rows.json (with test predictions) after every stage."""
    d = seed_demo(preset, name, seed, first, overrides, console)

    def save_rows() -> None:
        keep = ("pass_at_k", "pass_at_k_prior", "hallucination", "train", "rule", "beta", "stage_wall_s",
                "pair_counts", "selection", "per_query_type")
        write_json(d.run.dir / "rows.json", [{"name": n, **meta, "macro_f1": m["macro_f1"], "pred": m.get("pred"),
                                              **{k: m.get(k) for k in keep}} for n, m, meta in d.rows])

    d.on_row = save_rows
    run_stages(d)


def stage_extra(r: dict, within: float) -> dict:
    """What a row of one seed shows beyond its score: dev selection (and whether dev was still rising by more
    than `within` points at the last check), pairs, GRPO prompts, sampling."""
    out = {k: r[k] for k in ("pass_at_k", "pass_at_k_prior", "hallucination", "rule", "beta", "stage_wall_s",
                             "pair_counts") if r.get(k) is not None}
    train = r.get("train") or {}
    for k in ("steps", "epochs", "dev_best_step", "dev_best_macro_f1", "dev_curve", "examples", "teacher",
              "extensions", "dev_best_epochs"):
        if train.get(k) is not None:
            out[k] = train[k]
    if train.get("dev_curve"):
        out["dev_last_macro_f1"] = train["dev_curve"][-1][1]
        rising = still_rising(train["dev_curve"], within)
        if rising is not None:
            out["dev_still_rising"] = rising
    if r.get("stage") in RL_STAGES and "dev_best_step" in train:
        out["kept_parent"] = train["dev_best_step"] == 0
    sel = r.get("selection") or {}
    for k in ("prompts_in", "prompts_out", "labels_out", "distinct_per_level", "dropped_too_easy", "dropped_too_hard",
              "dropped_balance"):
        if k in sel:
            out[f"grpo_{k}"] = sel[k]
    if train.get("frac_zero_spread_groups") is not None:
        out["zero_spread_frac"] = train["frac_zero_spread_groups"]
    return out


def aggregate(runs: Path, seeds: list[int], test_limit: int | None, n_boot: int = 1000,
              within: float = DemoConfig.model_fields["converged_within"].default) -> list[dict]:
    """The table's rows: per-seed and mean macro-F1 with a 95% CI, per query type, deltas against control/parent,
    and per row how many seeds dev reverted (`kept_parent`) or found still rising (`dev_still_rising`)."""
    test = test_subset(read_split(runs / f"seed{seeds[0]}" / "data" / "test.jsonl"), test_limit)
    gold, qids, qtypes = [r.label for r in test], [r.query for r in test], [r.query_type for r in test]
    per_seed = {s: json.loads((runs / f"seed{s}" / "rows.json").read_text()) for s in seeds
                if (runs / f"seed{s}" / "rows.json").exists()}  # a seed cut off gives what it has
    if not per_seed:
        return []
    first = max(per_seed.values(), key=len)
    names = {r["key"]: r["name"] for r in first}
    rows = []
    for r0 in first:
        found = [(s, next(r for r in per_seed[s] if r["key"] == r0["key"])) for s in sorted(per_seed)
                 if any(r["key"] == r0["key"] for r in per_seed[s])]
        if r0["pred"] is None:
            stats = {"macro_f1": [round(100 * r0["macro_f1"], 3)], "mean": round(100 * r0["macro_f1"], 3),
                     "ci95": None}
        else:
            stats = seed_stats(gold, [r["pred"] for _, r in found], qids, n_boot=n_boot)
        row = {"name": r0["name"], "stage": r0["stage"], "order": r0.get("order"),
               "parent": names.get(r0.get("parent")), "control": names.get(r0.get("control")),
               "seeds": [s for s, _ in found], **stats, "extra": {s: stage_extra(r, within) for s, r in found}}
        kept = [e["kept_parent"] for e in row["extra"].values() if "kept_parent" in e]
        if kept:
            row["kept_parent"] = {"seeds": sum(kept), "of": len(kept)}
        rising = [e["dev_still_rising"] for e in row["extra"].values() if "dev_still_rising" in e]
        if rising:
            row["dev_still_rising"] = {"seeds": sum(rising), "of": len(rising)}
        ext = [e for e in row["extra"].values() if e.get("extensions")]
        if ext:
            row["extended"] = {"seeds": len(ext), "of": len(found), "max_epochs": max(e["epochs"] for e in ext),
                               "kept_epochs": [e.get("dev_best_epochs") for e in ext]}
        if r0["pred"] is not None:
            row["per_query_type"] = per_type_stats(gold, [r["pred"] for _, r in found], qids, qtypes, n_boot)
        for rel in ("control", "parent"):
            other = r0.get(rel)
            both = [(r, next((x for x in per_seed[s] if x["key"] == other), None)) for s, r in found]
            both = [(a, b) for a, b in both if b is not None and b.get("pred") is not None]
            if other and r0["pred"] is not None and both:
                row[f"delta_vs_{rel}"] = paired_delta(gold, [a["pred"] for a, _ in both],
                                                      [b["pred"] for _, b in both], qids, n_boot=n_boot) | {
                    "seeds": len(both)}
        rows.append(row)
    return rows


def per_type_stats(gold, preds, qids, qtypes, n_boot: int) -> dict:
    """Macro-F1 mean and 95% CI per query type (bootstrap over that type's queries and the seeds)."""
    out = {}
    for t in sorted({q for q in qtypes if q}):
        ix = [i for i, q in enumerate(qtypes) if q == t]
        st = seed_stats([gold[i] for i in ix], [[p[i] for i in ix] for p in preds], [qids[i] for i in ix],
                        n_boot=n_boot)
        out[t] = {"mean": st["mean"], "ci95": st["ci95"], "pairs": len(ix)}
    return out


def machine() -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512": "avx512f" in flags, "bf16_native": bf16_native(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_table(result: dict, console: Console) -> None:
    t = Table(title=f"{result['preset']}: test macro-F1 %, mean [95% CI] over seeds "
                    f"(teacher error rate {result['teacher_error_rate']})")
    for col in ("row", "seeds", "mean", "95% CI", "vs control", "vs parent", "dev kept parent"):
        t.add_column(col, justify="left" if col == "row" else "right")

    def delta(d):
        return f"{d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else "-"

    for r in result["rows"]:
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "-"
        kp, up = r.get("kept_parent"), r.get("dev_still_rising")
        mark = (" (reverted)" if kp and kp["seeds"] == kp["of"] else "") + (
            f" (dev still rising in {up['seeds']}/{up['of']})" if up and up["seeds"] else "") + (
            f" (extended in {ex['seeds']}/{ex['of']}, to {ex['max_epochs']:.1f} epochs at most; dev kept "
            f"{', '.join(f'{k:.1f}' if k is not None else '?' for k in ex.get('kept_epochs', []))})"
            if (ex := r.get("extended")) else "")
        t.add_row(r["name"] + mark, str(len(r["seeds"])),
                  f"{r['mean']:.2f}", ci, delta(r.get("delta_vs_control")), delta(r.get("delta_vs_parent")),
                  f"{kp['seeds']}/{kp['of']}" if kp else "-")
    console.print(t)


def run_method_bench(preset: str, seeds: list[int], name: str | None = None, out: Path | None = None,
                     overrides: dict | None = None, deadline_s: float = float("inf"), jobs: int = 1,
                     n_boot: int = 1000, console: Console | None = None) -> dict:
    """Every seed of the preset (resumable), then the table JSON (default docs/results/<name>.json)."""
    console = console or Console()
    name = name or f"method-{Path(preset).stem}"
    cfg = seed_config(preset, name, seeds[0], overrides)
    console.print(f"method bench: preset {preset}, seeds {seeds}, jobs {jobs}, "
                  f"precision {'bf16' if resolve_bf16(None) else 'fp32'}; machine {machine()}")
    console.print("budgets per seed: " + json.dumps(budgets(cfg)))
    t0, commit = time.perf_counter(), git_commit()  # the code that runs, not what is checked out at the end
    seed_demo(preset, name, seeds[0], seeds[0], overrides, console).base()  # shared before the seeds fork
    rest = list(seeds)
    env = dict(os.environ)
    while rest and time.perf_counter() - t0 < deadline_s:
        batch, rest = rest[:jobs], rest[jobs:]
        if "OMP_NUM_THREADS" not in os.environ and not gpu_available():  # the cores shared by parallel seeds
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(batch)))
        cmd = [sys.executable, "-m", "taosr.cli", "bench", "seed", "--preset", preset, "--name", name,
               "--first", str(seeds[0])]
        if overrides:
            cmd += ["--overrides-json", json.dumps(overrides)]
        procs = [subprocess.Popen([*cmd, "--seed", str(s)], env=env) for s in batch]
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline_s - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                console.print(f"deadline of {deadline_s} s reached: the table keeps what finished")
                for q in procs:
                    q.kill()
                rest = []
                break
        if any(p.returncode not in (0, None, -9) for p in procs):
            raise RuntimeError(f"a seed process failed: exit codes {[p.returncode for p in procs]}")
    rows = aggregate(Path(cfg.run.runs_dir) / name, seeds, cfg.test_limit, n_boot, cfg.converged_within)
    result = {"benchmark": "taosr synthetic", "preset": preset, "seeds": seeds,
              "teacher_error_rate": cfg.teacher_noise.error_rate, "teacher_noise": cfg.teacher_noise.model_dump(),
              "teacher_disagreement": cfg.run.sft.teacher_disagreement, "budgets": budgets(cfg), "rows": rows,
              "machine": machine(), "wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(sys.argv),
              "commit": commit}
    out = out or Path("docs") / "results" / f"{name}.json"
    write_json(out, result)
    print_table(result, console)
    console.print(f"wrote {out} ({result['wall_s']} s)")
    return result
