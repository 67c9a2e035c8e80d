"""Prefix-shared answer-first scoring: packed and batched layouts equal the unshared scorer."""

import copy
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from taosr.infer.packed_attention import cascade_attention, make_pack, packed_forward, trim_last_layer
from taosr.infer.prefix import PrefixScorer, can_pack, plan_packs, share_common
from taosr.infer.scoring import score_records
from taosr.prompts import PromptConfig, answer_prefix_ids, encode_segments, item_segment, query_segment

PC = PromptConfig()


@pytest.mark.parametrize("kwargs", [
    {"packed": True},  # one pack per query: [query][item_1]...[item_n]
    {"packed": True, "pack_tokens": 40},  # several forwards per query, each with the query again
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


def test_the_last_layer_runs_only_the_answer_rows_and_scores_are_unchanged(tiny_model, tiny_tokenizer, tiny_splits):
    recs = tiny_splits["test"][:24]
    model = copy.deepcopy(tiny_model)
    scorer = PrefixScorer(model, tiny_tokenizer, PC)
    layers = model.model.layers
    assert scorer.last_layer == len(layers) - 1
    assert PrefixScorer(model, tiny_tokenizer, PC).last_layer == scorer.last_layer  # a second scorer: no 2nd hooks
    last = layers[-1]
    assert [len(m._forward_pre_hooks) for m in (last.self_attn.q_proj, last.self_attn.o_proj, last.mlp)] == [1, 1, 1]
    seen = {}  # rows reaching the MLP of each layer, after the trimming hook
    for i, layer in enumerate(layers):
        layer.mlp.register_forward_pre_hook(lambda m, args, i=i: seen.setdefault(i, []).append(args[0].shape[1]))
    scorer.instructions_cache()  # an ordinary forward: every row in every layer
    assert list(seen.values()) == [[len(scorer.instr_ids)]] * len(layers)
    items = [r for r in recs if r.query == recs[0].query]
    for last_layer, want_last in ((scorer.last_layer, len(items)), (-1, None)):  # -1: every layer on every row
        seen.clear()
        scorer.last_layer = last_layer
        scorer.score_items(items)
        rows = seen[0][0]
        assert len(items) > 1 and rows > 5 * len(items) and list(seen.values())[:-1] == [[rows]] * (len(layers) - 1)
        assert seen[len(layers) - 1] == [want_last or rows]  # trimmed: one row per item in the last MLP
    by_query = {}
    for r in recs:
        by_query.setdefault(r.query, []).append(r)
    groups = list(by_query.values())
    untrimmed = scorer.score_groups(groups)
    scorer.last_layer = len(layers) - 1
    for a, b in zip(scorer.score_groups(groups), untrimmed):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # models it does not know: nothing trimmed
    other = SimpleNamespace(config=SimpleNamespace(model_type="gemma2"), get_decoder=lambda: model.model)
    assert trim_last_layer(other) == -1
    assert trim_last_layer(SimpleNamespace(config=model.config, get_decoder=lambda: SimpleNamespace(layers=[]))) == -1
    last.self_attn.layer_idx = 0  # cascade_attention could not tell the last layer
    assert trim_last_layer(model) == -1


@given(st.lists(st.integers(0, 3), max_size=3),
       st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=5), max_size=4))
def test_share_common_moves_the_longest_common_start_and_keeps_every_prompt(query, items):
    shared, rest = share_common(query, items)
    assert [shared + r for r in rest] == [query + x for x in items]  # every item's prompt is unchanged
    assert all(len(r) >= 1 for r in rest)  # each item keeps its answer position
    c = len(shared) - len(query)
    if items and min(len(x) for x in items) - 1 > c:  # maximal: the next token is not common to all items
        assert len({x[c] for x in items}) > 1
    assert share_common(query, []) == (query, [])


