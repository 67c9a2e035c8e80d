"""Stage 1: supervised fine-tuning on teacher-written chain of thought, in one of three output orders.

Plain next-token loss on the response only (TRL's SFTTrainer, `completion_mask`). The data are
tokenized here, segment by segment (see prompts.py), so training and serving see identical ids.
Runs under `accelerate launch` unchanged; resumes from the newest checkpoint in its output folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from datasets import Dataset
from pydantic import BaseModel, Field
from trl import SFTConfig, SFTTrainer

from .progress import attach
from .prompts import ORDERS, OutputOrder, PromptConfig, encode_example
from .records import Record
from .scale import BF16_HELP, LoraSwitch, gpu_available, is_main_process, resolve_bf16, trainable_params, write_summary
from .teacher import Teacher


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
    lora: LoraSwitch = Field(default_factory=LoraSwitch, description="LoRA adapters instead of full fine-tuning (r > 0).")
    label_weight: float = Field(1.0, gt=0, description="Loss weight of the label token relative to the other response "
                                "tokens (1 = plain next-token loss). In post-CoT targets the label is 1 of ~40 tokens; "
                                "a small model then learns the reasoning but not the label (measured: docs/results.md).")
    save_steps: int = Field(200, description="Checkpoint every this many steps (resume point).")
    seed: int = Field(0, description="Data order and dropout seed.")


def weighted_response_loss(logits, labels, label_ids: list[int], label_weight: float):
    """Next-token loss over the response with the label token counted `label_weight` times.

    logits (B, T, V); labels (B, T) with -100 outside the response. Returns a scalar: the weighted
    mean of the per-token losses (label_weight = 1 gives the plain mean over response tokens).
    """
    import torch
    import torch.nn.functional as F

    target = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target.clamp(min=0), reduction="none")  # (B, T-1)
    is_label = torch.isin(target, torch.tensor(label_ids, device=target.device))  # (B, T-1)
    w = (target != -100).float() * (1.0 + (label_weight - 1.0) * is_label.float())  # (B, T-1)
    return (nll * w).sum() / w.sum().clamp(min=1.0)


class LabelWeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose response loss counts the label token `label_weight` times (TRL's own loss when 1)."""

    def __init__(self, *args, label_ids: list[int], label_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_ids, self.label_weight = label_ids, label_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.label_weight == 1.0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False)
        # this process's weighted mean; under DDP the processes' means are averaged
        loss = weighted_response_loss(outputs.logits, inputs["labels"], self.label_ids, self.label_weight)
        return (loss, outputs) if return_outputs else loss


def build_dataset(records: list[Record], tokenizer, teacher: Teacher | None, order: str,
                  prompt_cfg: PromptConfig) -> tuple[Dataset, list[dict]]:
    """Tokenized SFT examples; pairs the teacher cannot explain are returned as rejects, not dropped silently."""
    rows, rejects = [], []
    for r in records:
        reasoning = None
        if order != "answer_only":
            out = teacher.reason(r) if teacher else None
            if out is None or out.level != r.label:
                why = "teacher gave no reasoning" if out is None else f"teacher concluded {out.level}, gold {r.label}"
                rejects.append({"id": r.id, "reason": why})
                continue
            reasoning = out.text
        rows.append(encode_example(tokenizer, r, reasoning, order, prompt_cfg))
    return Dataset.from_list(rows), rejects


def common_args(out_dir: Path, max_steps: int, seed: int, save_steps: int, gradient_checkpointing: bool = False) -> dict:
    """Training arguments every stage shares: device, checkpoints (the resume points), no reporters, seeds.

    Gradient checkpointing is off unless asked for: TRL's configs default it to on, which only slows
    small models down (measured: docs/results.md).
    """
    return dict(
        output_dir=str(out_dir / "checkpoints"), max_steps=max_steps, use_cpu=not gpu_available(),
        gradient_checkpointing=gradient_checkpointing,
        save_strategy="steps", save_steps=save_steps, save_total_limit=1, report_to="none", disable_tqdm=True,
        seed=seed, data_seed=seed,
    )


