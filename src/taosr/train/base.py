"""Stage 0, the base model: a pretrained checkpoint, or a fresh small model with a short pre-training.

`start_model` loads a local checkpoint (or the `smollm2-135m` weights), or builds a fresh small
model with a byte-level BPE tokenizer trained on the run's own text (`corpus`).

`run_pretrain` (small models only) is a short causal-LM pre-training of a fresh model on catalogue text.

TaoSR1 starts from a pretrained LLM. A model built from a config knows no language at all, and a
small one learns to *compare* a query with an item only after a long plateau at the label prior.
A few hundred steps of next-token loss on the unlabeled prompts
(queries and item texts, no labels, no reasoning) gives it the copy/match circuits a real base model
already has, and then every output order starts from the same base. Skipped for pretrained models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset
from trl import SFTTrainer

from ..io import atomic_dir, write_json
from ..modeling import ModelConfig, build_model, load_model, train_tokenizer
from ..prompts import PromptConfig, encode_prompt, item_segment, query_segment
from ..records import Record
from ..runtime import is_main_process, main_process_first
from ..teacher.reasoning import RuleTeacher
from .common import sft_arguments, train_and_save, write_summary
from .configs import PretrainConfig, SFTStageConfig


def corpus(records: list[Record], prompt_cfg: PromptConfig) -> list[str]:
    """Texts the fresh tokenizer is trained on: prompts and teacher reasoning."""
    teacher = RuleTeacher()
    out = [prompt_cfg.instructions]
    for r in records:
        reasoning = teacher.reason(r)
        out.append(query_segment(r) + item_segment(r, prompt_cfg) + (reasoning.text if reasoning else ""))
    return out


TOKENIZER_RECORD = "taosr_tokenizer.json"  # what a kept tokenizer was trained on


def tokenizer_record(model_cfg: ModelConfig, prompt_cfg: PromptConfig, train: list[Record]) -> dict:
    """What a fresh tokenizer depends on: its vocabulary size, the prompt layout and every training pair."""
    h = hashlib.sha256()
    for r in train:
        h.update(r.model_dump_json().encode() + b"\x1e")
    return {"vocab_size": model_cfg.vocab_size, "instructions": prompt_cfg.instructions, "train_sha256": h.hexdigest()}


def start_model(model_cfg: ModelConfig, prompt_cfg: PromptConfig, tokenizer_dir: Path, train: list[Record]):
    """(model, tokenizer) for the start of training: a local checkpoint, or a new small model whose tokenizer is
    trained on `train` once and kept in `tokenizer_dir` (with `TOKENIZER_RECORD`: a kept tokenizer is reused only
    for the same vocabulary size, prompt and data, and trained again otherwise)."""
    if model_cfg.name_or_path:
        return load_model(model_cfg.name_or_path, new_token_init=model_cfg.new_token_init)
    from transformers import AutoTokenizer

    want = tokenizer_record(model_cfg, prompt_cfg, train)
    with main_process_first():  # under `accelerate launch`: the main process trains and saves it, the others load it
        try:
            kept = json.loads((tokenizer_dir / TOKENIZER_RECORD).read_text(encoding="utf-8")) == want
        except (OSError, ValueError):
            kept = False
        if kept and (tokenizer_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            tokenizer = train_tokenizer(corpus(train, prompt_cfg), model_cfg.vocab_size)
            if is_main_process():
                with atomic_dir(tokenizer_dir) as tmp:
                    tokenizer.save_pretrained(tmp)
                    write_json(tmp / TOKENIZER_RECORD, want)
    return build_model(tokenizer, model_cfg), tokenizer


def run_pretrain(model, tokenizer, records: list[Record], cfg: PretrainConfig, out_dir: Path,
                 prompt_cfg: PromptConfig) -> dict:
    """Next-token loss on every prompt token (labels are never shown). Saves `out_dir/model`."""
    ids = [encode_prompt(tokenizer, r, prompt_cfg) + [tokenizer.eos_token_id] for r in records]
    dataset = Dataset.from_dict({"input_ids": ids})
    stage = SFTStageConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                           learning_rate=cfg.learning_rate, seed=cfg.seed, bf16=cfg.bf16,
                           save_steps=max(cfg.max_steps, 1))
    trainer = SFTTrainer(model=model, args=sft_arguments(stage, out_dir, max_length=None), train_dataset=dataset,
                         processing_class=tokenizer)
    wall = train_and_save(trainer, tokenizer, out_dir, "pretrain base", prompt_cfg)
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    summary = {"steps": trainer.state.global_step, "wall_s": round(wall, 1), "bf16": bool(trainer.args.bf16),
               "loss_first": losses[0][1] if losses else None, "loss_last": losses[-1][1] if losses else None,
               "loss_curve": losses}
    write_summary(out_dir, summary)
    return summary
