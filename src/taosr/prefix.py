"""Answer-first scoring with KV prefix sharing.

The prompt is [instructions] [query] [item] <answer>. The instructions' key/value cache is computed
once per scorer; the query and the items of a request then run on top of it:

    work per request = |instructions| (once ever) + |query| + sum_i |item_i|
    instead of         n * (|instructions| + |query|) + sum_i |item_i|

Packed layout (the default for the models `can_pack` knows): the query and all items of a request go
end to end in *one* row, [query][item_1][item_2]...[item_n], with no padding and no per-item copy of the
shared cache. The scorer registers its model's attention as `cascade_attention`, which is plain sdpa
except inside the scorer's own packed forwards (a per-thread context), where every token attends to
the shared keys ([instructions][query], the query's own rows causally), and an item's tokens also
attend causally to their own item, never to another one; the two partial softmaxes are merged exactly.
Position ids restart after the query for every item, so each item computes exactly what its unshared
prompt computes (tested to 1e-5), and attention work grows with the number of items, not its square.
Requests longer than `pack_tokens` are split into several packs over the same [instructions][query] cache.

Batched layout (the fallback: sliding-window layers, soft-capped or other attention variants): items
are rows of a batch over copies of the shared cache, padded between the prefix and the item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .modeling import label_token_ids
from .prompts import PromptConfig, answer_prefix_ids, encode_segments, item_segment, query_segment
from .records import Record


def fork_cache(cache: DynamicCache, batch: int, config=None, length: int | None = None) -> DynamicCache:
    """A new cache over `batch` copies of the first `length` positions of a batch-1 cache.

    The original is never written to. Per layer: keys/values (1, kv_heads, plen, d) -> expanded view
    (batch, kv_heads, length, d), materialised only when the new cache grows (by concatenation).
    """
    out = DynamicCache(config=config)  # config: the same layer kinds (e.g. sliding-window) as the model
    for i, layer in enumerate(cache.layers):
        k, v = layer.keys[:, :, :length], layer.values[:, :, :length]
        out.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
    return out


@dataclass
class Pack:
    """The layout of one packed forward, read by `cascade_attention` (set only around that forward)."""

    cached: int  # positions already in the cache ([instructions], or [instructions][query] for later packs)
    shared_bias: torch.Tensor  # (R, cached + q) additive: the q query rows see the query causally
    index: torch.Tensor  # (n, L) offset of token j of item i among the item rows (clamped past its end)
    valid: torch.Tensor  # (n, L) True where j < len(item i)
    causal: torch.Tensor  # (L, L) True where key j <= query i


def make_pack(query_rows: int, cached: int, lens: Sequence[int], dtype=torch.float32, device=None) -> Pack:
    """The `Pack` of a forward whose rows are [query (query_rows)][item_1 (lens[0])]...[item_n]."""
    n_items, q = int(sum(lens)), query_rows
    lens_t = torch.tensor(list(lens))
    starts, j, r = lens_t.cumsum(0) - lens_t, torch.arange(max(lens)), torch.arange(q)
    bias = torch.zeros((q + n_items, cached + q), dtype=dtype)
    bias[:q, cached:] = torch.where(r[None, :] <= r[:, None], 0.0, torch.finfo(dtype).min)  # (q, q) causal
    return Pack(cached, bias.to(device), index=(starts[:, None] + j).clamp(max=n_items - 1).to(device),
                valid=(j[None, :] < lens_t[:, None]).to(device), causal=(j[None, :] <= j[:, None]).to(device))


_PACK: ContextVar[Pack | None] = ContextVar("taosr_pack", default=None)
CASCADE = "taosr_cascade"


def cascade_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention of one packed row: every row attends to the shared prefix, item rows also to their item.

    query (1, h, R, d): the forward's rows, [query (q rows)][item_1]...[item_n]; key/value
    (1, kv_heads, cached + R, d): the cache grown by those rows. Shared keys = [cached][query]; the two
    partial softmaxes (shared, own item) are merged exactly through their maxima and sums.
    Returns (1, R, h, d), as every transformers attention function does.
    """
    pack, g = _PACK.get(), module.num_key_value_groups
    if pack is None:  # any other forward of the model (other threads, generate, training): plain sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise ValueError("cascade_attention computes plain softmax attention only (see can_pack)")
    k, v = key[0].repeat_interleave(g, 0), value[0].repeat_interleave(g, 0)  # (h, cached + R, d)
    q = query[0] * scaling  # (h, R, d)
    shared = pack.shared_bias.shape[1]  # cached + q
    s_sh = (q @ k[:, :shared].transpose(-1, -2)).add_(pack.shared_bias)  # (h, R, shared)
    m_sh = s_sh.amax(-1, keepdim=True)  # (h, R, 1)
    e_sh = s_sh.sub_(m_sh).exp_()
    l_sh, out = e_sh.sum(-1, keepdim=True), e_sh @ v[:, :shared]  # (h, R, 1), (h, R, d) unnormalised
    rows = shared - pack.cached + pack.index  # (n, L) rows of the item tokens
    kb, vb = k[:, pack.cached + rows], v[:, pack.cached + rows]  # (h, n, L, d)
    s_it = (q[:, rows] @ kb.transpose(-1, -2)).masked_fill_(~pack.causal, float("-inf"))  # (h, n, L, L)
    m_it = s_it.amax(-1, keepdim=True)  # (h, n, L, 1)
    e_it = s_it.sub_(m_it).exp_()
    l_it, o_it, m_it = e_it.sum(-1, keepdim=True)[:, pack.valid], (e_it @ vb)[:, pack.valid], m_it[:, pack.valid]
    it = slice(shared - pack.cached, None)  # item rows, in packed order like [:, pack.valid]
    m = torch.maximum(m_sh[:, it], m_it)  # (h, S, 1): merge the partial softmaxes of the item rows
    w_sh, w_it = torch.exp(m_sh[:, it] - m), torch.exp(m_it - m)
    out[:, it] = out[:, it] * w_sh + o_it * w_it
    l_sh[:, it] = l_sh[:, it] * w_sh + l_it * w_it
    return (out / l_sh).transpose(0, 1)[None].to(query.dtype), None  # (1, R, h, d)


