"""Stage 3, `taosr grpo`: GRPO with a label-accuracy reward and difficulty-based dynamic sampling.

TRL's GRPOTrainer does the rollouts, group-normalised advantages, clipped objective and KL. What
TRL lacks, and this module adds:

1. offline difficulty filter: from pass@N statistics of the current policy keep prompts with
   0 < #correct < gamma (all-right prompts teach nothing, all-wrong ones only noise);
2. class balance: down-sample the kept prompts to equal label counts (the paper: the more even the
   mix, the better), logging the coefficient of variation of the label mix before and after;
3. online masking: a group whose *raw accuracy* rewards have no spread (all right or all wrong,
   compared with `eps`) gets zero loss weight, and its tokens leave the loss normaliser, so it does
   not dilute the groups that carry signal (TRL's "dapo" loss divides by `num_items_in_batch`).

Every decision is counted: prompts dropped as too easy / too hard / by balancing, groups masked per step.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from ..errors import InputError
from ..generation import strip_special
from ..io import write_json
from ..labels import ANSWER_OPEN, parse_response
from ..prompts import PromptConfig, answer_prefix_ids, answer_span_length, prompt_text
from ..records import Record
from ..runtime import is_main_process, resolve_bf16, resolve_engine
from .common import common_args, guard_resume, train_and_save, write_summary
from .configs import GRPOStageConfig

# ---------------------------------------------------------------- reward


def accuracy_reward(completions: list[str], gold: list[int], **_) -> list[float]:
    """1.0 when the completion's parsed label equals the gold label, else 0.0 (same parser as eval)."""
    return [1.0 if parse_response(c).level == int(g) else 0.0 for c, g in zip(completions, gold)]


def format_reward(completions: list[str], **_) -> list[float]:
    """Small shaping term: 1.0 when the response has exactly one well-formed answer, else 0.0."""
    return [1.0 if parse_response(c).ok else 0.0 for c in completions]


class TokenReward:
    """Wraps a text reward for GRPOTrainer: TRL decodes completions with `skip_special_tokens=True`,
    which deletes our label and tag tokens, so this re-decodes `completion_ids` keeping them. `prefix` is
    the part of the response that sits in the prompt (see `rollout_prefix`); the reward sees it too."""

    def __init__(self, fn, tokenizer, prefix: str = ""):
        self.fn, self.tok, self.prefix, self.__name__ = fn, tokenizer, prefix, fn.__name__

    def __call__(self, completions, completion_ids=None, **kw) -> list[float]:
        if completion_ids is not None:
            texts = self.tok.batch_decode(completion_ids, skip_special_tokens=False)
            completions = [strip_special(t, self.tok) for t in texts]
        return self.fn([self.prefix + c for c in completions], **kw)


# ---------------------------------------------------------------- offline selection


SELECTION_FILE = "selection.json"  # the RL prompts a GRPO stage trained on, and the filter's counts


def label_mix_cv(labels: list[int]) -> float:
    """Coefficient of variation of the label counts over levels 1-4 (0 = perfectly balanced)."""
    counts = np.array([Counter(labels).get(lv, 0) for lv in (1, 2, 3, 4)], dtype=float)
    return float(counts.std() / counts.mean()) if counts.mean() > 0 else 0.0


def label_stratified(records: list[Record], n: int, seed: int = 0) -> list[Record]:
    """Up to `n` records drawn round-robin over the gold levels: as even as the pool allows (a rare level
    gives all it has). Picks GRPO candidates so that class balancing after the difficulty filter does
    not shrink the RL set to a handful (level 3 is 5% of the data)."""
    by_level: dict[int, list[Record]] = {}
    for r in records:
        by_level.setdefault(r.label, []).append(r)
    rng = random.Random(seed)
    for pool in by_level.values():
        rng.shuffle(pool)
    out: list[Record] = []
    while len(out) < n and any(by_level.values()):
        for lv in sorted(by_level):
            if by_level[lv] and len(out) < n:
                out.append(by_level[lv].pop())
    return out


