"""A pretrained model's new label/tag tokens: their rows start at the words they stand for, not all alike."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from taosr.labels import LABEL_TOKENS, SPECIAL_TOKENS
from taosr.modeling import ensure_special_tokens, label_token_ids, token_words

WORDS = ["<eos>", "<unk>", "end", "think", "answer", "excellent", "related", "mismatch", "irrelevant", "query", "item"]


def pretrained_like(tied: bool):
    """A word-level tokenizer without the label/tag tokens, and a small model over it (as a hub model arrives)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=tied)
    return Qwen3ForCausalLM(cfg), hf


def test_token_words():
    assert token_words("<excellent>") == " excellent" and token_words("</answer>") == " end answer"


@pytest.mark.parametrize("tied", [True, False])
def test_new_rows_start_at_their_words(tied):
    model, tok = pretrained_like(tied)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    ensure_special_tokens(model, tok, "words")
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == len(WORDS) + len(SPECIAL_TOKENS)
    torch.testing.assert_close(emb[: len(WORDS)], emb0)  # the pretrained rows are untouched
    for level, ids in zip((1, 2, 3, 4), label_token_ids(tok), strict=True):
        word = WORDS.index(LABEL_TOKENS[level].strip("<>"))
        torch.testing.assert_close(emb[ids], emb0[word])
        torch.testing.assert_close(head[ids], head0[word])
    close = tok.convert_tokens_to_ids("</answer>")
    torch.testing.assert_close(emb[close], (emb0[WORDS.index("end")] + emb0[WORDS.index("answer")]) / 2)
    rows = emb[label_token_ids(tok)]
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 0.01  # four distinct label rows


def test_mean_init_makes_every_new_row_alike():
    """Why "words" is the default: transformers' mean start gives the four labels one row (measured in
    docs/results.md: SmolLM2 answer-only SFT then stays at the majority class)."""
    model, tok = pretrained_like(True)
    ensure_special_tokens(model, tok, "mean")
    rows = model.get_input_embeddings().weight[label_token_ids(tok)]
    assert torch.cdist(rows, rows).max() < 1e-4
    with pytest.raises(ValueError, match="new_token_init"):
        ensure_special_tokens(*pretrained_like(True), "random")
