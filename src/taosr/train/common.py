"""What every training stage shares: trainer arguments, resume, saving, and the stage summary.

Each stage (base pre-training, SFT, DPO, GRPO) is a TRL trainer whose output folder holds
`checkpoints/` (the resume points), `stage_config.json` (the config that folder was trained with),
`model/` (the final safetensors model and its tokenizer) and `summary.json`.

Crash safety: a run resumes from the newest *complete* checkpoint (`trainer_state.json`, which the
trainer writes last, is there and readable); a checkpoint cut short by a kill or a full disk is
removed with a warning. The final model is written under a temporary name and renamed to `model/`
when complete (`io.partial_dir` / `io.replace_dir`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from pydantic import BaseModel

from ..errors import InputError
from ..io import partial_dir, replace_dir, write_json, write_text
from ..progress import attach
from ..prompts import PromptConfig, write_prompt
from ..runtime import gpu_available, is_main_process, resolve_bf16

log = logging.getLogger(__name__)


def common_args(out_dir: Path, max_steps: int, seed: int, save_steps: int,
                gradient_checkpointing: bool = False, report_to: str = "none") -> dict:
    """Training arguments every stage shares: device, checkpoints (the resume points), the experiment tracker
    (`report_to`: none | tensorboard | wandb, passed to TRL, which logs where the tracker's own settings say), seeds.

    Gradient checkpointing is off unless asked for: TRL's configs default it to on, which only slows
    small models down.
    """
    return dict(
        output_dir=str(out_dir / "checkpoints"), max_steps=max_steps, use_cpu=not gpu_available(),
        gradient_checkpointing=gradient_checkpointing,
        save_strategy="steps", save_steps=save_steps, save_total_limit=1, report_to=report_to, disable_tqdm=True,
        seed=seed, data_seed=seed,
    )


def sft_arguments(cfg, out_dir: Path, **extra):
    """TRL `SFTConfig` of a next-token stage (SFT, base pre-training): cosine schedule with warm-up.

    `cfg` has the fields of `train.sft.SFTStageConfig` that shape the optimiser (max_steps, batch_size,
    learning_rate, warmup_ratio, weight_decay, bf16, seed, save_steps, gradient_checkpointing).
    """
    from trl import SFTConfig

    return SFTConfig(
        **common_args(out_dir, cfg.max_steps, cfg.seed, cfg.save_steps, cfg.gradient_checkpointing,
                      getattr(cfg, "report_to", "none")),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(cfg.warmup_ratio * cfg.max_steps)),
        weight_decay=cfg.weight_decay,
        bf16=resolve_bf16(cfg.bf16),
        logging_steps=max(1, cfg.max_steps // 30),
        **extra,
    )


def train_and_save(trainer, tokenizer, out_dir: Path, desc: str, prompt_cfg: PromptConfig | None = None) -> float:
    """One rich bar, resume from the newest checkpoint, save model + tokenizer (+ the prompt layout,
    `prompts.PROMPT_FILE`) to `out_dir/model`; wall seconds.

    LoRA adapters are merged into the weights first, so every later stage loads a plain model folder.
    Under a multi-process launch only the main process writes.
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    zero3 = trainer.is_deepspeed_enabled and getattr(plugin, "zero_stage", 0) == 3
    if hasattr(trainer.model, "peft_config") and (trainer.is_fsdp_enabled or zero3):
        raise InputError("LoRA adapters are merged into the saved model, which needs whole weights on each process: "
                         "use configs/accelerate/ddp.yaml or deepspeed_zero2.yaml with --lora-r")
    attach(trainer, desc)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(out_dir, remove_incomplete=True))
    wall = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    main, tmp = trainer.accelerator.is_main_process, partial_dir(out_dir / "model")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
    trainer.accelerator.wait_for_everyone()
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapters in
        model = model.merge_and_unload()
        trainer.model = model
        if main:
            model.save_pretrained(tmp, safe_serialization=True)
    else:
        trainer.save_model(str(tmp))
    if main:
        tokenizer.save_pretrained(tmp)
        if prompt_cfg is not None:
            write_prompt(prompt_cfg, tmp)
    trainer.accelerator.wait_for_everyone()
    if main:
        replace_dir(tmp, out_dir / "model")  # `model/` appears only once it is complete
    trainer.accelerator.wait_for_everyone()
    return wall


def guard_resume(out_dir: Path, cfg: BaseModel) -> None:
    """Resume only the same job: a folder trained with another config is an error, not a silent mix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "stage_config.json"
    now = cfg.model_dump_json(indent=1)
    if path.exists() and path.read_text() != now and latest_checkpoint(out_dir):
        raise InputError(f"{out_dir} holds checkpoints of a different {type(cfg).__name__}; "
                         f"remove the folder (or use another --out) to start over")
    if is_main_process() and (not path.exists() or path.read_text() != now):
        write_text(path, now)  # atomic: another rank never reads a half-written file


def complete_checkpoint(ckpt: Path) -> bool:
    """A checkpoint is complete when its `trainer_state.json` (written after the weights, optimizer and RNG
    state) is there and reads as JSON."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def latest_checkpoint(out_dir: Path, remove_incomplete: bool = False) -> str | None:
    """The newest complete checkpoint in `out_dir/checkpoints` (None when there is none). With
    `remove_incomplete`, the main process deletes the incomplete ones (a save cut short), with a warning."""
    numbered = [(int(p.name.split("-")[-1]), p) for p in (out_dir / "checkpoints").glob("checkpoint-*")
                if p.is_dir() and p.name.split("-")[-1].isdigit()]
    complete = None
    for _, ckpt in sorted(numbered):
        if complete_checkpoint(ckpt):
            complete = ckpt
        elif remove_incomplete and is_main_process():
            log.warning("%s is incomplete (a save cut short): removed; resuming from %s", ckpt,
                        complete or "the start")
            shutil.rmtree(ckpt, ignore_errors=True)
    return str(complete) if complete else None


def write_summary(out_dir: Path, summary: dict) -> None:
    """summary.json of a stage, written once (by the main process) under a multi-process launch."""
    if is_main_process():
        write_json(Path(out_dir) / "summary.json", summary)


def trainable_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
