"""Stage 1: supervised fine-tuning on teacher-written chain of thought, in one of three output orders.

Plain next-token loss on the response only (TRL's SFTTrainer, `completion_mask`). The data are
tokenized here, segment by segment (see prompts.py), so training and serving see identical ids.
Runs under `accelerate launch` unchanged; resumes from the newest checkpoint in its output folder.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTTrainer

from ..io import write_jsonl
from ..modeling import label_token_ids
from ..prompts import PromptConfig, encode_example
from ..records import Record
from ..runtime import is_main_process, world_size
from ..teacher.reasoning import Teacher
from .common import guard_resume, sft_arguments, train_and_save, trainable_params, write_summary
from .configs import SFTStageConfig


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
                  prompt_cfg: PromptConfig, disagreement: str = "drop") -> tuple[Dataset, list[dict], dict]:
    """Tokenized SFT examples, the rejects (pairs the teacher cannot explain, or whose teacher label differs from
    gold under `disagreement="drop"`; never dropped silently) and counts of the teacher's labels."""
    rows, rejects = [], []
    counts = {"teacher_agrees": 0, "teacher_disagrees": 0, "kept_teacher_label": 0, "gold_label_put": 0}
    for r in records:
        reasoning = None
        if order != "answer_only":
            out = teacher.reason(r) if teacher else None
            if out is None:
                rejects.append({"id": r.id, "reason": "teacher gave no reasoning"})
                continue
            counts["teacher_agrees" if out.level == r.label else "teacher_disagrees"] += 1
            if out.level != r.label:
                if disagreement == "drop":
                    rejects.append({"id": r.id, "reason": f"teacher concluded {out.level}, gold {r.label}"})
                    continue
                if disagreement == "keep":
                    r = r.model_copy(update={"label": out.level})
                    counts["kept_teacher_label"] += 1
                else:
                    counts["gold_label_put"] += 1
            reasoning = out.text
        rows.append(encode_example(tokenizer, r, reasoning, order, prompt_cfg))
    return Dataset.from_list(rows), rejects, counts


def run_sft(model, tokenizer, train: list[Record], cfg: SFTStageConfig, out_dir: Path,
            teacher: Teacher | None, prompt_cfg: PromptConfig, callbacks: list | None = None) -> dict:
    """Train, save the final model (safetensors) to `out_dir/model`, and return a summary."""
    guard_resume(out_dir, cfg)
    dataset, rejects, teacher_counts = build_dataset(train, tokenizer, teacher, cfg.order, prompt_cfg,
                                                     cfg.teacher_disagreement)
    if rejects and is_main_process():
        write_jsonl(out_dir / "rejects.jsonl", rejects)
    if not len(dataset):
        raise ValueError(f"sft: no training example left ({len(rejects)} rejects, see {out_dir / 'rejects.jsonl'})")
    cfg = cfg.model_copy(update={"max_steps": cfg.steps_for(len(dataset), world_size())})
    trainer = LabelWeightedSFTTrainer(
        model=model,
        args=sft_arguments(cfg, out_dir, completion_only_loss=True, max_length=None),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora.peft_config(model, tokenizer),
        label_ids=label_token_ids(tokenizer), label_weight=cfg.label_weight, callbacks=callbacks,
    )
    n_train, n_total = trainable_params(trainer.model)
    wall = train_and_save(trainer, tokenizer, out_dir, f"sft {cfg.order}", prompt_cfg)
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    summary = {
        "order": cfg.order, "examples": len(dataset), "rejects": len(rejects), "steps": trainer.state.global_step,
        "epochs": round(trainer.state.global_step * cfg.batch_size * trainer.accelerator.num_processes
                        / max(1, len(dataset)), 3), "teacher": teacher_counts,
        "wall_s": round(wall, 1), "bf16": bool(trainer.args.bf16), "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None, "loss_curve": losses,
        "tokens": int(sum(len(x) for x in dataset["input_ids"])),
        "trainable_params": n_train, "total_params": n_total, "processes": trainer.accelerator.num_processes,
    }
    write_summary(out_dir, summary)
    return summary