def select_prompts(records: list[Record], samples: pd.DataFrame | None,
                   cfg: GRPOStageConfig) -> tuple[list[Record], dict]:
    """Offline difficulty filter then class balancing; returns the RL prompts and the counts."""
    stats: dict = {"prompts_in": len(records), "cv_before": label_mix_cv([r.label for r in records])}
    kept = list(records)
    if cfg.offline_filter and samples is not None:
        correct = samples.groupby("prompt_id")["correct"].sum().astype(int).to_dict()
        n = int(samples.groupby("prompt_id").size().min())
        gamma = cfg.gamma if cfg.gamma is not None else n
        easy = [r for r in kept if correct.get(r.id, 0) >= gamma]
        hard = [r for r in kept if correct.get(r.id, 0) == 0]
        unsampled = [r for r in kept if r.id not in correct]
        kept = [r for r in kept if r.id in correct and 0 < correct[r.id] < gamma]
        stats.update(dropped_too_easy=len(easy), dropped_too_hard=len(hard), dropped_unsampled=len(unsampled),
                     gamma=gamma, samples_per_prompt=n)
    stats["distinct_per_level"] = dict(sorted(Counter(r.label for r in kept).items()))
    if cfg.balance_classes and kept:
        by_level: dict[int, list[Record]] = {}
        for r in kept:
            by_level.setdefault(r.label, []).append(r)
        rng = random.Random(cfg.seed)
        if cfg.balance_mode == "downsample":
            m = min(len(v) for v in by_level.values())
            balanced = [r for lv in sorted(by_level) for r in rng.sample(by_level[lv], m)]
        else:  # every level as many rows as the most common one: rarer levels' prompts cycle in a shuffled order
            m = max(len(v) for v in by_level.values())
            balanced = []
            for lv in sorted(by_level):
                pool = rng.sample(by_level[lv], len(by_level[lv]))
                balanced += [pool[i % len(pool)] for i in range(m)]
        stats["dropped_balance"] = len({r.id for r in kept}) - len({r.id for r in balanced})
        kept = balanced
    rng = random.Random(cfg.seed + 1)
    rng.shuffle(kept)
    stats.update(prompts_out=len(kept), labels_out=dict(sorted(Counter(r.label for r in kept).items())),
                 cv_after=label_mix_cv([r.label for r in kept]))
    return kept, stats


# ---------------------------------------------------------------- online masking