def train_and_save(trainer, tokenizer, out_dir: Path, desc: str) -> float:
    """One rich bar, resume from the newest checkpoint, save model + tokenizer to `out_dir/model`; wall seconds.

    LoRA adapters are merged into the weights first, so every later stage loads a plain model folder.
    Under a multi-process launch only the main process writes.
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    zero3 = trainer.is_deepspeed_enabled and getattr(plugin, "zero_stage", 0) == 3
    if hasattr(trainer.model, "peft_config") and (trainer.is_fsdp_enabled or zero3):
        raise ValueError("LoRA adapters are merged into the saved model, which needs whole weights on each process: "
                         "use configs/accelerate/ddp.yaml or deepspeed_zero2.yaml with --lora-r")
    attach(trainer, desc)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    wall = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters in
        model = model.merge_and_unload()
        trainer.model = model
        if trainer.accelerator.is_main_process:
            model.save_pretrained(out_dir / "model", safe_serialization=True)
    else:
        trainer.save_model(str(out_dir / "model"))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out_dir / "model")
    trainer.accelerator.wait_for_everyone()
    return wall


def train_args(cfg: SFTStageConfig, out_dir: Path, **extra) -> SFTConfig:
    return SFTConfig(
        **common_args(out_dir, cfg.max_steps, cfg.seed, cfg.save_steps, cfg.gradient_checkpointing),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(cfg.warmup_ratio * cfg.max_steps)),
        weight_decay=cfg.weight_decay,
        bf16=resolve_bf16(cfg.bf16),
        logging_steps=max(1, cfg.max_steps // 30),
        **extra,
    )


def guard_resume(out_dir: Path, cfg: BaseModel) -> None:
    """Resume only the same job: a folder trained with another config is an error, not a silent mix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "stage_config.json"
    now = cfg.model_dump_json(indent=1)
    if path.exists() and path.read_text() != now and latest_checkpoint(out_dir):
        raise ValueError(f"{out_dir} holds checkpoints of a different {type(cfg).__name__}; "
                         f"remove the folder (or use another --out) to start over")
    if is_main_process() and (not path.exists() or path.read_text() != now):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(now)
        os.replace(tmp, path)  # atomic: another rank never reads a half-written file


def latest_checkpoint(out_dir: Path) -> str | None:
    ckpts = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def run_sft(model, tokenizer, train: list[Record], cfg: SFTStageConfig, out_dir: Path,
            teacher: Teacher | None, prompt_cfg: PromptConfig, callbacks: list | None = None) -> dict:
    """Train, save the final model (safetensors) to `out_dir/model`, and return a summary."""
    guard_resume(out_dir, cfg)
    dataset, rejects = build_dataset(train, tokenizer, teacher, cfg.order, prompt_cfg)
    if rejects and is_main_process():
        with (out_dir / "rejects.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rejects)
    from .modeling import label_token_ids

    trainer = LabelWeightedSFTTrainer(
        model=model,
        args=train_args(cfg, out_dir, completion_only_loss=True, max_length=None),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora.peft_config(model, tokenizer),
        label_ids=label_token_ids(tokenizer), label_weight=cfg.label_weight, callbacks=callbacks,
    )
    n_train, n_total = trainable_params(trainer.model)
    wall = train_and_save(trainer, tokenizer, out_dir, f"sft {cfg.order}")
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    summary = {
        "order": cfg.order, "examples": len(dataset), "rejects": len(rejects), "steps": trainer.state.global_step,
        "wall_s": round(wall, 1), "bf16": bool(trainer.args.bf16), "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None, "loss_curve": losses,
        "tokens": int(sum(len(x) for x in dataset["input_ids"])),
        "trainable_params": n_train, "total_params": n_total, "processes": trainer.accelerator.num_processes,
    }
    write_summary(out_dir, summary)
    return summary
