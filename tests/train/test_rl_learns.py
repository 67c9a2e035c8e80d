"""DPO and GRPO must learn: from an under-trained tiny model, a short run raises held-out accuracy.

The task is made learnable in a few steps: the query's colour word decides the level (red 4, black 3,
green 2, blue 1); items differ between training and held-out prompts. Broken set-ups must fail to
learn: flipped preference pairs, a reward that ignores the label, and a loss with the label token
masked out.

DPO starts from a model taught the answer format on shuffled labels (it ignores the colour). GRPO
starts from a model given a few SFT steps on the true labels: a policy gradient from a policy that
ignores its input sits on a plateau for hundreds of steps (docs/results.md), and the method runs GRPO
after SFT and DPO, never from scratch.
"""

from __future__ import annotations

import random

import pytest

from taosr.infer.scoring import score_records
from taosr.labels import format_answer
from taosr.modeling import ModelConfig, build_model, train_tokenizer
from taosr.prompts import PromptConfig
from taosr.records import Record
from taosr.teacher.reasoning import Reasoning
from taosr.train.configs import DPOStageConfig, GRPOStageConfig, SFTStageConfig
from taosr.train.dpo import make_pairs, run_dpo
from taosr.train.grpo import DynamicSamplingGRPOTrainer, accuracy_reward, run_grpo
from taosr.train.sft import run_sft

pytestmark = pytest.mark.slow  # a few minutes on 2 cores: `make test-method` (CI runs it)


COLOURS = {"red": 4, "black": 3, "green": 2, "blue": 1}
NOUNS = ["shoe", "lamp", "mug", "sofa", "kettle", "chair", "watch", "scarf", "tent", "bike", "desk", "fan"]
PROMPT = PromptConfig()


def records(nouns, start: int, copies: int = 1) -> list[Record]:
    return [Record(id=f"r{start + i}-{k}", query=f"{c} {n}", title=f"{n} model {i} {c}", label=lv)
            for k in range(copies) for i, (n, (c, lv)) in enumerate((n, c) for n in nouns for c in COLOURS.items())]


TRAIN = records(NOUNS[:8], 0, copies=2)
HELD_OUT = records(NOUNS[8:], 1000)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [PROMPT.instructions] + [f"query: {r.query}\nitem: {r.title}\n" for r in TRAIN + HELD_OUT]
    return train_tokenizer(texts, vocab_size=300)


def accuracy(model, tok, recs) -> float:
    probs = score_records(model, tok, recs, PROMPT, batch_size=64)
    return float(((probs.argmax(1) + 1) == [r.label for r in recs]).mean())


MODEL = ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                    seed=0)


@pytest.fixture(scope="module")
def format_state(tokenizer, tmp_path_factory):
    """A tiny model taught the answer format on shuffled labels: it answers, but not by the colour."""
    model = build_model(tokenizer, MODEL)
    rng = random.Random(0)
    shuffled = [r.model_copy(update={"label": rng.choice(list(COLOURS.values()))}) for r in TRAIN]
    run_sft(model, tokenizer, shuffled, SFTStageConfig(order="answer_only", max_steps=40, batch_size=16,
                                                       learning_rate=3e-3, save_steps=1000, bf16=False),
            tmp_path_factory.mktemp("sft"), None, PROMPT)
    return {k: v.clone() for k, v in model.state_dict().items()}


def format_only_model(tok, state):
    model = build_model(tok, MODEL)
    model.load_state_dict(state)
    return model


def dpo_pairs(flip: bool) -> list[dict]:
    """Answer-span pairs, gold vs one wrong level per training prompt (as make_pairs builds them)."""
    import pandas as pd

    rng = random.Random(1)
    rows = []
    for r in TRAIN:
        wrong = rng.choice([lv for lv in COLOURS.values() if lv != r.label])
        rows += [{"prompt_id": r.id, "sample_index": 0, "text": format_answer(wrong) + "<think>x</think>",
                  "parsed": wrong, "gold": r.label, "correct": False}]
    pairs, _ = make_pairs(pd.DataFrame(rows), TRAIN, None, "answer_first", PROMPT, DPOStageConfig().pairs, span="answer")
    assert all(p["chosen"] == format_answer(next(r.label for r in TRAIN if r.id == p["prompt_id"])) for p in pairs)
    assert all(p["rejected"].endswith("</answer>") for p in pairs)  # cut after the answer
    if flip:
        pairs = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    return pairs


