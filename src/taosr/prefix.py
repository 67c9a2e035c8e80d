"""Answer-first scoring with KV prefix sharing.

The prompt is [instructions] [query] [item] <answer>. The instructions' key/value cache is computed
once per scorer; the query and the items of a request then run on top of it:

    work per request = |instructions| (once ever) + |query| + |common| + sum_i (|item_i| - |common|)
    instead of         n * (|instructions| + |query|) + sum_i |item_i|

where `common` is the items' common leading tokens (at least "item:" in the default layout): they
sit at the same positions after the same prefix in every prompt of the request, so they are shared too.

Packed layout (the default for the models `can_pack` knows): the query and all items of a request go
end to end in *one* row, [query][item_1][item_2]...[item_n], with no padding and no per-item copy of the
shared cache. The scorer registers its model's attention as `cascade_attention`, which is plain sdpa
except inside the scorer's own packed forwards (a per-thread context), where every token attends to
the shared keys ([instructions][query], the query's own rows causally), and an item's tokens also
attend causally to their own item, never to another one; the two partial softmaxes are merged exactly.
Position ids restart after the query for every item, so each item computes exactly what its unshared
prompt computes (tested to 1e-5), and attention work grows with the number of items, not its square.
Several requests share one forward up to `pack_tokens` tokens (`plan_packs`); a request longer than
that is split over several forwards, each running its query again.

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


def fork_cache(cache: DynamicCache, batch: int, config=None) -> DynamicCache:
    """A new cache over `batch` copies of a batch-1 cache; the original is never written to.

    Per layer: keys/values (1, kv_heads, plen, d) -> expanded view (batch, kv_heads, plen, d), which the
    new cache materialises once when it appends the suffix (DynamicLayer grows by concatenation).
    """
    out = DynamicCache(config=config)  # config: the same layer kinds (e.g. sliding-window) as the model
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return out


@dataclass
class Pack:
    """The layout of one packed forward, read by `cascade_attention` (set only around that forward).

    Rows of the forward: [query_1][items of query_1][query_2][items of query_2]... R rows in all, Q of
    them query tokens, n items of at most L tokens.
    """

    prefix: DynamicCache  # the instructions: per layer keys/values (1, kv_heads, P, d)
    query_rows: torch.Tensor  # (Q,) rows of the query tokens
    shared_bias: torch.Tensor  # (R, P + Q) additive: a row sees the instructions and its own query (causally)
    item_rows: torch.Tensor  # (n, L) row of token j of item i (clamped to the item's last token)
    causal: torch.Tensor  # (L, L) True where key j <= query i
    flat_valid: torch.Tensor  # (S,) positions of the real item tokens (j < len(item i)) in the flattened (n * L) blocks
    token_rows: torch.Tensor  # (S,) the rows of those item tokens


def make_pack(prefix: DynamicCache | None, prefix_len: int, pieces: Sequence[tuple[int, Sequence[int]]],
              dtype=torch.float32, device=None) -> tuple[Pack, list[int], list[int]]:
    """The `Pack` of one forward over `pieces` = [(query length, [item lengths])...], in row order.

    Also returns the rows' position ids (instructions first, every item right after its query) and the
    row of each item's last token (its answer position, in piece order).
    """
    group, qpos, pos, q_rows, starts, lens = [], [], [], [], [], []
    big = 1 << 30  # an item row sees all of its query
    for g, (q_len, item_lens) in enumerate(pieces):
        q_rows += range(len(group), len(group) + q_len)
        group += [g] * q_len
        qpos += range(q_len)
        pos += range(prefix_len, prefix_len + q_len)
        for n in item_lens:
            starts.append(len(group))
            lens.append(n)
            group += [g] * n
            qpos += [big] * n
            pos += range(prefix_len + q_len, prefix_len + q_len + n)
    group_t, qpos_t, q_rows_t = torch.tensor(group), torch.tensor(qpos), torch.tensor(q_rows, dtype=torch.long)
    sees = (group_t[q_rows_t][None, :] == group_t[:, None]) & (qpos_t[q_rows_t][None, :] <= qpos_t[:, None])  # (R, Q)
    bias = torch.zeros((len(group), prefix_len + len(q_rows)), dtype=dtype)
    bias[:, prefix_len:].masked_fill_(~sees, torch.finfo(dtype).min)
    starts_t, lens_t, j = torch.tensor(starts), torch.tensor(lens), torch.arange(max(lens))
    item_rows = torch.minimum(starts_t[:, None] + j, (starts_t + lens_t - 1)[:, None])  # (n, L)
    valid = j[None, :] < lens_t[:, None]
    flat = valid.flatten().nonzero().squeeze(1)
    pack = Pack(prefix, q_rows_t.to(device), bias.to(device), item_rows.to(device),
                (j[None, :] <= j[:, None]).to(device), flat.to(device), item_rows.flatten()[flat].to(device))
    return pack, pos, (starts_t + lens_t - 1).tolist()


_PACK: ContextVar[Pack | None] = ContextVar("taosr_pack", default=None)
CASCADE = "taosr_cascade"


def cascade_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention of one packed forward: each row sees the instructions and its query; item rows also their item.

    query (1, h, R, d), key/value (1, kv_heads, R, d): the forward's rows (no cache). Shared keys =
    [instructions][query tokens of the forward], masked by `shared_bias`; item keys = the item's own
    tokens, causally. The two partial softmaxes are merged exactly through their maxima and sums.
    Returns (1, R, h, d), as every transformers attention function does.
    """
    pack, g = _PACK.get(), module.num_key_value_groups
    if pack is None:  # any other forward of the model (other threads, generate, training): plain sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise ValueError("cascade_attention computes plain softmax attention only (see can_pack)")
    layer = pack.prefix.layers[module.layer_idx]
    kv, rows, d = key.shape[1], query.shape[2], query.shape[3]
    query, key, value, dtype = query.float(), key.float(), value.float(), query.dtype  # softmax in fp32
    q = (query[0] * scaling).reshape(kv, g, rows, d)  # (kv, g, R, d): query heads grouped by their kv head
    k = torch.cat([layer.keys[0].float(), key[0, :, pack.query_rows]], 1)[:, None]  # (kv, 1, P + Q, d)
    v = torch.cat([layer.values[0].float(), value[0, :, pack.query_rows]], 1)[:, None]
    s_sh = (q @ k.transpose(-1, -2)).add_(pack.shared_bias)  # (kv, g, R, P + Q)
    m_sh = s_sh.amax(-1, keepdim=True)  # (kv, g, R, 1)
    e_sh = s_sh.sub_(m_sh).exp_()
    l_sh, out = e_sh.sum(-1, keepdim=True), e_sh @ v  # (kv, g, R, 1), (kv, g, R, d) unnormalised
    kb, vb = key[0][:, pack.item_rows][:, None], value[0][:, pack.item_rows][:, None]  # (kv, 1, n, L, d)
    s_it = (q[:, :, pack.item_rows] @ kb.transpose(-1, -2)).masked_fill_(~pack.causal, float("-inf"))  # (kv,g,n,L,L)
    m_it = s_it.amax(-1, keepdim=True)  # (kv, g, n, L, 1)
    e_it = s_it.sub_(m_it).exp_()
    flat, tok = pack.flat_valid, pack.token_rows  # (S,): the item tokens, in the blocks and in the rows
    l_it = e_it.sum(-1, keepdim=True).flatten(2, 3)[:, :, flat]  # (kv, g, S, 1)
    o_it = (e_it @ vb).flatten(2, 3)[:, :, flat]  # (kv, g, S, d)
    m_it = m_it.flatten(2, 3)[:, :, flat]
    m = torch.maximum(m_sh[:, :, tok], m_it)  # merge the two partial softmaxes of the item tokens
    w_sh, w_it = torch.exp(m_sh[:, :, tok] - m), torch.exp(m_it - m)
    out[:, :, tok] = out[:, :, tok] * w_sh + o_it * w_it
    l_sh[:, :, tok] = l_sh[:, :, tok] * w_sh + l_it * w_it
    return (out / l_sh).reshape(kv * g, rows, d).transpose(0, 1)[None].to(dtype), None  # (1, R, h, d)


