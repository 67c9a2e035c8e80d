"""The settings of every training stage, each field defined once with its help text.

`taosr sft | sample | dpo | grpo` offer these fields as flags and in `--config FILE.yaml`
(`taosr.cli.options`); the demo reads them from `taosr/configs/demo/*.yaml`. This module imports no
training library, so the command line starts fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..prompts import ORDERS, OutputOrder
from ..runtime import BF16_HELP
from .lora import LoraSwitch
from .pairs import PairPolicy


class PretrainConfig(BaseModel):
    """Budget of the base-model pre-training (fresh small models only)."""

    max_steps: int = Field(400, description="Optimiser steps; 0 skips the stage.")
    batch_size: int = Field(32, description="Sequences per step.")
    learning_rate: float = Field(2e-3, description="Peak learning rate.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    seed: int = Field(0, description="Data order seed.")


class SFTStageConfig(BaseModel):
    """Stage-1 training budget and optimiser."""

    order: OutputOrder = Field("answer_first", description=f"Output order, one of {ORDERS}.")
    max_steps: int = Field(600, description="Optimiser steps.")
    batch_size: int = Field(32, description="Sequences per step (per process).")
    learning_rate: float = Field(2e-3, description="Peak learning rate (cosine decay, warm-up below).")
    warmup_ratio: float = Field(0.05, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0).")
    label_weight: float = Field(1.0, gt=0, description="Loss weight of the label token relative to the other response "
                                "tokens (1 = plain next-token loss). In post-CoT targets the label is 1 of ~40 tokens; "
                                "a small model then learns the reasoning but not the label.")
    save_steps: int = Field(200, description="Checkpoint every this many steps (resume point).")
    seed: int = Field(0, description="Data order and dropout seed.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")


class SampleConfig(BaseModel):
    """pass@N sampling."""

    n: int = Field(4, ge=1, description="Responses drawn per prompt (the N of pass@N).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(128, description="Longest response.")
    shard_prompts: int = Field(256, description="Prompts per output shard (the resume unit).")
    batch_size: int = Field(64, description="Prompts per generate() call.")
    seed: int = Field(0, description="Base seed; shard k uses seed + k.")
    engine: str = Field("auto", description="auto | transformers | vllm (vllm needs a GPU and the vllm package).")


class DPOStageConfig(BaseModel):
    """Stage-2 DPO hyper-parameters."""

    beta: float | None = Field(
        None, gt=0, description="DPO temperature: how far the policy may move from the reference. None = 2.0 on "
        "answer spans, 0.1 on whole responses (on a label-only preference the optimum sharpens the reference's "
        "label odds to the power 1 + 1/beta, so a small beta overshoots; why these values: docs/results.md).")
    learning_rate: float = Field(5e-5, description="Peak learning rate.")
    span: Literal["answer", "full"] = Field(
        "answer", description="What the preference is on. 'answer': where the answer comes first (answer_first, "
        "answer_only) every response is cut after </answer>, so chosen and rejected differ in the label alone; "
        "think_first responses stay whole (their label comes last). 'full': whole responses everywhere, where "
        "the ~40 reasoning tokens outweigh the one label token in the margin.")
    sft_weight: float | None = Field(None, description="Weight of an NLL term on the chosen response (RPO-style; 0 = "
                                     "plain DPO). None = 1 on whole responses (keeps the chosen likelihood from "
                                     "falling), 0 on answer spans (NLL on a cut response teaches stopping there).")
    max_steps: int = Field(120, description="Optimiser steps.")
    batch_size: int = Field(16, description="Pairs per step.")
    save_steps: int = Field(1000, description="Checkpoint interval (resume point).")
    seed: int = Field(0, description="Seed.")
    pairs: PairPolicy = Field(default_factory=PairPolicy, description="How preference pairs are built.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0); "
                             "the reference is then the base with adapters off.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")


class GRPOStageConfig(BaseModel):
    """Stage-3 GRPO and dynamic-sampling settings."""

    num_generations: int = Field(8, ge=2, description="Rollouts per prompt (the group size G).")
    prompts_per_step: int = Field(4, description="Prompts per optimiser step (batch = prompts x G completions).")
    max_steps: int = Field(60, description="Optimiser steps.")
    learning_rate: float = Field(5e-5, description="Peak learning rate.")
    beta: float = Field(0.02, description="KL coefficient to the reference (0 disables the reference model).")
    temperature: float = Field(1.0, description="Rollout temperature.")
    max_completion_length: int = Field(96, description="Longest rollout, in tokens (think_first, or label_only off).")
    label_only: bool = Field(True, description="Where the answer comes first, roll out only the label and "
                             "</answer> after a prompt that ends in <answer> (as answer-first scoring reads it): the "
                             "reward depends on the label alone, so advantages applied to sampled reasoning or to "
                             "the answer tags would be noise.")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "grpo", description="TRL's loss normalisation: 'grpo' averages each rollout over its own tokens (the "
        "paper's 1/|o_i|), 'dapo' over all tokens of the batch, 'dr_grpo' by a constant.")
    format_weight: float = Field(0.1, description="Weight of the format reward (0 disables it).")
    gamma: int | None = Field(None, description="Offline filter keeps prompts with 0 < correct < gamma out of N "
                              "samples; None means gamma = N, which drops only the all-right and all-wrong prompts.")
    offline_filter: bool = Field(True, description="Apply the pass@N difficulty filter before training.")
    online_mask: bool = Field(True, description="Mask zero-spread groups (raw accuracy) during training.")
    balance_classes: bool = Field(True, description="Down-sample RL prompts to a balanced label mix.")
    eps: float = Field(1e-6, description="Spread below which a group counts as zero-spread.")
    seed: int = Field(0, description="Seed.")
    bf16: bool | None = Field(None, description=BF16_HELP)
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    lora: LoraSwitch = Field(default_factory=LoraSwitch,
                             description="LoRA adapters instead of full fine-tuning (r > 0).")
    use_vllm: bool | None = Field(None, description="Rollouts through TRL's vLLM integration (colocate mode); "
                                  "None = when vLLM and a GPU are present.")
    vllm_gpu_memory_utilization: float = Field(0.3, description="GPU memory share of the colocated vLLM engine.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", exclude=True, description="Experiment tracker TRL logs to (its own settings say where: "
        "TENSORBOARD_LOGGING_DIR, WANDB_PROJECT); the package must be installed. Not part of the stage's settings.")
