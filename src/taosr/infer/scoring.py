"""Answer-first scoring (prefill only): P(level 1..4) from the label token after `<answer>`.

Answer-first scoring is how a post-CoT model is served: run the prompt plus `<answer>` through the
model once, read the logits at the last position only, and softmax them over the four label tokens
-> P(level 1..4). No token is decoded. Batches are sorted by length and left-padded with explicit
position ids (`taosr.generation`), so each row's result equals its unpadded computation.
`PrefixScorer` (taosr.infer.prefix) computes the same numbers with the prompt prefixes shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..generation import left_pad, positions
from ..modeling import label_token_ids
from ..progress import progress_bar
from ..prompts import PromptConfig, answer_prefix_ids, encode_prompt
from ..records import Record


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
            ids, mask = (t.to(model.device) for t in left_pad([prompts[i] for i in idx], pad_id))
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
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


class UnsharedScorer:
    """`score_groups` without prefix sharing: every prompt runs whole (the reference `PrefixScorer` is checked
    against, and the scorer `taosr score --no-prefix-sharing` uses)."""

    def __init__(self, model, tokenizer, prompt_cfg: PromptConfig, batch_size: int = 32):
        self.model, self.tok, self.cfg, self.batch_size = model, tokenizer, prompt_cfg, batch_size

    def score_records(self, records: Sequence[Record]) -> np.ndarray:
        return score_records(self.model, self.tok, records, self.cfg, self.batch_size)

    score_items = score_records

    def score_groups(self, groups: Sequence[Sequence[Record]]) -> list[np.ndarray]:
        """One (n_i, 4) array per group; all groups' prompts are batched together."""
        probs = self.score_records([r for g in groups for r in g])
        return np.split(probs, np.cumsum([len(g) for g in groups])[:-1]) if groups else []
