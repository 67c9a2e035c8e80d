"""Answer-first scoring with KV prefix sharing.

The prompt is [instructions] [query] [item] <answer>. The instructions' key/value cache is computed
once per scorer; the query and the items of a request then run on top of it:

    work per request = |instructions| (once ever) + |query| + |common| + sum_i (|item_i| - |common|)
    instead of         n * (|instructions| + |query|) + sum_i |item_i|

where `common` is the items' common leading tokens (at least "item:" in the default layout): they
sit at the same positions after the same prefix in every prompt of the request, so they are shared too.

Packed layout (the default for the models `can_pack` knows): the query and all items of a request go
end to end in *one* row, [query][item_1][item_2]...[item_n], with no padding and no per-item copy of the
shared cache; `taosr.infer.packed_attention` makes each item see only the shared keys and itself, and runs the last
layer on the answer rows alone.
Several requests share one forward up to `pack_tokens` tokens (`plan_packs`); a request longer than
that is split over several forwards, each running its query again.

Batched layout (the fallback: sliding-window layers, soft-capped or other attention variants): items
are rows of a batch over copies of the shared cache, padded between the prefix and the item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from ..modeling import label_token_ids
from ..prompts import PromptConfig, answer_prefix_ids, encode_groups, encode_segments
from ..records import Record
from .packed_attention import CASCADE, PLAIN_ATTENTION, make_pack, packed_forward, trim_last_layer


def fork_cache(cache: DynamicCache, batch: int, config=None) -> DynamicCache:
    """A new cache over `batch` copies of a batch-1 cache; the original is never written to.

    Per layer: keys/values (1, kv_heads, plen, d) -> expanded view (batch, kv_heads, plen, d), which the
    new cache materialises once when it appends the suffix (DynamicLayer grows by concatenation).
    """
    out = DynamicCache(config=config)  # config: the same layer kinds (e.g. sliding-window) as the model
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return out


def plan_packs(query_lens: Sequence[int], item_lens: Sequence[Sequence[int]], budget: int):
    """Forwards of at most ~`budget` tokens: [[(group, [item indices]), ...], ...], groups and items in order.

    A group's query tokens count once per forward it appears in (a query split over two forwards runs
    twice); a forward holds at least one item, so an item longer than the budget gets its own. The
    item blocks of a forward are (items x longest item): that is kept within the budget as well, so
    one long item does not pad many short ones.
    """
    out, cur, used, n_items, longest = [], [], 0, 0, 0
    for g, (q, lens) in enumerate(zip(query_lens, item_lens)):
        for i, n in enumerate(lens):
            cost = n + (0 if cur and cur[-1][0] == g else q)
            if cur and (used + cost > budget or (n_items + 1) * max(longest, n) > budget):
                out.append(cur)
                cur, used, n_items, longest, cost = [], 0, 0, 0, n + q
            if cur and cur[-1][0] == g:
                cur[-1][1].append(i)
            else:
                cur.append((g, [i]))
            used, n_items, longest = used + cost, n_items + 1, max(longest, n)
    return out + [cur] if cur else out


def share_common(query: list[int], items: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Move the items' common leading tokens to the end of the query: (query + common, items without it).

    Every item keeps at least its last token (its answer position). The concatenation query + item is
    unchanged for every item, so each item's prompt and positions are too, and its scores up to float
    rounding (tested to 1e-5).
    """
    if not items:
        return query, items
    c, shortest = 0, min(len(x) for x in items)
    while c < shortest - 1 and all(x[c] == items[0][c] for x in items):
        c += 1
    return query + items[0][:c], [x[c:] for x in items]


def can_pack(model) -> bool:
    """`cascade_attention` computes what these models' own (sdpa) attention computes: no sliding window."""
    cfg = model.config
    one_device = len(set((getattr(model, "hf_device_map", None) or {"": 0}).values())) == 1  # no device_map sharding
    return (one_device and cfg.model_type in PLAIN_ATTENTION and cfg._attn_implementation in ("sdpa", CASCADE)
            and not getattr(cfg, "use_sliding_window", False)
            and "sliding_attention" not in (getattr(cfg, "layer_types", None) or []))


