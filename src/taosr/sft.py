"""Stage 1: supervised fine-tuning on teacher-written chain of thought, in one of three output orders.

Plain next-token loss on the response only (TRL's SFTTrainer, `completion_mask`). The data are
tokenized here, segment by segment (see prompts.py), so training and serving see identical ids.
Runs under `accelerate launch` unchanged; resumes from the newest checkpoint in its output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from datasets import Dataset
from pydantic import BaseModel, Field
from trl import SFTConfig, SFTTrainer

from .progress import attach
from .prompts import ORDERS, OutputOrder, PromptConfig, encode_example
from .records import Record
from .teacher import Teacher


class SFTStageConfig(BaseModel):
    """Stage-1 training budget and optimiser."""

    order: OutputOrder = Field("answer_first", description=f"Output order, one of {ORDERS}.")
    max_steps: int = Field(600, description="Optimiser steps.")
    batch_size: int = Field(32, description="Sequences per step (per process).")
    learning_rate: float = Field(2e-3, description="Peak learning rate (cosine decay, warm-up below).")
    warmup_ratio: float = Field(0.05, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    bf16: bool = Field(False, description="bf16 autocast (CPU with AVX512_BF16 or GPU). fp32 is reproducible.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (large models only).")
    save_steps: int = Field(200, description="Checkpoint every this many steps (resume point).")
    seed: int = Field(0, description="Data order and dropout seed.")


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


def common_args(out_dir: Path, max_steps: int, seed: int, save_steps: int) -> dict:
    """Training arguments every stage shares: device, checkpoints (the resume points), no reporters, seeds."""
    return dict(
        output_dir=str(out_dir / "checkpoints"), max_steps=max_steps, use_cpu=not _has_gpu(),
        save_strategy="steps", save_steps=save_steps, save_total_limit=1, report_to="none", disable_tqdm=True,
        seed=seed, data_seed=seed,
    )


def train_and_save(trainer, tokenizer, out_dir: Path, desc: str) -> float:
    """One rich bar, resume from the newest checkpoint, save model + tokenizer to `out_dir/model`; wall seconds."""
    attach(trainer, desc)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir))
    wall = time.perf_counter() - t0
    trainer.save_model(str(out_dir / "model"))
    tokenizer.save_pretrained(out_dir / "model")
    return wall


def train_args(cfg: SFTStageConfig, out_dir: Path, **extra) -> SFTConfig:
    return SFTConfig(
        **common_args(out_dir, cfg.max_steps, cfg.seed, cfg.save_steps),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(cfg.warmup_ratio * cfg.max_steps)),
        weight_decay=cfg.weight_decay,
        bf16=cfg.bf16,
        logging_steps=max(1, cfg.max_steps // 30),
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}),
        **extra,
    )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def guard_resume(out_dir: Path, cfg: BaseModel) -> None:
    """Resume only the same job: a folder trained with another config is an error, not a silent mix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "stage_config.json"
    now = cfg.model_dump_json(indent=1)
    if path.exists() and path.read_text() != now and latest_checkpoint(out_dir):
        raise ValueError(f"{out_dir} holds checkpoints of a different {type(cfg).__name__}; "
                         f"remove the folder (or use another --out) to start over")
    path.write_text(now)


def latest_checkpoint(out_dir: Path) -> str | None:
    ckpts = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def run_sft(model, tokenizer, train: list[Record], cfg: SFTStageConfig, out_dir: Path,
            teacher: Teacher | None, prompt_cfg: PromptConfig) -> dict:
    """Train, save the final model (safetensors) to `out_dir/model`, and return a summary."""
    guard_resume(out_dir, cfg)
    dataset, rejects = build_dataset(train, tokenizer, teacher, cfg.order, prompt_cfg)
    if rejects:
        with (out_dir / "rejects.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rejects)
    trainer = SFTTrainer(
        model=model,
        args=train_args(cfg, out_dir, completion_only_loss=True, max_length=None),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    wall = train_and_save(trainer, tokenizer, out_dir, f"sft {cfg.order}")
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    summary = {
        "order": cfg.order, "examples": len(dataset), "rejects": len(rejects), "steps": trainer.state.global_step,
        "wall_s": round(wall, 1), "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None, "loss_curve": losses,
        "tokens": int(sum(len(x) for x in dataset["input_ids"])),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
