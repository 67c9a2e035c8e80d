"""The demo's budgets: `DemoConfig`, read from a YAML preset (`taosr/configs/demo/<name>.yaml`) or any YAML file.

`taosr demo --preset tiny` reads taosr/configs/demo/tiny.yaml; `--config my.yaml` overrides single settings
of the preset (a nested mapping is merged key by key). The method bench (bench/method.py) starts from
the same presets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import InputError
from ..evaluation.configs import BaselineConfig
from ..prompts import ORDERS
from ..settings import StrictConfig, errors_text, read_yaml, validate
from ..teacher.noise import TeacherNoiseConfig
from ..train.configs import DPOStageConfig, GRPOStageConfig, PretrainConfig, SampleConfig
from .rundir import RunConfig

STAGES = ("baseline", "answer_only", "think_first", "answer_first", "dpo_think_first", "dpo_answer_first", "grpo",
          "grpo_arms", "final")  # the table's stages, in pipeline order
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "demo"  # package data: taosr/configs/demo/


class SFTExtendConfig(StrictConfig):
    """Training an SFT order on until dev stops rising, read by the within-run rule (`converged_within`)."""

    epochs: float = Field(0.0, ge=0, description="Epochs of each extension: a new stage folder (sft_<order>_ext<k>) "
                          "that starts from the dev-best model so far with a fresh warmup and cosine "
                          "schedule at the order's rate; 0 = no extension.")
    max_epochs: float = Field(16.0, gt=0, description="No extension starts once the order has trained this many "
                              "epochs in all.")
    checks: int = Field(2, ge=1, description="Dev evaluations per extension; its start model is a candidate too, so "
                        "an extension that does not beat it on dev hands it on unchanged.")


class DemoConfig(StrictConfig):
    """Budgets of every stage the demo (and the method bench, once per seed) runs."""

    run: RunConfig = Field(default_factory=RunConfig, description="Data, model, prompt and SFT settings.")
    seed: int = Field(0, description="Seed of fine-tuning, sampling and RL (data order, rollouts); the data split "
                      "and the base model stay fixed, so seeds differ only in what the method controls.")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="Base-model pre-training.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="pass@N sampling for DPO pairs.")
    sample_prompts: dict[str, int | None] = Field(
        default_factory=lambda: {"answer_first": None, "think_first": 1024},
        description="Training prompts sampled for DPO pairs, per output order, drawn at random from the whole "
                    "training split (None = all of it). Answer-first samples only the answer span, so all is cheap.")
    dpo: DPOStageConfig = Field(default_factory=DPOStageConfig, description="DPO settings.")
    dpo_by_order: dict[str, dict] = Field(default_factory=lambda: {"think_first": {"pairs": {"chosen": "teacher"}}},
                                          description="Per-output-order overrides of dpo fields.")
    grpo: GRPOStageConfig = Field(default_factory=GRPOStageConfig, description="GRPO settings.")
    grpo_candidates: int = Field(384, description="Training prompts screened by pass@N before GRPO, drawn evenly "
                                 "over the gold levels (grpo.label_stratified).")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="The BERT-style baseline row.")
    sft_by_order: dict[str, dict] = Field(default_factory=dict, description="Per-output-order overrides of run.sft "
                                          "fields, e.g. {'answer_first': {'label_weight': 10}}.")
    chat_template: bool = Field(False, description="Lay the prompt out in the model's chat template (an instruct "
                                "model's user turn, the response as the assistant's); False: the plain layout. "
                                "Fixed with the base model (stored in base/model/taosr_prompt.json).")
    sft_start: dict[str, str] = Field(
        default_factory=dict,
        description="SFT of an output order that starts from another order's SFT model instead of the base "
        "model, e.g. {'answer_first': 'answer_only'}: post-CoT SFT then adds the reasoning to a model that already "
        "predicts the label (a pretrained model learns the label slowly when it is 1 of ~45 loss tokens).")
    controls: bool = Field(False, description="Run a continued-SFT control beside each DPO and GRPO stage: the same "
                           "start model trained with SFT on the same prompts for the same number of examples.")
    control_learning_rate: Literal["stage", "sft"] = Field(
        "stage", description="Learning rate of a continued-SFT control: 'stage' uses the DPO or GRPO stage's own, so "
        "the control differs from that stage in its loss alone; 'sft' restarts at the SFT stage's peak rate, which "
        "on a few hundred prompts pulled the small model 15-25 points below its parent (docs/results.md).")
    dev_checks: int = Field(5, ge=0, description="Dev evaluations per DPO, GRPO and control stage; the dev-best "
                            "step is kept (0 = keep the last step).")
    dev_includes_start: bool = Field(True, description="The stage's start model is a dev candidate too (step 0): "
                                     "a DPO, GRPO or control stage that does not beat its parent on dev keeps "
                                     "the parent's weights, and its dev-best step says 0.")
    dev_limit: int = Field(512, description="Dev pairs used for that selection, drawn at random so their label mix is "
                           "the test split's (think-first generates on them).")
    sft_dev_checks: int = Field(0, ge=0, description="Dev evaluations during each SFT order (and the cross-encoder "
                                "baseline): the dev-best step is kept, so a budget in epochs that overshoots costs "
                                "time, not accuracy (0 = keep the last step).")
    sft_extend: SFTExtendConfig = Field(default_factory=SFTExtendConfig, description="Extend each SFT order while "
                                        "its dev curve is still rising (needs sft_dev_checks).")
    converged_within: float = Field(1.5, ge=0, description="Macro-F1 points: a stage whose dev curve peaks at its "
                                    "last check, at least this far above the check before, was still rising when "
                                    "its budget ran out; the tables mark its row 'dev still rising'.")
    teacher_noise: TeacherNoiseConfig = Field(default_factory=TeacherNoiseConfig,
                                              description="The SFT teacher's error model (0 = the exact rule teacher; "
                                              "DPO's oracle responses always come from the exact teacher).")
    test_limit: int | None = Field(None, ge=1, description="Test pairs every row is read on, as whole queries drawn at "
                                   "random (None = the whole test split; the method bench uses all of it).")

    grpo_arms: dict[str, dict] = Field(
        default_factory=dict, description="More GRPO arms, each a partial grpo override in its own stage folder "
        "(grpo_<arm>), with a control when controls are on, from the post-CoT DPO model "
        "or, with 'order': 'think_first', the think-first one; e.g. {'reasoning': {'label_only': False}}: rollouts "
        "of the whole response (label, then reasoning), reward on the gold label.")
    hallucination_limit: int = Field(0, ge=0, description="Test pairs on which every DPO and GRPO model "
                                     "generate their whole response, for the discriminative-hallucination rate (the "
                                     "answer against its reasoning's conclusion); 0 = not measured there.")
    stop_after: str | None = Field(None, description="Last stage to run (baseline, answer_only, think_first, "
                                   "answer_first, dpo_think_first, dpo_answer_first, grpo, grpo_arms, final); "
                                   "None = all.")

    @field_validator("stop_after")
    @classmethod
    def _known_stage(cls, v: str | None) -> str | None:
        if v is not None and v not in STAGES:
            raise ValueError(f"stop_after {v!r}: one of {', '.join(STAGES)}")
        return v

    @field_validator("sft_start")
    @classmethod
    def _earlier_order(cls, v: dict[str, str]) -> dict[str, str]:
        for order, start in v.items():
            if order not in ORDERS or start not in ORDERS or ORDERS.index(start) >= ORDERS.index(order):
                raise ValueError(f"sft_start {order!r}: {start!r} must be an output order whose SFT runs before it "
                                 f"(the demo trains {', '.join(ORDERS)} in this order)")
        return v

    @model_validator(mode="after")
    def _overrides_are_settings(self) -> DemoConfig:
        """Each per-order override must be valid settings of its stage (known keys, valid values)."""
        for name, base in (("sft_by_order", self.run.sft), ("dpo_by_order", self.dpo)):
            for order, over in getattr(self, name).items():
                if order not in ORDERS:
                    raise ValueError(f"{name}: {order!r} is not an output order ({', '.join(ORDERS)})")
                check_override(base, over, f"{name}.{order}")
        for arm, over in self.grpo_arms.items():
            if over.get("order", "answer_first") not in ("answer_first", "think_first"):
                raise ValueError(f"grpo_arms.{arm}.order: {over['order']!r}: answer_first or think_first (the "
                                 "DPO model it starts from)")
            check_override(self.grpo, {k: v for k, v in over.items() if k != "order"}, f"grpo_arms.{arm}")
        return self


def check_override(base: StrictConfig, over: dict, where: str) -> None:
    """Validate `base` with the partial settings `over` merged in; errors are named `where.<key>`."""
    try:
        type(base).model_validate(merge(base.model_dump(), over))
    except ValidationError as e:
        raise ValueError(errors_text(e, f"{where}.")) from None


def preset_path(preset: str | Path) -> Path:
    """The YAML file of a preset: a path to a .yaml file, or the name of one in taosr/configs/demo/."""
    path = Path(preset)
    return path if path.suffix in (".yaml", ".yml") else PRESET_DIR / f"{preset}.yaml"


def merge(base: dict, over: dict) -> dict:
    """`base` with `over`'s settings on top; mappings are merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_preset(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A preset file's settings; `extends: <preset>` at its top starts from that preset's (merged key by key)."""
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = preset_path(parent) if Path(str(parent)).suffix else PRESET_DIR / f"{parent}.yaml"
    if parent_path in seen or not parent_path.is_file():
        raise InputError(f"{path}: extends {parent!r}, " + ("a cycle" if parent_path in seen else "no such preset"))
    return merge(read_preset(parent_path, (*seen, path)), data)


