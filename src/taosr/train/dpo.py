"""Stage 2b, `taosr dpo`: preference optimisation on the model's own samples (TRL's DPOTrainer).

Pairs come from `taosr.train.pairs.build_pairs` over `taosr sample` output: self-correction pairs (a
correct vs a wrong sample of the same prompt) and oracle pairs (the teacher's correct response vs a
wrong sample when no sample was right). The SFT model is the frozen reference; its log-probs are
precomputed once (cheaper than a second model in memory on CPU).

The pairs reach TRL already tokenized (`tokenize_pairs`): the prompt ids are the ones SFT and scoring
build, and a response cut after </answer> ends there, without the EOS that TRL appends to text
completions. The model's own response goes on after </answer>, so an EOS there is a token the model
gives almost no probability; it dominated the preference margin and the label barely moved.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from ..errors import InputError
from ..io import read_jsonl, write_jsonl
from ..labels import ANSWER_CLOSE, format_answer
from ..prompts import PromptConfig, encode_prompt, prompt_text, response_text
from ..records import Record
from ..runtime import is_main_process, main_process_first, resolve_bf16
from ..teacher.reasoning import Teacher
from .common import common_args, guard_resume, train_and_save, write_summary
from .configs import DPOStageConfig
from .pairs import PairPolicy, Sample, build_pairs

PAIRS_FILE = "pairs.jsonl"  # every preference pair of a DPO stage, in its output folder


def answer_span(text: str) -> str:
    """The response up to and including its first </answer> (the whole text when there is none)."""
    end = text.find(ANSWER_CLOSE)
    return text if end < 0 else text[: end + len(ANSWER_CLOSE)]


def cuts_to_answer(order: str, span: str) -> bool:
    return span == "answer" and order != "think_first"


def make_pairs(samples: pd.DataFrame, records: list[Record], teacher: Teacher, order: str,
               prompt_cfg: PromptConfig, policy: PairPolicy, span: str = "full") -> tuple[list[dict], dict]:
    """Preference rows {prompt, chosen, rejected, kind} and the counts of each kind.

    With `span="answer"` and an answer-first order, every response is cut after </answer> (see
    DPOStageConfig.span); the teacher's response is then the gold answer alone.
    """
    by_id = {r.id: r for r in records}
    short = cuts_to_answer(order, span)

    def oracle(prompt_id: str) -> str | None:
        r = by_id[prompt_id]
        if short:
            return format_answer(r.label)
        reasoning = teacher.reason(r)
        if reasoning is None or reasoning.level != r.label:
            return None
        return response_text(r.label, reasoning.text, order)

    items = [Sample(prompt_id=s.prompt_id, prompt=prompt_text(by_id[s.prompt_id], prompt_cfg),
                    sample_index=int(s.sample_index), text=answer_span(s.text) if short else s.text,
                    parsed=None if pd.isna(s.parsed) else int(s.parsed), gold=int(s.gold), correct=bool(s.correct))
             for s in samples.itertuples()]
    result = build_pairs(items, oracle, policy)
    return result.rows, result.counts


def tokenize_pairs(tokenizer, pairs: list[dict], records: list[Record] | None, prompt_cfg: PromptConfig,
                   eos: bool) -> list[dict]:
    """Pairs as TRL's DPO rows of token ids (prompt_ids, chosen_ids, rejected_ids).

    A pair whose prompt's record is known gets the prompt ids SFT and scoring use (segment by segment, within
    the budgets); other pairs (a pairs file without its records) their prompt text tokenized whole. With `eos`
    each response ends in EOS, as a whole SFT response does."""
    by_id = {r.id: r for r in records or []}
    end = [tokenizer.eos_token_id] if eos else []

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    rows = []
    for p in pairs:
        record = by_id.get(p.get("prompt_id"))
        prompt = encode_prompt(tokenizer, record, prompt_cfg) if record else ids(p["prompt"])
        rows.append({"prompt_ids": prompt, "chosen_ids": ids(p["chosen"]) + end,
                     "rejected_ids": ids(p["rejected"]) + end})
    return rows


class TokenizedDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer on rows that `tokenize_pairs` made: they are used as they are."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def shared_dataset(rows: list[dict], path: Path) -> Dataset:
    """The pairs as an Arrow dataset on disk (written by rank 0). TRL caches the precomputed reference
    log-probs next to the dataset's files; an in-memory dataset would put them in a per-process temp
    folder that the other processes of an `accelerate launch` cannot see."""
    import shutil

    from datasets import load_from_disk

    with main_process_first():
        if is_main_process():
            shutil.rmtree(path, ignore_errors=True)
            Dataset.from_list(rows).save_to_disk(str(path))
    return load_from_disk(str(path))


def run_dpo(model, tokenizer, pairs: list[dict], cfg: DPOStageConfig, out_dir: Path, order: str = "answer_first",
            callbacks: list | None = None, prompt_cfg: PromptConfig | None = None,
            records: list[Record] | None = None) -> dict:
    """Train DPO on `pairs` (their prompts tokenized from `records` where given, see `tokenize_pairs`); saves
    `out_dir/model`; returns losses, reward margins and wall time."""
    guard_resume(out_dir, cfg)
    if not pairs:
        raise InputError("no preference pairs: every sampled prompt was all-correct or had no teacher response")
    short = cuts_to_answer(order, cfg.span)
    sft_weight = cfg.sft_weight if cfg.sft_weight is not None else (0.0 if short else 1.0)
    beta = cfg.beta if cfg.beta is not None else (2.0 if short else 0.1)
    rows = tokenize_pairs(tokenizer, pairs, records, prompt_cfg or PromptConfig(), eos=not short)
    data = shared_dataset(rows, out_dir / "pairs_dataset")
    args = DPOConfig(
        **common_args(out_dir, cfg.max_steps, cfg.seed, cfg.save_steps, cfg.gradient_checkpointing, cfg.report_to),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, cfg.max_steps // 20),
        beta=beta, precompute_ref_log_probs=True,
        loss_type=["sigmoid", "sft"] if sft_weight > 0 else ["sigmoid"],
        loss_weights=[1.0, sft_weight] if sft_weight > 0 else None, max_length=None,
        bf16=resolve_bf16(cfg.bf16), logging_steps=max(1, cfg.max_steps // 20),
    )
    trainer = TokenizedDPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=cfg.lora.peft_config(model, tokenizer), callbacks=callbacks)
    wall = train_and_save(trainer, tokenizer, out_dir, "dpo", prompt_cfg)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "pairs": len(pairs), "sft_weight": sft_weight, "beta": beta, "steps": trainer.state.global_step,
        "wall_s": round(wall, 1), "bf16": bool(trainer.args.bf16),
        "loss_curve": [(h["step"], h["loss"]) for h in logs],
        "margin_curve": [(h["step"], h.get("rewards/margins")) for h in logs],
    }
    write_summary(out_dir, summary)
    return summary


def run_dpo_stage(model, tokenizer, samples: pd.DataFrame, records: list[Record], teacher: Teacher,
                  cfg: DPOStageConfig, out_dir: Path, order: str = "answer_first",
                  prompt_cfg: PromptConfig | None = None, callbacks: list | None = None) -> tuple[dict, dict]:
    """Stage 2b as `taosr dpo` and the demo run it: preference pairs from `taosr sample` output (all of them
    written to `out_dir/pairs.jsonl`), then DPO. Returns the training summary and the pair counts."""
    prompt_cfg = prompt_cfg or PromptConfig()
    pairs, counts = make_pairs(samples, records, teacher, order, prompt_cfg, cfg.pairs, cfg.span)
    if is_main_process():
        write_jsonl(Path(out_dir) / PAIRS_FILE, pairs)
    return run_dpo(model, tokenizer, pairs, cfg, out_dir, order, callbacks, prompt_cfg, records), counts


def pair_prompt_ids(out_dir: Path) -> set[str]:
    """Ids of the prompts a finished DPO stage built pairs for (read from its pairs.jsonl)."""
    return {p["prompt_id"] for p in read_jsonl(Path(out_dir) / PAIRS_FILE)}
