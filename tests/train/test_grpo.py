"""Stage 3: reward/parser on adversarial outputs, offline filter, class balance, online group mask."""

import pandas as pd
import pytest
import torch

from taosr.records import Record
from taosr.train.grpo import (
    GRPOStageConfig,
    accuracy_reward,
    apply_group_mask,
    format_reward,
    label_mix_cv,
    select_prompts,
    zero_spread_mask,
)


@pytest.mark.parametrize("text,gold,reward", [
    ("<answer><mismatch></answer>", 2, 1.0),
    ("blah <answer><mismatch></answer> trailing text", 2, 1.0),  # extra text around the answer is fine
    ("<answer><mismatch></answer><answer><excellent></answer>", 2, 0.0),  # two answers: no reward
    ("<mismatch>", 2, 0.0),  # missing tags
    ("<think>it is <mismatch> clearly</think>", 2, 0.0),  # label token only inside the reasoning
    ("<think>maybe <excellent></think><answer><mismatch></answer>", 2, 1.0),  # reasoning label ignored
    ("<think>maybe <excellent></think><answer><mismatch></answer>", 4, 0.0),
    ("<answer>Mismatch</answer>", 2, 1.0),  # the name also parses
    ("<answer><mismatch>", 2, 0.0),  # unterminated answer
    ("<think>unterminated <answer><mismatch></answer>", 2, 0.0),  # answer swallowed by open reasoning
])
def test_accuracy_reward_adversarial(text, gold, reward):
    assert accuracy_reward([text], [gold]) == [reward]


def test_format_reward():
    assert format_reward(["<answer><related></answer>", "<related>", "<answer>x</answer>"]) == [1.0, 0.0, 0.0]


def _recs(spec):
    return [Record(id=f"p{i}", query=f"q{i}", title="t", label=lv) for i, lv in enumerate(spec)]


def test_offline_filter_and_balance():
    recs = _recs([4, 4, 4, 4, 2, 2, 1, 3, 3])
    correct = {"p0": 4, "p1": 2, "p2": 1, "p3": 0, "p4": 3, "p5": 4, "p6": 2, "p7": 1, "p8": 2}
    rows = [{"prompt_id": pid, "sample_index": i, "correct": i < c} for pid, c in correct.items() for i in range(4)]
    kept, stats = select_prompts(recs, pd.DataFrame(rows), GRPOStageConfig(balance_classes=False))
    assert sorted(r.id for r in kept) == ["p1", "p2", "p4", "p6", "p7", "p8"]
    assert stats["dropped_too_easy"] == 2 and stats["dropped_too_hard"] == 1 and stats["gamma"] == 4
    # gamma = 2 also drops prompts with 2+ correct
    kept2, _ = select_prompts(recs, pd.DataFrame(rows), GRPOStageConfig(gamma=2, balance_classes=False))
    assert sorted(r.id for r in kept2) == ["p2", "p7"]
    # class balance: one per level among the kept (4: p1,p2; 2: p4; 1: p6; 3: p7,p8) -> 4 prompts, CV 0
    kept3, s3 = select_prompts(recs, pd.DataFrame(rows), GRPOStageConfig(balance_mode="downsample"))
    assert sorted(r.label for r in kept3) == [1, 2, 3, 4]
    assert s3["cv_after"] == 0.0 and s3["cv_before"] > 0 and s3["dropped_balance"] == 2
    # oversample (the default): no mixed prompt is lost; rarer levels repeat up to the largest level's count
    kept4, s4 = select_prompts(recs, pd.DataFrame(rows), GRPOStageConfig())
    assert sorted(r.label for r in kept4) == [1, 1, 2, 2, 3, 3, 4, 4] and s4["dropped_balance"] == 0
    assert {r.id for r in kept4} == {"p1", "p2", "p4", "p6", "p7", "p8"} and s4["cv_after"] == 0.0
    assert s4["distinct_per_level"] == {1: 1, 2: 1, 3: 2, 4: 2}


def test_label_mix_cv():
    assert label_mix_cv([1, 2, 3, 4]) == 0.0
    assert label_mix_cv([4, 4, 4, 4]) == pytest.approx(3 ** 0.5)


def test_zero_spread_mask_on_hand_made_groups():
    acc = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1], dtype=torch.float)
    keep = zero_spread_mask(acc, 4, 1e-6)
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 4 + [True] * 4


def test_apply_group_mask_zeroes_rows():
    out = {"completion_mask": torch.ones(4, 3, dtype=torch.long), "advantages": torch.tensor([1.0, -1.0, 0.5, 0.0])}
    out = apply_group_mask(out, torch.tensor([True, True, False, False]))
    assert out["completion_mask"].sum(1).tolist() == [3, 3, 0, 0]
    assert out["advantages"].tolist() == [1.0, -1.0, 0.0, 0.0]