def load_preset(preset: str | Path, run_name: str, overrides: dict | None = None,
                source: str | Path | None = None) -> DemoConfig:
    """The DemoConfig of a preset (see `preset_path`), with `overrides` (read from the file `source`) merged in, for
    the run `run_name`; a refused setting is an `InputError` naming the files and the key."""
    path = preset_path(preset)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise InputError(f"unknown preset {str(preset)!r}: no {path} (presets: {known})")
    data = merge(read_preset(path), overrides or {})
    cfg = validate(DemoConfig, data, f"{path}{' with --config ' + str(source) if source else ''}")
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": run_name})})


def budgets(cfg: DemoConfig) -> dict:
    """Each stage's budget, as the demo and the method bench print it before they start."""
    return {
        "model": cfg.run.model.name_or_path or "fresh",
        "queries": cfg.run.synth.n_queries,
        "pretrain_steps": cfg.pretrain.max_steps,
        "sft_budget": {o: (f"{e} epochs" if (e := cfg.sft_by_order.get(o, {}).get("epochs", cfg.run.sft.epochs))
                           else f"{cfg.sft_by_order.get(o, {}).get('max_steps', cfg.run.sft.max_steps)} steps")
                       for o in ("answer_only", "think_first", "answer_first")},
        "sft_dev_checks": cfg.sft_dev_checks,
        "sft_extend": (f"{cfg.sft_extend.epochs} epochs while dev rises, up to {cfg.sft_extend.max_epochs}"
                       if cfg.sft_extend.epochs else "none"),
        "baseline": (f"{cfg.baseline.epochs} epochs" if cfg.baseline.max_steps <= 0
                     else f"{cfg.baseline.max_steps} steps"),
        "teacher_error_rate": cfg.teacher_noise.error_rate, "test_limit": cfg.test_limit,
        "sft_batch": cfg.run.sft.batch_size, "sft_start": cfg.sft_start,
        "dpo_sampled_prompts": cfg.sample_prompts, "samples_per_prompt": cfg.sample.n,
        "dpo_steps": cfg.dpo.max_steps, "dpo_batch": cfg.dpo.batch_size,
        "grpo_steps": cfg.grpo.max_steps, "grpo_prompts_per_step": cfg.grpo.prompts_per_step,
        "grpo_group": cfg.grpo.num_generations, "grpo_candidates": cfg.grpo_candidates,
        "controls": cfg.controls, "dev_checks": cfg.dev_checks, "dev_limit": cfg.dev_limit,
    }