@pytest.mark.parametrize("packed", [True, False])
def test_items_with_a_long_common_start_share_it_and_score_as_unshared(tiny_model, tiny_tokenizer, tiny_splits,
                                                                       packed):
    base = tiny_splits["test"][0]
    recs = [base.model_copy(update={"id": f"x{i}", "title": f"acme trail runner {t}"})
            for i, t in enumerate(["red", "blue", "", "red waterproof"])]  # common "item: acme trail runner"
    scorer = PrefixScorer(tiny_model, tiny_tokenizer, PC, packed=packed)
    forwards = []
    scorer._forward = lambda ids, *a, _f=scorer._forward, **k: forwards.append(ids.shape) or _f(ids, *a, **k)
    plain = score_records(tiny_model, tiny_tokenizer, recs, PC)
    np.testing.assert_allclose(scorer.score_items(recs), plain, atol=1e-5)
    np.testing.assert_allclose(scorer.score_items(recs[:1]), plain[:1], atol=1e-5)  # one item: all but its answer
    suffixes = [encode_segments(tiny_tokenizer, [item_segment(r, PC)]) + answer_prefix_ids(tiny_tokenizer)
                for r in recs]
    common = next(i for i, col in enumerate(zip(*suffixes)) if len(set(col)) > 1)
    assert common >= 4  # "item: acme trail runner", longer than the "item:" every request shares
    q_len = len(encode_segments(tiny_tokenizer, [query_segment(base)]))
    if packed:  # forwards[0]: the instructions' cache; [1]: the query and the common tokens once, then the items' rest
        assert forwards[1][1] == q_len + common + sum(len(x) - common for x in suffixes)
    else:  # [1]: the query cache, with the common tokens; [2]: the items' rest as padded rows
        assert forwards[1][1] == q_len + common
        assert tuple(forwards[2]) == (len(recs), max(len(x) for x in suffixes) - common)


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
    plain_model = copy.deepcopy(tiny_model)
    plain_model.config._attn_implementation = "sdpa"  # the model as it was before any scorer
    ids, kw = torch.tensor([[5, 6, 7]]), {"max_new_tokens": 6, "do_sample": False, "output_scores": True,
                                          "return_dict_in_generate": True, "pad_token_id": tiny_tokenizer.pad_token_id}
    got, want = tiny_model.generate(ids, **kw), plain_model.generate(ids, **kw)
    assert got.sequences.tolist() == want.sequences.tolist()
    torch.testing.assert_close(torch.stack(got.scores), torch.stack(want.scores), atol=1e-5, rtol=1e-5)


def test_a_scorer_whose_model_was_switched_to_another_attention_scores_unpacked(tiny_model, tiny_tokenizer,
                                                                                  tiny_splits):
    recs = tiny_splits["test"][:8]
    plain = score_records(tiny_model, tiny_tokenizer, recs, PC)
    scorer = PrefixScorer(tiny_model, tiny_tokenizer, PC)
    try:
        tiny_model.config._attn_implementation = "eager"  # e.g. set_attn_implementation after the scorer was made
        assert not can_pack(tiny_model)
        np.testing.assert_allclose(scorer.score_records(recs), plain, atol=1e-5)
    finally:
        tiny_model.config._attn_implementation = "taosr_cascade"


def naive_attention(q, k, v, allowed):
    """q (h, R, d), k/v (h, K, d), allowed (R, K) bool -> (R, h, d): masked softmax attention, the reference."""
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return (torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v).transpose(0, 1)


