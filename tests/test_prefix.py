"""Prefix-shared answer-first scoring: packed and batched layouts equal the unshared scorer."""

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taosr.prefix import _PACK, PrefixScorer, can_pack, cascade_attention, make_pack, packs
from taosr.prompts import PromptConfig
from taosr.scoring import score_records

PC = PromptConfig()


@pytest.mark.parametrize("kwargs", [
    {"packed": True},  # one pack per query: [query][item_1]...[item_n]
    {"packed": True, "pack_tokens": 40},  # several packs per query, reusing the query's cache
    {"packed": True, "pack_tokens": 1},  # every item alone (each longer than the budget)
    {"packed": False, "batch_size": 4},  # the batched fallback
])
def test_prefix_shared_scores_equal_unshared(tiny_model, tiny_tokenizer, tiny_splits, kwargs):
    recs = tiny_splits["test"][:24]  # several queries, several items each, different lengths
    scorer = PrefixScorer(tiny_model, tiny_tokenizer, PC, **kwargs)
    shared = scorer.score_records(recs)
    plain = score_records(tiny_model, tiny_tokenizer, recs, PC, batch_size=7)
    assert len({r.query for r in recs}) > 2
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    # the shared instructions' cache is never written to by a request
    assert scorer.instructions_cache().get_seq_length() == len(scorer.instr_ids)
    np.testing.assert_allclose(scorer.score_records(recs), shared, atol=1e-6)


def test_attention_variants_the_cascade_does_not_compute_fall_back(tiny_model, tiny_tokenizer, tiny_splits):
    assert can_pack(tiny_model) and PrefixScorer(tiny_model, tiny_tokenizer, PC).packed
    cfg = tiny_model.config
    before = getattr(cfg, "layer_types", None)
    try:
        cfg.layer_types = ["full_attention", "sliding_attention"]
        scorer = PrefixScorer(tiny_model, tiny_tokenizer, PC)
        assert not can_pack(tiny_model) and not scorer.packed
    finally:
        cfg.layer_types = before
    recs = tiny_splits["test"][:6]
    np.testing.assert_allclose(scorer.score_records(recs), score_records(tiny_model, tiny_tokenizer, recs, PC), atol=1e-5)



def test_other_threads_and_generate_see_plain_attention_while_a_scorer_packs(tiny_model, tiny_tokenizer, tiny_splits):
    recs = tiny_splits["test"][:8]
    plain = score_records(tiny_model, tiny_tokenizer, recs, PC)
    scorer = PrefixScorer(tiny_model, tiny_tokenizer, PC)
    assert scorer.packed and tiny_model.config._attn_implementation == "taosr_cascade"
    with ThreadPoolExecutor(2) as pool:  # packed scoring and unshared scoring of one model, side by side
        jobs = [pool.submit(scorer.score_records, recs) if i % 2 else
                pool.submit(score_records, tiny_model, tiny_tokenizer, recs, PC) for i in range(8)]
        for job in jobs:
            np.testing.assert_allclose(job.result(60), plain, atol=1e-5)
    gen = tiny_model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False,
                              pad_token_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():  # greedy decoding equals the argmax of a plain forward, token by token
        ids = torch.tensor([[5, 6, 7]])
        for _ in range(4):
            ids = torch.cat([ids, tiny_model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert gen.tolist() == ids.tolist()


def naive_attention(q, k, v, allowed):
    """q (h, R, d), k/v (h, K, d), allowed (R, K) bool -> (R, h, d): softmax attention, the reference."""
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return (torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v).transpose(0, 1)


@pytest.mark.parametrize("query_rows,cached,lens", [(3, 5, [2, 4, 1]), (0, 8, [3, 3]), (2, 4, [1])])
def test_cascade_attention_equals_masked_softmax_attention(query_rows, cached, lens):
    torch.manual_seed(0)
    h, kv_heads, d, rows = 4, 2, 8, query_rows + sum(lens)
    q = torch.randn(1, h, rows, d)
    k, v = torch.randn(1, kv_heads, cached + rows, d), torch.randn(1, kv_heads, cached + rows, d)
    module = SimpleNamespace(num_key_value_groups=h // kv_heads)
    pack = make_pack(query_rows, cached, lens)
    token = _PACK.set(pack)
    try:
        got, _ = cascade_attention(module, q, k, v, scaling=d ** -0.5)
    finally:
        _PACK.reset(token)
    # by hand: row -> its segment (0 = query, i = item i); a row sees the cache, the query causally, its item causally
    seg = [0] * query_rows + [i + 1 for i, n in enumerate(lens) for _ in range(n)]
    allowed = torch.zeros(rows, cached + rows, dtype=torch.bool)
    for r in range(rows):
        allowed[r, :cached] = True
        for c in range(r + 1):
            allowed[r, cached + c] = seg[c] == 0 or seg[c] == seg[r]
    want = naive_attention(q[0], k[0].repeat_interleave(2, 0), v[0].repeat_interleave(2, 0), allowed)
    assert got.shape == (1, rows, h, d)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 120))
def test_packs_cover_in_order_and_respect_the_budget(lengths, budget):
    groups = packs(lengths, budget)
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    for g, nxt in zip(groups, groups[1:] + [None]):
        total = sum(lengths[i] for i in g)
        assert g and (total <= budget or len(g) == 1)
        if nxt is not None:  # greedy: the next item did not fit
            assert total + lengths[nxt[0]] > budget