AttentionInterface.register(CASCADE, cascade_attention)
AttentionMaskInterface.register(CASCADE, sdpa_mask)  # the masks sdpa gets, for the forwards that fall back


def packs(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive indices grouped so each group's total length stays within `budget` (>= 1 item each)."""
    out, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and used + n > budget:
            out.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    return out + [cur] if cur else out


PLAIN_ATTENTION = ("llama", "qwen2", "qwen3", "qwen3_moe")  # softmax attention, no soft-capping or sinks


def can_pack(model) -> bool:
    """`cascade_attention` computes what these models' own (sdpa) attention computes: no sliding window."""
    cfg = model.config
    return (cfg.model_type in PLAIN_ATTENTION and cfg._attn_implementation in ("sdpa", CASCADE)
            and not getattr(cfg, "use_sliding_window", False)
            and "sliding_attention" not in (getattr(cfg, "layer_types", None) or []))


class PrefixScorer:
    """P(level 1..4) for the items of a query, sharing the instruction and query KV cache."""

    def __init__(self, model, tokenizer, prompt_cfg: PromptConfig | None = None, batch_size: int = 32,
                 pack_tokens: int = 1024, packed: bool | None = None):
        self.model, self.tok = model.eval(), tokenizer
        self.cfg = prompt_cfg or PromptConfig()
        self.batch_size = batch_size  # items per forward in the batched layout
        self.pack_tokens = pack_tokens  # tokens per forward in the packed layout
        self.packed = can_pack(model) if packed is None else packed
        if self.packed:  # sdpa everywhere, except inside this scorer's packed forwards (see cascade_attention)
            model.config._attn_implementation = CASCADE
        self.label_ids = torch.tensor(label_token_ids(tokenizer))
        self.answer_ids = answer_prefix_ids(tokenizer)
        self.instr_ids = encode_segments(tokenizer, [self.cfg.instructions])
        self._instr_cache = None  # computed on first use, reused by every request

    def _forward(self, ids, mask, pos, cache, keep):
        dev = self.model.device
        mask = None if mask is None else mask.to(dev)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev),
                         cache=cache, use_cache=True, logits_to_keep=keep)
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

    def query_cache(self, record: Record):
        """The cache of [instructions][query], and its length."""
        q_ids = encode_segments(self.tok, [query_segment(record)])
        p = len(self.instr_ids)
        ids, pos = torch.tensor([q_ids]), torch.arange(p, p + len(q_ids))[None]
        _, cache = self._forward(ids, torch.ones((1, p + len(q_ids)), dtype=torch.long), pos,
                                 fork_cache(self.instructions_cache(), 1, self.model.config), 1)
        return cache, p + len(q_ids)

    @torch.inference_mode()
    def score_items(self, items: Sequence[Record]) -> np.ndarray:
        """All `items` must share one query. Returns (n, 4), columns = levels 1..4."""
        if not items:
            return np.zeros((0, 4))
        suffixes = [encode_segments(self.tok, [item_segment(r, self.cfg)]) + self.answer_ids for r in items]
        return self._packed(items[0], suffixes) if self.packed else self._batched(items[0], suffixes)

    def _packed(self, first: Record, suffixes: list[list[int]]) -> np.ndarray:
        """One forward per pack, rows [query][item_1]...[item_k] under `cascade_attention`."""
        q_ids = encode_segments(self.tok, [query_segment(first)])
        p, q, cfg = len(self.instr_ids), len(q_ids), self.model.config
        out, query_cache = np.zeros((len(suffixes), 4)), None
        for idx in packs([len(s) for s in suffixes], self.pack_tokens):
            head = q_ids if query_cache is None else []  # the first pack runs the query; later ones reuse its cache
            lens = [len(suffixes[i]) for i in idx]
            pack = make_pack(len(head), p + q - len(head), lens, self.model.dtype, self.model.device)
            ids = list(head) + [t for i in idx for t in suffixes[i]]
            pos = list(range(p, p + len(head))) + [p + q + t for n in lens for t in range(n)]  # items: after the query
            last = len(head) + np.cumsum(lens) - 1  # (k,) each item's answer position
            base = self.instructions_cache() if query_cache is None else query_cache
            with self._cascade(pack):
                logits, grown = self._forward(torch.tensor([ids]), None, torch.tensor([pos]),
                                              fork_cache(base, 1, cfg), torch.tensor(last))  # logits (1, k, vocab)
            if query_cache is None:
                query_cache = fork_cache(grown, 1, cfg, p + q)  # [instructions][query] only
            out[idx] = self._label_probs(logits[0])
        return out

    @contextmanager
    def _cascade(self, pack: Pack):
        """This thread's forwards run `cascade_attention` over `pack` (other threads keep plain sdpa)."""
        token = _PACK.set(pack)
        try:
            yield
        finally:
            _PACK.reset(token)

    def _batched(self, first: Record, suffixes: list[list[int]]) -> np.ndarray:
        """Items as rows over copies of the [instructions][query] cache, padded between prefix and item."""
        cache, plen = self.query_cache(first)
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
        for idx in groups.values():
            out[idx] = self.score_items([records[i] for i in idx])
        return out
