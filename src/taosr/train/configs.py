"""The settings of every training stage, each field defined once with its help text.

`taosr sft | sample | dpo | grpo` offer these fields as flags and in `--config FILE.yaml`
(`taosr.cli.options`); the demo reads them from `taosr/configs/demo/*.yaml`. This module imports no
training library, so the command line starts fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..prompts import ORDERS, OutputOrder
from ..runtime import BF16_HELP, Engine
from ..settings import Count, Seed, StrictConfig
from .lora import LoraSwitch
from .pairs import PairPolicy


class PretrainConfig(StrictConfig):
    """Budget of the base-model pre-training (fresh small models only)."""

    max_steps: int = Field(400, ge=0, description="Optimiser steps; 0 skips the stage.")
    batch_size: Count = Field(32, description="Sequences per step.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    seed: Seed = Field(0, description="Data order seed.")


class SFTStageConfig(StrictConfig):
    """Stage-1 training budget and optimiser."""

    order: OutputOrder = Field("answer_first", description=f"Output order, one of {ORDERS}.")
    max_steps: Count = Field(600, description="Optimiser steps (used when epochs is not set).")
    epochs: float | None = Field(None, gt=0, description="Budget in passes over the training examples; replaces "
                                 "max_steps (steps = epochs x examples / batch size), so orders and data sizes "
                                 "train under the same rule.")
    batch_size: Count = Field(32, description="Sequences per step (per process).")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (cosine decay, warm-up below).")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0).")
    label_weight: float = Field(1.0, gt=0, description="Loss weight of the label token relative to the other response "
                                "tokens (1 = plain next-token loss). In post-CoT targets the label is 1 of ~40 tokens; "
                                "a small model then learns the reasoning but not the label.")
    teacher_disagreement: Literal["drop", "keep", "gold"] = Field(
        "drop", description="Reasoning whose label differs from the gold label: 'drop' lists the pair as a reject "
        "(rejection sampling), 'keep' trains on the teacher's reasoning and its label (an unfiltered teacher), "
        "'gold' keeps the reasoning and puts the gold label after it.")
    save_steps: Count = Field(200, description="Checkpoint every this many steps (resume point).")
    seed: Seed = Field(0, description="Data order and dropout seed.")

    def steps_for(self, examples: int, processes: int = 1) -> int:
        """Optimiser steps of this budget on `examples` training examples."""
        if self.epochs is None:
            return self.max_steps
        return max(1, -(-int(self.epochs * examples) // (self.batch_size * processes)))
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")


class SampleConfig(StrictConfig):
    """pass@N sampling."""

    n: int = Field(4, ge=1, description="Responses drawn per prompt (the N of pass@N).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: Count = Field(128, description="Longest response.")
    shard_prompts: Count = Field(256, description="Prompts per output shard (the resume unit).")
    batch_size: Count = Field(64, description="Prompts per generate() call.")
    seed: Seed = Field(0, description="Base seed; shard k uses seed + k.")
    engine: Engine = Field("auto", description="auto | transformers | vllm (vllm needs a GPU and the vllm package).")


class DPOStageConfig(StrictConfig):
    """Stage-2 DPO hyper-parameters."""

    beta: float | None = Field(
        None, gt=0, description="DPO temperature: how far the policy may move from the reference. None = 2.0 on "
        "answer spans, 0.1 on whole responses (on a label-only preference the optimum sharpens the reference's "
        "label odds to the power 1 + 1/beta, so a small beta overshoots; why these values: docs/results.md).")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    span: Literal["answer", "full"] = Field(
        "answer", description="What the preference is on. 'answer': where the answer comes first (answer_first, "
        "answer_only) every response is cut after </answer>, so chosen and rejected differ in the label alone; "
        "think_first responses stay whole (their label comes last). 'full': whole responses everywhere, where "
        "the ~40 reasoning tokens outweigh the one label token in the margin.")
    sft_weight: float | None = Field(None, ge=0, description="Weight of an NLL term on the chosen response (RPO-style; "
                                     "0 = plain DPO). None = 1 on whole responses (keeps the chosen likelihood from "
                                     "falling), 0 on answer spans (NLL on a cut response teaches stopping there).")
    max_steps: Count = Field(120, description="Optimiser steps.")
    batch_size: Count = Field(16, description="Pairs per step.")
    save_steps: Count = Field(1000, description="Checkpoint interval (resume point).")
    seed: Seed = Field(0, description="Seed.")
    pairs: PairPolicy = Field(default_factory=PairPolicy, description="How preference pairs are built.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0); "
                             "the reference is then the base with adapters off.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")


class GRPOStageConfig(StrictConfig):
    """Stage-3 GRPO and dynamic-sampling settings."""

    num_generations: int = Field(8, ge=2, description="Rollouts per prompt (the group size G).")
    prompts_per_step: Count = Field(4, description="Prompts per optimiser step (batch = prompts x G completions).")
    max_steps: Count = Field(60, description="Optimiser steps.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    beta: float = Field(0.02, ge=0, description="KL coefficient to the reference (0 disables the reference model).")
    temperature: float = Field(1.0, gt=0, description="Rollout temperature.")
    max_completion_length: Count = Field(96, description="Longest rollout, in tokens (think_first, or label_only off).")
    label_only: bool = Field(True, description="Where the answer comes first, roll out only the label and "
                             "</answer> after a prompt that ends in <answer> (as answer-first scoring reads it): the "
                             "reward depends on the label alone, so advantages applied to sampled reasoning or to "
                             "the answer tags would be noise.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "grpo", description="TRL's loss normalisation: 'grpo' averages each rollout over its own tokens (the "
        "paper's 1/|o_i|), 'dapo' over all tokens of the batch, 'dr_grpo' by a constant.")
    format_weight: float = Field(0.1, ge=0, description="Weight of the format reward (0 disables it).")
    gamma: int | None = Field(None, ge=1, description="Offline filter keeps prompts with 0 < correct < gamma out of N "
                              "samples; None means gamma = N, which drops only the all-right and all-wrong prompts.")
    offline_filter: bool = Field(True, description="Apply the pass@N difficulty filter before training.")
    online_mask: bool = Field(True, description="Mask zero-spread groups (raw accuracy) during training.")
    balance_classes: bool = Field(True, description="Balance the RL prompts' label mix (see balance_mode).")
    balance_mode: Literal["downsample", "oversample"] = Field(
        "oversample", description="'oversample' repeats the prompts of the rarer levels until every level has as "
        "many as the most common one (no mixed prompt is thrown away); 'downsample' keeps as many of each level as "
        "the rarest has (the paper's balanced set, which left a few prompts when one level is rare).")
    eps: float = Field(1e-6, ge=0, description="Spread below which a group counts as zero-spread.")
    seed: Seed = Field(0, description="Seed.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0).")
    use_vllm: bool | None = Field(None, description="Rollouts through TRL's vLLM integration (colocate mode); "
                                  "None = when vLLM and a GPU are present.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1,
                                               description="GPU memory share of the colocated vLLM engine.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")