@pytest.mark.parametrize("pieces", [
    [(3, [2, 4, 1])],  # one query, three items
    [(2, [1]), (3, [2, 2]), (1, [3])],  # three queries in one forward
    [(0, [3, 3])],  # items only
])
@pytest.mark.parametrize("last_layer", [False, True])  # True: the layer whose answer rows alone are read
def test_cascade_attention_equals_masked_softmax_attention(pieces, last_layer):
    torch.manual_seed(0)
    h, kv_heads, d, p = 4, 2, 8, 5
    prefix = DynamicCache()
    prefix.update(torch.randn(1, kv_heads, p, d), torch.randn(1, kv_heads, p, d), 0)
    pack, pos, last = make_pack(prefix, p, pieces)
    pack.last_layer = 0 if last_layer else -1
    # by hand: each row's (query, segment): segment 0 = the query's tokens, i = its item i
    owner = [(g, s) for g, (q_len, lens) in enumerate(pieces)
             for s, n in [(0, q_len)] + [(i + 1, n) for i, n in enumerate(lens)] for _ in range(n)]
    rows = len(owner)
    q, k, v = torch.randn(1, h, rows, d), torch.randn(1, kv_heads, rows, d), torch.randn(1, kv_heads, rows, d)
    with packed_forward(pack):
        got, _ = cascade_attention(SimpleNamespace(num_key_value_groups=h // kv_heads, layer_idx=0), q, k, v,
                                   scaling=d ** -0.5)
    allowed = torch.zeros(rows, p + rows, dtype=torch.bool)
    allowed[:, :p] = True  # the instructions
    for r, (g, s) in enumerate(owner):
        for c in range(r + 1):  # same query; its query tokens, or the same item
            allowed[r, p + c] = owner[c][0] == g and owner[c][1] in (0, s)
    keys = torch.cat([prefix.layers[0].keys, k], 2)[0].repeat_interleave(2, 0)
    values = torch.cat([prefix.layers[0].values, v], 2)[0].repeat_interleave(2, 0)
    want = naive_attention(q[0], keys, values, allowed)
    assert got.shape == (1, rows, h, d)
    if last_layer:  # the answer rows (each item's last token) exactly; zeros on the rows no one reads
        others = [r for r in range(rows) if r not in last]
        torch.testing.assert_close(got[0, last], want[last], atol=1e-5, rtol=1e-5)
        assert not got[0, others].any()
    else:
        torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)
    # positions: each query right after the instructions, each item right after its query
    want_pos = [p + j for q_len, lens in pieces for j in list(range(q_len)) + [q_len + t for n in lens for t in range(n)]]
    assert pos == want_pos
    assert [owner[r] for r in last] == [(g, i + 1) for g, (_, lens) in enumerate(pieces) for i in range(len(lens))]


def test_score_groups_packs_several_queries_per_forward(tiny_model, tiny_tokenizer, tiny_splits):
    recs = tiny_splits["test"][:30]
    by_query: dict = {}
    for r in recs:
        by_query.setdefault(r.query, []).append(r)
    groups = list(by_query.values()) + [[]]  # an empty request too
    plain = score_records(tiny_model, tiny_tokenizer, recs, PC)
    want = {r.id: row for r, row in zip(recs, plain)}
    for budget in (2048, 60):  # all queries in one forward; queries split over forwards
        got = PrefixScorer(tiny_model, tiny_tokenizer, PC, pack_tokens=budget).score_groups(groups)
        assert [len(x) for x in got] == [len(g) for g in groups]
        for g, probs in zip(groups, got):
            np.testing.assert_allclose(probs, np.array([want[r.id] for r in g]).reshape(-1, 4), atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.lists(st.integers(1, 40), max_size=8)), max_size=8),
       st.integers(1, 120))
def test_plan_packs_covers_every_item_once_in_order_within_the_budget(groups, budget):
    plan = plan_packs([q for q, _ in groups], [lens for _, lens in groups], budget)
    assert [(g, i) for fwd in plan for g, idx in fwd for i in idx] == \
        [(g, i) for g, (_, lens) in enumerate(groups) for i in range(len(lens))]
    for fwd in plan:
        assert fwd and all(idx for _, idx in fwd)
        assert len({g for g, _ in fwd}) == len(fwd)  # a query appears once per forward
        cost = sum(groups[g][0] + sum(groups[g][1][i] for i in idx) for g, idx in fwd)
        n_items, longest = sum(len(idx) for _, idx in fwd), max(groups[g][1][i] for g, idx in fwd for i in idx)
        assert (cost <= budget and n_items * longest <= budget) or n_items == 1
