"""Batched generation with left padding (teachers, pass@N sampling, think-first evaluation, the chat server).

Batches are sorted by length to limit padding; padding is on the left with explicit position ids,
so each row's result equals its unpadded computation. Special tokens are kept in the decoded text
(the label and tag tokens are special tokens), only end-of-sequence and padding are taken out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .progress import progress_bar


def left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (n, longest), each row right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def strip_special(text: str, tokenizer) -> str:
    """A decoded continuation cut at end-of-sequence, without padding; label and tag tokens are kept."""
    if tokenizer.eos_token and tokenizer.eos_token in text:
        text = text.split(tokenizer.eos_token, 1)[0]
    if tokenizer.pad_token:
        text = text.replace(tokenizer.pad_token, "")
    return text.strip()


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
            ids, mask = (t.to(model.device) for t in left_pad([prompts[i] for i in idx], tokenizer.pad_token_id))
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                top_k=None, num_return_sequences=num_return_sequences,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )[:, ids.shape[1]:]
            texts = tokenizer.batch_decode(gen, skip_special_tokens=False)
            for j, i in enumerate(idx):
                for t in texts[j * num_return_sequences:(j + 1) * num_return_sequences]:
                    out[i].append(strip_special(t, tokenizer))
            advance(len(idx))
    return out
