"""Token budgets per segment: one truncation rule, the same ids in training, scoring, prefix-shared serving."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from taosr.infer.prefix import PrefixScorer
from taosr.infer.scoring import score_records
from taosr.prompts import (
    PromptConfig,
    answer_prefix_ids,
    encode_example,
    encode_prompt,
    encode_segments,
    item_segment,
    query_segment,
)
from taosr.records import Record

PC = PromptConfig()
EMOJI = "\U0001F600"


def _old_prompt(tok, r: Record, cfg: PromptConfig) -> list[int]:
    """The prompt before budgets existed: the three segments, uncut."""
    return encode_segments(tok, [cfg.instructions, query_segment(r), item_segment(r, cfg)])


def test_prompts_within_budget_are_unchanged(tiny_tokenizer, tiny_splits):
    for r in tiny_splits["test"][:60]:
        assert encode_prompt(tiny_tokenizer, r, PC) == _old_prompt(tiny_tokenizer, r, PC)


def test_huge_fields_are_cut_to_the_budgets_with_the_newline_kept(tiny_tokenizer):
    tok, nl = tiny_tokenizer, tiny_tokenizer("\n", add_special_tokens=False)["input_ids"]
    instr = len(encode_segments(tok, [PC.instructions]))
    rec = Record(query="red " * 5000, title="shoe " + "x" * 10_000_000, description=EMOJI * 2000,
                 attributes={f"a{i}": EMOJI * 2000 for i in range(30)})
    t0 = time.perf_counter()
    ids = encode_prompt(tok, rec, PC)
    assert time.perf_counter() - t0 < 5
    assert len(ids) == instr + PC.max_query_tokens + min(PC.max_item_tokens, PC.max_prompt_tokens - instr - PC.max_query_tokens)
    q = ids[instr:instr + PC.max_query_tokens]
    assert q[-len(nl):] == nl and ids[-len(nl):] == nl
    assert tok.decode(q).startswith("query: red red")
    # the whole prompt budget binds before the item budget
    small = PromptConfig(max_prompt_tokens=instr + 20, max_query_tokens=8)
    assert len(encode_prompt(tok, rec, small)) == instr + 20
    # training examples use the same prompt
    ex = encode_example(tok, rec.model_copy(update={"label": 4}), None, "answer_only", PC)
    assert ex["input_ids"][:len(ids)] == ids and sum(ex["completion_mask"]) == len(ex["input_ids"]) - len(ids)


def test_prefix_scorer_and_plain_scorer_cut_the_same_way(tiny_model, tiny_tokenizer, tiny_splits):
    cfg = PromptConfig(max_query_tokens=12, max_item_tokens=24, max_prompt_tokens=70)
    q = "blue " * 300
    recs = [Record(id=str(i), query=q, title=t, description=EMOJI * 500)
            for i, t in enumerate(["lamp " * 400, EMOJI * 2000, "desk"])]
    recs += tiny_splits["test"][:6]
    scorer = PrefixScorer(tiny_model, tiny_tokenizer, cfg)
    queries, suffixes = scorer.encode_groups([recs[:3]])
    answer = answer_prefix_ids(tiny_tokenizer)
    for r, s in zip(recs[:3], suffixes[0]):
        assert scorer.instr_ids + queries[0] + s == encode_prompt(tiny_tokenizer, r, cfg) + answer
    np.testing.assert_allclose(scorer.score_records(recs), score_records(tiny_model, tiny_tokenizer, recs, cfg),
                               atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=400), st.text(min_size=1, max_size=2000),
       st.dictionaries(st.text(min_size=1, max_size=5), st.text(min_size=1, max_size=300), max_size=5))
def test_any_text_fits_the_budget(tiny_tokenizer, query, title, attributes):
    cfg = PromptConfig(max_query_tokens=10, max_item_tokens=30, max_prompt_tokens=200)
    try:
        rec = Record(query=query, title=title, attributes=attributes)
    except ValueError:
        return  # blank after stripping: the loader rejects it
    instr = len(encode_segments(tiny_tokenizer, [cfg.instructions]))
    ids = encode_prompt(tiny_tokenizer, rec, cfg)
    assert len(ids) <= instr + cfg.max_query_tokens + cfg.max_item_tokens


CHAT = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


def test_chat_layout_wraps_the_message_and_keeps_its_end_when_cut(tiny_model, tiny_tokenizer, tiny_splits):
    import copy

    import pytest

    from taosr.prompts import chat_prompt_config, encode_items, prompt_text

    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt_config(tiny_tokenizer, PC)
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHAT
    cfg = chat_prompt_config(tok, PromptConfig(max_query_tokens=12, max_item_tokens=24, max_prompt_tokens=80))
    assert cfg.instructions == "<u>" + PC.instructions and cfg.prompt_suffix == "</u><a>"
    r = tiny_splits["test"][0]
    message = PC.instructions + query_segment(r, cfg) + item_segment(r, cfg)
    assert prompt_text(r, cfg) == tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                          add_generation_prompt=True)
    tail = tok(cfg.prompt_suffix, add_special_tokens=False)["input_ids"]
    long = Record(id="x", query="blue " * 300, title="lamp " * 400)
    ids = encode_prompt(tok, long, cfg)
    instr = encode_segments(tok, [cfg.instructions])
    assert ids[-len(tail):] == tail and len(ids) == len(instr) + 12 + 24 + len(tail)
    tight = cfg.model_copy(update={"max_prompt_tokens": len(instr) + 30})  # the suffix counts in the budget
    assert len(encode_prompt(tok, long, tight)) == len(instr) + 30
    assert encode_items(tok, [long], cfg, [0])[0][-len(tail):] == tail
    recs = [long, *tiny_splits["test"][:4]]
    np.testing.assert_allclose(PrefixScorer(tiny_model, tok, cfg).score_records(recs),
                               score_records(tiny_model, tok, recs, cfg), atol=1e-5)