def zero_spread_mask(acc: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """acc: (groups*G,) raw accuracy rewards -> keep: (groups*G,) bool, False for rows of zero-spread groups."""
    grouped = acc.view(-1, group_size)  # (groups, G)
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values  # (groups,)
    return (spread > eps).repeat_interleave(group_size)  # (groups*G,)


def apply_group_mask(output: dict, keep: torch.Tensor) -> dict:
    """Zero the loss weight of masked rows and recount the normaliser over kept tokens only.

    output["completion_mask"]: (b, T) 0/1; output["advantages"]: (b,); keep: (b,) bool (local rows).
    """
    keep_f = keep.to(output["completion_mask"].dtype)
    output["completion_mask"] = output["completion_mask"] * keep_f[:, None]  # (b, T)
    output["advantages"] = output["advantages"] * keep.to(output["advantages"].dtype)  # (b,)
    return output


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose zero-spread groups contribute no gradient and no normaliser tokens."""

    def __init__(self, *args, group_eps: float = 1e-6, online_mask: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_eps, self.online_mask = group_eps, online_mask
        self._last_acc: torch.Tensor | None = None
        self.mask_log: list[dict] = []  # one entry per generation batch

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_acc = rewards[:, 0].detach().clone()  # column 0 is accuracy_reward (all processes)
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training and self._last_acc is not None:
            keep_all = zero_spread_mask(self._last_acc, self.num_generations, self.group_eps)
            n_groups = keep_all.numel() // self.num_generations
            masked = int(n_groups - keep_all.view(-1, self.num_generations)[:, 0].sum())
            self.mask_log.append({"step": self.state.global_step, "groups": n_groups, "zero_spread": masked})
            if self.online_mask:
                b = output["completion_mask"].shape[0]
                start = self.accelerator.process_index * b
                output = apply_group_mask(output, keep_all[start:start + b].to(output["completion_mask"].device))
                kept_tokens = output["completion_mask"].sum()
                output["num_items_in_batch"] = self.accelerator.gather(kept_tokens).sum()
        return output


# ---------------------------------------------------------------- training


def vllm_args(cfg: GRPOStageConfig) -> dict:
    """GRPOConfig arguments for rollouts on vLLM (TRL's colocate mode: the engine shares the trainer's GPU)."""
    engine = resolve_engine({None: "auto", True: "vllm", False: "transformers"}[cfg.use_vllm])
    if engine != "vllm":
        return {"use_vllm": False}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}


def completion_budget(tokenizer, cfg: GRPOStageConfig, order: str) -> int:
    """Response length to sample from a bare prompt: the answer span's token count when label_only applies,
    else max_completion_length (the pass@N difficulty filter samples whole answer spans)."""
    if cfg.label_only and order != "think_first":
        return answer_span_length(tokenizer)
    return cfg.max_completion_length


def rollout_prefix(cfg: GRPOStageConfig, order: str) -> str:
    """Text appended to every GRPO prompt. Label-only rollouts start after `<answer>`, so the first sampled
    token is the label, conditioned as answer-first scoring conditions it. Rolling out `<answer>` as well
    let early steps move mass off the answer format (measured: docs/results.md), after which every group
    is all-wrong and carries no signal."""
    return ANSWER_OPEN if cfg.label_only and order != "think_first" else ""


def rollout_length(tokenizer, cfg: GRPOStageConfig, order: str) -> int:
    """Tokens each rollout generates after the prompt and its prefix."""
    prefix = len(answer_prefix_ids(tokenizer)) if rollout_prefix(cfg, order) else 0
    return completion_budget(tokenizer, cfg, order) - prefix


def run_grpo(model, tokenizer, prompts: list[Record], cfg: GRPOStageConfig, out_dir: Path,
             prompt_cfg: PromptConfig, order: str = "answer_first", callbacks: list | None = None) -> dict:
    """Train with GRPO on `prompts` (already selected); saves `out_dir/model`."""
    guard_resume(out_dir, cfg)
    if not prompts:
        raise InputError("no GRPO prompts left after the difficulty filter and class balancing")
    prefix = rollout_prefix(cfg, order)
    data = Dataset.from_list([{"prompt": prompt_text(r, prompt_cfg) + prefix, "gold": int(r.label)} for r in prompts])
    funcs, weights = [TokenReward(accuracy_reward, tokenizer, prefix)], [1.0]
    if cfg.format_weight > 0:
        funcs.append(TokenReward(format_reward, tokenizer, prefix))
        weights.append(cfg.format_weight)
    args = GRPOConfig(
        **common_args(out_dir, cfg.max_steps, cfg.seed, max(cfg.max_steps, 1), cfg.gradient_checkpointing,
                      cfg.report_to),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations, learning_rate=cfg.learning_rate, beta=cfg.beta,
        temperature=cfg.temperature, max_completion_length=rollout_length(tokenizer, cfg, order),
        reward_weights=weights, loss_type=cfg.loss_type, bf16=resolve_bf16(cfg.bf16), logging_steps=1,
        log_completions=False,
        **vllm_args(cfg),
    )
    trainer = DynamicSamplingGRPOTrainer(
        model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tokenizer, group_eps=cfg.eps,
        online_mask=cfg.online_mask,
        peft_config=cfg.lora.peft_config(model, tokenizer), callbacks=callbacks,
    )
    wall = train_and_save(trainer, tokenizer, out_dir, "grpo", prompt_cfg)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    zero = [m["zero_spread"] / max(m["groups"], 1) for m in trainer.mask_log]
    summary = {
        "prompts": len(prompts), "steps": trainer.state.global_step, "wall_s": round(wall, 1),
        "bf16": bool(trainer.args.bf16),
        "reward_curve": [(h["step"], h.get("rewards/accuracy_reward/mean")) for h in logs],
        "mean_accuracy_reward": (float(np.mean([h.get("rewards/accuracy_reward/mean", 0) for h in logs]))
                                 if logs else None),
        "frac_zero_spread_groups": float(np.mean(zero)) if zero else None,
        "groups_masked": int(sum(m["zero_spread"] for m in trainer.mask_log)),
        "groups_total": int(sum(m["groups"] for m in trainer.mask_log)),
        "online_mask": cfg.online_mask, "vllm": bool(args.use_vllm), "loss_type": cfg.loss_type,
        "completion_tokens": args.max_completion_length, "rollout_prefix": prefix,
    }
    write_summary(out_dir, summary)
    return summary


def run_grpo_stage(model, tokenizer, candidates: list[Record], samples: pd.DataFrame | None, cfg: GRPOStageConfig,
                   out_dir: Path, prompt_cfg: PromptConfig, order: str = "answer_first",
                   callbacks: list | None = None) -> tuple[dict, dict]:
    """Stage 3 as `taosr grpo` and the demo run it: the difficulty filter and class balancing over `candidates`
    (with pass@N `samples` of this policy, or none), the chosen prompts written to `out_dir/selection.json`,
    then GRPO. Returns the training summary and the selection's counts."""
    prompts, selection = select_prompts(candidates, samples, cfg)
    if is_main_process():
        write_json(Path(out_dir) / SELECTION_FILE, {"ids": [r.id for r in prompts], **selection})
    return run_grpo(model, tokenizer, prompts, cfg, out_dir, prompt_cfg, order, callbacks), selection