class PrefixScorer:
    """P(level 1..4) for the items of a query (or of several queries), sharing the instructions and the query."""

    def __init__(self, model, tokenizer, prompt_cfg: PromptConfig | None = None, batch_size: int = 32,
                 pack_tokens: int = 1024, packed: bool | None = None):
        self.model, self.tok = model.eval(), tokenizer
        self.cfg = prompt_cfg or PromptConfig()
        self.batch_size = batch_size  # items per forward in the batched layout
        self.pack_tokens = pack_tokens  # tokens per forward in the packed layout
        self.packed = can_pack(model) if packed is None else packed
        if self.packed:  # sdpa everywhere, except inside this scorer's packed forwards (see cascade_attention)
            model.config._attn_implementation = CASCADE
        self.last_layer = trim_last_layer(model) if self.packed else -1  # -1: every layer runs every row
        self.label_ids = torch.tensor(label_token_ids(tokenizer))
        self.answer_ids = answer_prefix_ids(tokenizer)
        self.instr_ids = encode_segments(tokenizer, [self.cfg.instructions])
        self._instr_cache = None  # computed on first use, reused by every request

    def _forward(self, ids, mask, pos, cache, keep, use_cache: bool = True):
        dev = self.model.device
        mask = None if mask is None else mask.to(dev)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev),
                         cache=cache, use_cache=use_cache, logits_to_keep=keep)
        return out.logits, out.cache

    def _label_probs(self, logits: torch.Tensor) -> np.ndarray:
        """(rows, vocab) logits at the answer position -> (rows, 4) softmax over the label tokens."""
        return torch.softmax(logits[:, self.label_ids.to(logits.device)].float(), -1).double().cpu().numpy()

    def instructions_cache(self) -> DynamicCache:
        if self._instr_cache is None:
            n = len(self.instr_ids)
            ids = torch.tensor([self.instr_ids])
            _, self._instr_cache = self._forward(ids, torch.ones((1, n), dtype=torch.long), torch.arange(n)[None],
                                                 None, 1)
        return self._instr_cache

    def query_cache(self, q_ids: list[int]):
        """The cache of [instructions][q_ids] (the query and the items' common tokens), and its length."""
        p = len(self.instr_ids)
        ids, pos = torch.tensor([q_ids]), torch.arange(p, p + len(q_ids))[None]
        _, cache = self._forward(ids, torch.ones((1, p + len(q_ids)), dtype=torch.long), pos,
                                 fork_cache(self.instructions_cache(), 1, self.model.config), 1)
        return cache, p + len(q_ids)

    def score_items(self, items: Sequence[Record]) -> np.ndarray:
        """All `items` must share one query. Returns (n, 4), columns = levels 1..4."""
        return self.score_groups([items])[0]

    def encode_groups(self, groups: Sequence[Sequence[Record]]) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Per group, the tokens that run once (query + the items' common start) and each item's own tokens."""
        queries, items = encode_groups(self.tok, groups, self.cfg, len(self.instr_ids))  # the prompts' budgets
        q_ids, suffixes = [], []
        for q, its in zip(queries, items):
            shared, rows = share_common(q, [x + self.answer_ids for x in its])
            q_ids.append(shared)
            suffixes.append(rows)
        return q_ids, suffixes

    def score_groups(self, groups: Sequence[Sequence[Record]]) -> list[np.ndarray]:
        """Several requests at once, each a list of items sharing one query: one (n_i, 4) array per group.

        Packed: the groups share forwards (up to `pack_tokens` tokens each), so small requests cost
        one weight pass together instead of one each. Batched: one request after the other.
        """
        return self.score_encoded(*self.encode_groups(groups))

    @torch.inference_mode()
    def score_encoded(self, q_ids: Sequence[list[int]], suffixes: Sequence[Sequence[list[int]]]) -> list[np.ndarray]:
        """`score_groups` on groups already encoded by `encode_groups`: one (n_i, 4) array per group.

        Any subset of a group's items, with the group's `q_ids`, scores as in the whole group (each item's
        tokens and positions are the same), so a caller may encode a request once and score it in parts.
        """
        if not (self.packed and self.model.config._attn_implementation == CASCADE):  # or switched since
            return [self._batched(q, s) if s else np.zeros((0, 4)) for q, s in zip(q_ids, suffixes)]
        out = [np.zeros((len(s), 4)) for s in suffixes]
        prefix = self.instructions_cache()
        for forward in plan_packs([len(q) for q in q_ids], [[len(x) for x in s] for s in suffixes], self.pack_tokens):
            pieces = [(len(q_ids[g]), [len(suffixes[g][i]) for i in idx]) for g, idx in forward]
            pack, pos, last = make_pack(prefix, len(self.instr_ids), pieces, self.model.dtype, self.model.device,
                                        self.last_layer)
            ids = [t for g, idx in forward for t in q_ids[g] + [t for i in idx for t in suffixes[g][i]]]
            with packed_forward(pack):
                logits, _ = self._forward(torch.tensor([ids]), None, torch.tensor([pos]), None, torch.tensor(last),
                                          use_cache=False)  # (1, items, vocab) at the answer positions
            probs, k = self._label_probs(logits[0]), 0
            for g, idx in forward:
                out[g][idx] = probs[k:k + len(idx)]
                k += len(idx)
        return out

    def _batched(self, q_ids: list[int], suffixes: list[list[int]]) -> np.ndarray:
        """Items as rows over copies of the [instructions][query] cache, padded between prefix and item."""
        cache, plen = self.query_cache(q_ids)
        out = np.zeros((len(suffixes), 4))
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))
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
            logits, _ = self._forward(ids, mask, pos, fork_cache(cache, b, self.model.config), 1)  # (b, 1, vocab)
            out[idx] = self._label_probs(logits[:, -1, :])
        return out

    def score_records(self, records: Sequence[Record]) -> np.ndarray:
        """Score any list of records, grouping them by query; rows come back in input order."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            groups[r.query].append(i)
        out = np.zeros((len(records), 4))
        scored = self.score_groups([[records[i] for i in idx] for idx in groups.values()])
        for idx, probs in zip(groups.values(), scored):
            out[idx] = probs
        return out
