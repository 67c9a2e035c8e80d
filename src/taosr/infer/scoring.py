"""Answer-first scoring (prefill only) and batched generation.

Answer-first scoring is how a post-CoT model is served: run the prompt plus `<answer>` through the
model once, read the logits at the last position only, and softmax them over the four label tokens
-> P(level 1..4). No token is decoded. Batches are sorted by length to limit padding; padding is on
the left with explicit position ids, so each row's result equals its unpadded computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .modeling import label_token_ids
from .progress import progress_bar
from .prompts import PromptConfig, answer_prefix_ids, encode_prompt
from .records import Record


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def label_probs_from_ids(model, prompts: Sequence[list[int]], label_ids: list[int], pad_id: int,
                         batch_size: int = 64, desc: str | None = None) -> np.ndarray:
    """P(level 1..4) for each prompt (prompts already end with the `<answer>` ids). Shape (n, 4)."""
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = np.zeros((len(prompts), 4), dtype=np.float64)
    lab = torch.tensor(label_ids)
    with progress_bar(len(prompts), desc or "scoring") as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = (t.to(model.device) for t in _left_pad([prompts[i] for i in idx], pad_id))
            logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                           logits_to_keep=1).logits[:, -1, :]  # (b, vocab)
            probs = torch.softmax(logits[:, lab.to(logits.device)].float(), dim=-1)  # (b, 4): over label tokens
            out[idx] = probs.double().cpu().numpy()
            advance(len(idx))
    return out


def score_records(model, tokenizer, records: Sequence[Record], prompt_cfg: PromptConfig,
                  batch_size: int = 64, desc: str | None = None) -> np.ndarray:
    """Answer-first P(level 1..4) for each record, shape (n, 4), columns = levels 1, 2, 3, 4."""
    suffix = answer_prefix_ids(tokenizer)
    prompts = [encode_prompt(tokenizer, r, prompt_cfg) + suffix for r in records]
    return label_probs_from_ids(model, prompts, label_token_ids(tokenizer), tokenizer.pad_token_id, batch_size, desc)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int = 96,
                   batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0,
                   top_p: float = 1.0, num_return_sequences: int = 1, desc: str | None = None,
                   seed: int | None = None) -> list[list[str]]:
    """Generate continuations (special tokens kept, so tags stay visible). Returns one list per prompt."""
    model.eval()
    if seed is not None:
        torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[str]] = [[] for _ in prompts]
    with progress_bar(len(prompts), desc or "generating") as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = (t.to(model.device) for t in _left_pad([prompts[i] for i in idx], tokenizer.pad_token_id))
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                top_k=None, num_return_sequences=num_return_sequences,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )[:, ids.shape[1]:]
            texts = tokenizer.batch_decode(gen, skip_special_tokens=False)
            for j, i in enumerate(idx):
                for t in texts[j * num_return_sequences:(j + 1) * num_return_sequences]:
                    out[i].append(_strip_special(t, tokenizer))
            advance(len(idx))
    return out


def _strip_special(text: str, tokenizer) -> str:
    """Cut at end-of-sequence and drop padding; keep label/tag tokens."""
    if tokenizer.eos_token and tokenizer.eos_token in text:
        text = text.split(tokenizer.eos_token, 1)[0]
    if tokenizer.pad_token:
        text = text.replace(tokenizer.pad_token, "")
    return text.strip()