def test_masked_groups_add_no_gradient_and_leave_the_normaliser(tiny_model, tiny_tokenizer, tmp_path):
    """TRL's own loss on a batch with masked rows == the loss on the kept rows alone."""
    from datasets import Dataset
    from trl import GRPOConfig

    from taosr.train.grpo import DynamicSamplingGRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, beta=0.0,
                      loss_type="dapo", use_cpu=True, report_to="none", max_completion_length=4)
    trainer = DynamicSamplingGRPOTrainer(model=tiny_model, reward_funcs=[accuracy_reward], args=args,
                                         train_dataset=Dataset.from_list([{"prompt": "x", "gold": 1}] * 4),
                                         processing_class=tiny_tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    # eager attention: SDPA takes another kernel when a padding mask is present, which alone moves gradients ~0.3%
    tiny_model.set_attn_implementation("eager")
    torch.manual_seed(0)
    b, p, t = 4, 5, 4
    full = {"prompt_ids": torch.randint(10, 300, (b, p)), "prompt_mask": torch.ones(b, p, dtype=torch.long),
            "completion_ids": torch.randint(10, 300, (b, t)), "completion_mask": torch.ones(b, t, dtype=torch.long),
            "advantages": torch.tensor([1.0, -1.0, 0.7, -0.7])}
    keep = torch.tensor([True, True, False, False])
    masked = apply_group_mask({k: v.clone() for k, v in full.items()}, keep)
    masked["num_items_in_batch"] = masked["completion_mask"].sum()
    subset = {k: v[:2] for k, v in full.items()}
    subset["num_items_in_batch"] = subset["completion_mask"].sum()

    def grads(inputs):
        tiny_model.zero_grad()
        tiny_model.train()
        trainer._compute_loss(tiny_model, inputs).backward()
        return torch.cat([q.grad.flatten() for q in tiny_model.parameters() if q.grad is not None])

    g_masked, g_subset = grads(masked), grads(subset)
    assert masked["num_items_in_batch"].item() == 8  # only the kept rows' tokens are counted
    torch.testing.assert_close(g_masked, g_subset, atol=1e-6, rtol=1e-5)
    # and without the recount the masked groups would dilute the gradient
    diluted = dict(masked, num_items_in_batch=full["completion_mask"].sum())
    assert grads(diluted).norm() < 0.6 * g_masked.norm()


def test_short_grpo_run_raises_mean_reward(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    """After a short SFT (format learned), GRPO on prompts whose gold is always 'Excellent' moves the reward up."""
    from taosr.prompts import PromptConfig
    from taosr.train.configs import SFTStageConfig
    from taosr.train.grpo import run_grpo
    from taosr.train.sft import run_sft

    pc = PromptConfig()
    run_sft(tiny_model, tiny_tokenizer, tiny_splits["train"][:160],
            SFTStageConfig(order="answer_only", max_steps=80, batch_size=16, learning_rate=3e-3, save_steps=1000),
            tmp_path / "sft", None, pc)
    prompts = [r.model_copy(update={"label": 4}) for r in tiny_splits["train"][:16]]
    cfg = GRPOStageConfig(num_generations=4, prompts_per_step=4, max_steps=16, learning_rate=1e-3, beta=0.0,
                          temperature=0.7, max_completion_length=6, format_weight=0.0, offline_filter=False, balance_classes=False)
    s = run_grpo(tiny_model, tiny_tokenizer, prompts, cfg, tmp_path / "grpo", pc)
    rewards = [r for _, r in s["reward_curve"]]
    assert len(rewards) == 16
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.15, rewards
    assert s["groups_total"] == 16 * 4 and 0 <= s["groups_masked"] <= s["groups_total"]


def test_label_stratified_candidates_are_even_where_the_pool_allows():
    from collections import Counter

    from taosr.records import Record
    from taosr.train.grpo import label_stratified

    pool = [Record(id=f"{lv}-{i}", query="q", title="t", label=lv)
            for lv, k in ((4, 50), (3, 3), (2, 40), (1, 9)) for i in range(k)]
    got = label_stratified(pool, 24, seed=1)
    counts = Counter(r.label for r in got)
    assert len(got) == 24 and len({r.id for r in got}) == 24
    assert counts[3] == 3  # the rare level gives all it has
    assert counts[1] == 7 and counts[2] == 7 and counts[4] == 7  # the rest share the remainder evenly
    assert [r.id for r in got] == [r.id for r in label_stratified(pool, 24, seed=1)]  # deterministic
    assert len(label_stratified(pool, 1000)) == len(pool)
