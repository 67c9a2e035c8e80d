"""Answer-first scoring with KV prefix sharing.

The prompt is [instructions] [query] [item] <answer>. The instructions' key/value cache is computed
once per scorer, the query's once per request (extending a copy of the instructions' cache), and
each item then runs only its own tokens on top of the shared cache:

    work per request = |instructions| (once ever) + |query| + sum_i |item_i|
    instead of         n * (|instructions| + |query|) + sum_i |item_i|

Items of one request are batched with left padding *between* the prefix and the item; position ids
skip the padding, so every row computes exactly what the unshared prompt computes (tested to 1e-5).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from .modeling import label_token_ids
from .prompts import PromptConfig, answer_prefix_ids, encode_segments, item_segment, query_segment
from .records import Record


def fork_cache(cache: DynamicCache, batch: int, config=None) -> DynamicCache:
    """A new cache over `batch` copies of a batch-1 cache; the original is never written to.

    Per layer: keys/values (1, kv_heads, plen, d) -> expanded view (batch, kv_heads, plen, d), which the
    new cache materialises once when it appends the suffix (DynamicLayer grows by concatenation).
    """
    out = DynamicCache(config=config)  # config: the same layer kinds (e.g. sliding-window) as the model
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return out


class PrefixScorer:
    """P(level 1..4) for the items of a query, sharing the instruction and query KV cache."""

    def __init__(self, model, tokenizer, prompt_cfg: PromptConfig | None = None, batch_size: int = 32):
        self.model, self.tok = model.eval(), tokenizer
        self.cfg = prompt_cfg or PromptConfig()
        self.batch_size = batch_size
        self.label_ids = torch.tensor(label_token_ids(tokenizer))
        self.answer_ids = answer_prefix_ids(tokenizer)
        self.instr_ids = encode_segments(tokenizer, [self.cfg.instructions])
        self._instr_cache = None  # computed on first use, reused by every request

    @torch.inference_mode()
    def _extend(self, cache, ids: list[int], offset: int):
        """Run `ids` (batch 1) on top of `cache` (None = empty); returns the grown cache."""
        dev = self.model.device
        x = torch.tensor([ids], device=dev)
        pos = torch.arange(offset, offset + len(ids), device=dev)[None]
        mask = torch.ones((1, offset + len(ids)), dtype=torch.long, device=dev)
        out = self.model(input_ids=x, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.cache

    def query_cache(self, record: Record):
        """The cache of [instructions][query], and its length."""
        if self._instr_cache is None:
            self._instr_cache = self._extend(None, self.instr_ids, 0)
        q_ids = encode_segments(self.tok, [query_segment(record)])
        cache = self._extend(fork_cache(self._instr_cache, 1, self.model.config), q_ids, len(self.instr_ids))
        return cache, len(self.instr_ids) + len(q_ids)

    @torch.inference_mode()
    def score_items(self, items: Sequence[Record]) -> np.ndarray:
        """All `items` must share one query. Returns (n, 4), columns = levels 1..4."""
        if not items:
            return np.zeros((0, 4))
        cache, plen = self.query_cache(items[0])
        suffixes = [encode_segments(self.tok, [item_segment(r, self.cfg)]) + self.answer_ids for r in items]
        out = np.zeros((len(items), 4))
        order = sorted(range(len(items)), key=lambda i: len(suffixes[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = [suffixes[i] for i in idx]
            b, width = len(rows), max(len(s) for s in rows)
            ids = torch.full((b, width), self.tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((b, plen + width), dtype=torch.long)
            mask[:, :plen] = 1
            pos = torch.zeros((b, width), dtype=torch.long)
            for j, s in enumerate(rows):
                pad = width - len(s)
                ids[j, pad:] = torch.tensor(s)
                mask[j, plen + pad:] = 1
                pos[j, pad:] = torch.arange(plen, plen + len(s))
            shared = fork_cache(cache, b, self.model.config)
            dev = self.model.device
            logits = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                cache=shared, use_cache=True, logits_to_keep=1).logits[:, -1, :]  # (b, vocab)
            probs = torch.softmax(logits[:, self.label_ids.to(dev)].float(), -1)  # (b, 4)
            out[idx] = probs.double().cpu().numpy()
        return out

    def score_records(self, records: Sequence[Record]) -> np.ndarray:
        """Score any list of records, grouping them by query; rows come back in input order."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            groups[r.query].append(i)
        out = np.zeros((len(records), 4))
        for idx in groups.values():
            out[idx] = self.score_items([records[i] for i in idx])
        return out