@pytest.mark.parametrize("flip", [False, True])
def test_dpo_on_the_answer_span_learns_and_flipped_pairs_unlearn(tokenizer, format_state, tmp_path, flip):
    model = format_only_model(tokenizer, format_state)
    before = accuracy(model, tokenizer, HELD_OUT)
    run_dpo(model, tokenizer, dpo_pairs(flip), DPOStageConfig(max_steps=60, batch_size=16, learning_rate=5e-3, beta=1.0,
                                                              save_steps=1000, bf16=False), tmp_path / "dpo")
    after = accuracy(model, tokenizer, HELD_OUT)
    if flip:
        assert after < before + 0.05, (before, after)
    else:
        assert after >= before + 0.25, (before, after)


class EchoTeacher:
    """Reasoning that agrees with whatever label the record carries (here the shuffled ones)."""

    def reason(self, record: Record) -> Reasoning:
        return Reasoning(text=f"query {record.query} item {record.title}", level=record.label, rule_ids=())


def test_dpo_on_the_answer_span_learns_after_answer_first_sft(tokenizer, tmp_path):
    """Post-CoT DPO: the start model was trained on answer-first responses (its output goes on after </answer>
    with the reasoning), and the pairs' prompts are tokenized from their records. On this easy task DPO also
    learns with an EOS after </answer>; tests/train/test_stage2.py checks that the rows have none."""
    model = build_model(tokenizer, MODEL)
    rng = random.Random(0)
    shuffled = [r.model_copy(update={"label": rng.choice(list(COLOURS.values()))}) for r in TRAIN]
    run_sft(model, tokenizer, shuffled, SFTStageConfig(order="answer_first", max_steps=40, batch_size=16,
                                                       learning_rate=3e-3, save_steps=1000, bf16=False),
            tmp_path / "sft", EchoTeacher(), PROMPT)
    before = accuracy(model, tokenizer, HELD_OUT)
    run_dpo(model, tokenizer, dpo_pairs(False), DPOStageConfig(max_steps=60, batch_size=16, learning_rate=5e-3,
                                                               beta=1.0, save_steps=1000, bf16=False),
            tmp_path / "dpo", records=TRAIN)
    after = accuracy(model, tokenizer, HELD_OUT)
    assert after >= before + 0.25, (before, after)


def broken_reward(completions, gold, **_):
    return [1.0 if "<answer>" in c else 0.0 for c in completions]  # ignores the label


@pytest.fixture(scope="module")
def undertrained_state(tokenizer, tmp_path_factory):
    """A tiny model after 40 SFT steps on the true labels: mean P(gold) about 0.57 on held-out prompts."""
    model = build_model(tokenizer, MODEL)
    run_sft(model, tokenizer, TRAIN, SFTStageConfig(order="answer_only", max_steps=40, batch_size=16,
                                                    learning_rate=3e-3, save_steps=1000, bf16=False),
            tmp_path_factory.mktemp("sft_true"), None, PROMPT)
    return {k: v.clone() for k, v in model.state_dict().items()}


def p_gold(model, tok, recs) -> float:
    probs = score_records(model, tok, recs, PROMPT, batch_size=64)
    return float(probs[range(len(recs)), [r.label - 1 for r in recs]].mean())


@pytest.mark.parametrize("mode", ["ok", "broken_reward", "label_masked"])
def test_grpo_label_only_learns_and_broken_setups_do_not(tokenizer, undertrained_state, tmp_path, monkeypatch, mode):
    import taosr.train.grpo as grpo

    model = format_only_model(tokenizer, undertrained_state)
    before = p_gold(model, tokenizer, HELD_OUT)
    if mode == "broken_reward":
        monkeypatch.setattr(grpo, "accuracy_reward", broken_reward)
    if mode == "label_masked":  # rollouts are [label, </answer>]: drop the label token from the loss
        compute_loss = DynamicSamplingGRPOTrainer._compute_loss

        def without_label(self, model, inputs):
            mask = inputs["completion_mask"].clone()  # (b, T)
            mask[:, 0] = 0
            return compute_loss(self, model, {**inputs, "completion_mask": mask})

        monkeypatch.setattr(DynamicSamplingGRPOTrainer, "_compute_loss", without_label)
    cfg = GRPOStageConfig(max_steps=40, prompts_per_step=8, num_generations=8, learning_rate=1e-3, beta=0.0,
                          format_weight=0.0, seed=0, bf16=False)
    summary = run_grpo(model, tokenizer, TRAIN, cfg, tmp_path / "grpo", PROMPT, order="answer_first")
    after = p_gold(model, tokenizer, HELD_OUT)
    print(f"{mode}: held-out P(gold) {before:.3f} -> {after:.3f}")
    assert summary["rollout_prefix"] == "<answer>" and summary["completion_tokens"] == 2
    if mode == "ok":
        assert after >= before + 0.10, (before, after)
    else:
        assert after < before + 0.03, (before, after)


def test_accuracy_reward_is_the_one_grpo_uses():
    assert accuracy_reward([format_answer(3)], [3]) == [1.0] and accuracy_reward([format_answer(3)], [4]) == [0.0]
