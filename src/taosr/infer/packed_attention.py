"""Attention of a packed forward: [query][item_1][item_2]... in one row, no padding, no cache copies.

`PrefixScorer` (taosr.infer.prefix) packs the query and all items of a request (or several requests) end to
end in one row. This module registers `cascade_attention` as an attention implementation: plain sdpa,
except inside the scorer's own packed forwards (a per-thread `Pack` context), where every token
attends to the shared keys ([instructions][query], the query's own rows causally), and an item's tokens
also attend causally to their own item, never to another one; the two partial softmaxes are merged
exactly. Position ids restart after the query for every item, so each item computes exactly what its
unshared prompt computes (tested to 1e-5), and attention work grows with the number of items, not its
square.

Only each item's last token (its answer position) is read after the last layer, so that layer runs the
query projection, attention, output projection and MLP on those rows alone (`trim_last_layer`); its
keys and values still come from every row.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


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
    valid: torch.Tensor  # (n, L) True where j < len(item i)
    answer_rows: torch.Tensor  # (n,) row of each item's last token, its answer position
    last_layer: int = -1  # index of the layer that runs only the answer rows (see `trim_last_layer`); -1: none

    @property
    def rows(self) -> int:  # R
        return self.shared_bias.shape[0]


def make_pack(prefix: DynamicCache | None, prefix_len: int, pieces: Sequence[tuple[int, Sequence[int]]],
              dtype=torch.float32, device=None, last_layer: int = -1) -> tuple[Pack, list[int], list[int]]:
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
    last = starts_t + lens_t - 1
    pack = Pack(prefix, q_rows_t.to(device), bias.to(device), item_rows.to(device),
                (j[None, :] <= j[:, None]).to(device), flat.to(device), item_rows.flatten()[flat].to(device),
                valid.to(device), last.to(device), last_layer)
    return pack, pos, last.tolist()


_PACK: ContextVar[Pack | None] = ContextVar("taosr_pack", default=None)
_TRIM_LOCK = threading.Lock()
PLAIN_ATTENTION = ("llama", "qwen2", "qwen3", "qwen3_moe")  # softmax attention, no soft-capping or sinks
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
    layer, last = pack.prefix.layers[module.layer_idx], module.layer_idx == pack.last_layer
    kv, rows, d, dtype = key.shape[1], query.shape[2], query.shape[3], query.dtype
    if last:  # only the answer rows' outputs are read after this layer: (1, h, R, d) -> (1, h, n, d)
        query = query[:, :, pack.answer_rows]
    query, key, value = query.float(), key.float(), value.float()  # softmax in fp32
    q = (query[0] * scaling).reshape(kv, g, query.shape[2], d)  # (kv, g, R or n, d): heads grouped by kv head
    k = torch.cat([layer.keys[0].float(), key[0, :, pack.query_rows]], 1)[:, None]  # (kv, 1, P + Q, d)
    v = torch.cat([layer.values[0].float(), value[0, :, pack.query_rows]], 1)[:, None]
    if last:
        return answer_rows_attention(pack, q, k, v, key[0], value[0]).to(dtype), None
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


def answer_rows_attention(pack: Pack, qa, k, v, key, value) -> torch.Tensor:
    """`cascade_attention` of the last layer for the answer rows only; the other rows' outputs are zeros.

    qa (kv, g, n, d) the answer rows' queries, scaled; k/v (kv, 1, P + Q, d) the shared keys; key/value
    (kv, R, d) the forward's rows. An answer row is its item's last token, so it sees the shared keys and
    all of its item: one softmax.
    """
    kv, g, _, d = qa.shape
    s_sh = (qa @ k.transpose(-1, -2)).add_(pack.shared_bias[pack.answer_rows])  # (kv, g, n, P + Q)
    kb, vb = key[:, pack.item_rows][:, None], value[:, pack.item_rows][:, None]  # (kv, 1, n, L, d)
    s_it = (qa[..., None, :] @ kb.transpose(-1, -2))[..., 0, :].masked_fill_(~pack.valid, float("-inf"))  # (kv,g,n,L)
    p = torch.softmax(torch.cat([s_sh, s_it], -1), -1)  # (kv, g, n, P + Q + L)
    shared = s_sh.shape[-1]
    out_a = p[..., :shared] @ v + (p[..., None, shared:] @ vb)[..., 0, :]  # (kv, g, n, d)
    out = qa.new_zeros(kv, g, pack.rows, d)
    out[:, :, pack.answer_rows] = out_a
    return out.reshape(kv * g, pack.rows, d).transpose(0, 1)[None]  # (1, R, h, d)


AttentionInterface.register(CASCADE, cascade_attention)


def _trimming() -> Pack | None:
    """The packed forward running in this thread, if it trims its last layer."""
    pack = _PACK.get()
    return pack if pack is not None and pack.last_layer >= 0 else None


def _answer_rows_in(module, args):
    """Pre-hook of the last layer's q_proj, o_proj and MLP inside a packed forward: (1, R, c) -> (1, n, c)."""
    pack = _trimming()
    return None if pack is None else (args[0][:, pack.answer_rows], *args[1:])