AttentionInterface.register(CASCADE, cascade_attention)


def cascade_mask(*args, **kwargs):
    """No mask inside a packed forward (the `Pack` is the mask); sdpa's mask for the forwards that fall back."""
    return None if _PACK.get() is not None else sdpa_mask(*args, **kwargs)


AttentionMaskInterface.register(CASCADE, cascade_mask)


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


PLAIN_ATTENTION = ("llama", "qwen2", "qwen3", "qwen3_moe")  # softmax attention, no soft-capping or sinks


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

    @torch.inference_mode()
    def score_groups(self, groups: Sequence[Sequence[Record]]) -> list[np.ndarray]:
        """Several requests at once, each a list of items sharing one query: one (n_i, 4) array per group.

        Packed: the groups share forwards (up to `pack_tokens` tokens each), so small requests cost
        one weight pass together instead of one each. Batched: one request after the other.
        """
        texts = [item_segment(r, self.cfg) for g in groups for r in g]
        ids = iter(self.tok(texts, add_special_tokens=False)["input_ids"] if texts else [])  # one batched call
        q_ids, suffixes = [], []
        for g in groups:
            shared, items = share_common(encode_segments(self.tok, [query_segment(g[0])]) if g else [],
                                         [next(ids) + self.answer_ids for _ in g])
            q_ids.append(shared)
            suffixes.append(items)
        if not (self.packed and self.model.config._attn_implementation == CASCADE):  # or switched since
            return [self._batched(q, s) if s else np.zeros((0, 4)) for q, s in zip(q_ids, suffixes)]
        out = [np.zeros((len(g), 4)) for g in groups]
        prefix = self.instructions_cache()
        for forward in plan_packs([len(q) for q in q_ids], [[len(x) for x in s] for s in suffixes], self.pack_tokens):
            pieces = [(len(q_ids[g]), [len(suffixes[g][i]) for i in idx]) for g, idx in forward]
            pack, pos, last = make_pack(prefix, len(self.instr_ids), pieces, self.model.dtype, self.model.device)
            ids = [t for g, idx in forward for t in q_ids[g] + [t for i in idx for t in suffixes[g][i]]]
            with self._cascade(pack):
                logits, _ = self._forward(torch.tensor([ids]), None, torch.tensor([pos]), None, torch.tensor(last),
                                          use_cache=False)  # (1, items, vocab) at the answer positions
            probs, k = self._label_probs(logits[0]), 0
            for g, idx in forward:
                out[g][idx] = probs[k:k + len(idx)]
                k += len(idx)
        return out

    @contextmanager
    def _cascade(self, pack: Pack):
        """This thread's forwards run `cascade_attention` over `pack` (other threads keep plain sdpa)."""
        token = _PACK.set(pack)
        try:
            yield
        finally:
            _PACK.reset(token)

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