def _answer_rows_out(module, args, out):
    """Their hook: (1, n, c) -> (1, R, c), zeros on the rows whose outputs no one reads."""
    pack = _trimming()
    if pack is None:
        return None
    if not isinstance(out, torch.Tensor):  # e.g. a patched MLP that also returns router logits
        raise TypeError(f"trim_last_layer: {type(module).__name__} returned {type(out).__name__}, not a tensor; "
                        "score with PrefixScorer(...).last_layer = -1")
    full = out.new_zeros(out.shape[0], pack.rows, out.shape[-1])
    full[:, pack.answer_rows] = out
    return full


def trim_last_layer(model) -> int:
    """Make the last decoder layer of `model` run only the answer rows inside packed forwards.

    After the last layer only the answer positions are read (their logits), so its query projection,
    attention, output projection and MLP are needed there alone; its keys and values still come from
    every row. With the default 4 layers that is a fifth of the forward's FLOPs. Returns the layer's
    index, or -1 for a model type outside `PLAIN_ATTENTION` or layers not of the Llama/Qwen shape (then
    nothing changes). The hooks act only inside packed forwards (the `Pack` context), so training,
    generation and other threads are untouched.
    """
    if model.config.model_type not in PLAIN_ATTENTION:
        return -1
    layers = getattr(model.get_decoder(), "layers", None)
    last = layers[-1] if layers else None
    attn = getattr(last, "self_attn", None)
    q_proj, o_proj = getattr(attn, "q_proj", None), getattr(attn, "o_proj", None)
    if (q_proj is None or o_proj is None or getattr(last, "mlp", None) is None
            or getattr(attn, "layer_idx", None) != len(layers) - 1):  # cascade_attention knows it by layer_idx
        return -1
    with _TRIM_LOCK:  # once per model, however many scorers (in however many threads) share it
        if not getattr(last, "_taosr_trimmed", False):
            for m in (q_proj, o_proj, last.mlp):
                m.register_forward_pre_hook(_answer_rows_in)
                m.register_forward_hook(_answer_rows_out)
            last._taosr_trimmed = True
    return len(layers) - 1


def cascade_mask(*args, **kwargs):
    """No mask inside a packed forward (the `Pack` is the mask); sdpa's mask for the forwards that fall back."""
    return None if _PACK.get() is not None else sdpa_mask(*args, **kwargs)


AttentionMaskInterface.register(CASCADE, cascade_mask)


@contextmanager
def packed_forward(pack: Pack):
    """This thread's forwards run `cascade_attention` over `pack` (other threads keep plain sdpa)."""
    token = _PACK.set(pack)
    try:
        yield
    finally:
        _PACK.reset(token)
