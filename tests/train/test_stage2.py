"""Stage 2: resumable pass@N sampling and a DPO run that widens the preference margin."""

import random

import pandas as pd
import pytest
import torch

from taosr.prompts import PromptConfig, encode_prompt, prompt_text, response_text
from taosr.teacher.reasoning import RuleTeacher
from taosr.train.configs import DPOStageConfig, SampleConfig
from taosr.train.dpo import make_pairs, run_dpo, tokenize_pairs
from taosr.train.pairs import PairPolicy
from taosr.train.sample import pass_at_k_report, run_sampling

PC = PromptConfig()


class Killed(Exception):
    pass


def test_sampling_killed_and_resumed_equals_uninterrupted(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    recs = tiny_splits["train"][:10]
    cfg = SampleConfig(n=3, max_new_tokens=6, shard_prompts=4, batch_size=4, seed=1)
    full = run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "a", PC)

    def die(k):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "b", PC, after_shard=die)
    assert len(list((tmp_path / "b").glob("samples-*.parquet"))) == 2  # shards 0 and 1 written, 2 missing
    resumed = run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "b", PC)
    assert len(full) == 30 and resumed.equals(full)
    assert not resumed.duplicated(["prompt_id", "sample_index"]).any()
    assert set(resumed.prompt_id) == {r.id for r in recs}


def test_sampling_refuses_to_mix_prompts_or_settings(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    recs = tiny_splits["train"][:6]
    cfg = SampleConfig(n=2, max_new_tokens=4, shard_prompts=4, batch_size=4, seed=1)
    first = run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "s", PC)
    again = run_sampling(tiny_model, tiny_tokenizer, recs, cfg.model_copy(update={"batch_size": 2}), tmp_path / "s", PC)
    assert again.equals(first)  # the batch size does not change the samples: reused
    with pytest.raises(ValueError, match="prompt_ids_sha256"):
        run_sampling(tiny_model, tiny_tokenizer, recs[::-1], cfg, tmp_path / "s", PC)
    with pytest.raises(ValueError, match="sample.temperature"):
        run_sampling(tiny_model, tiny_tokenizer, recs, cfg.model_copy(update={"temperature": 0.5}), tmp_path / "s", PC)


def test_sampling_folder_without_manifest_is_checked_shard_by_shard(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    recs = tiny_splits["train"][:6]
    cfg = SampleConfig(n=2, max_new_tokens=4, shard_prompts=4, batch_size=4, seed=1)
    run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "s", PC)
    (tmp_path / "s" / "sampling.json").unlink()  # a folder written before the manifest existed
    with pytest.raises(ValueError, match="samples-00000.parquet: holds samples of other prompts"):
        run_sampling(tiny_model, tiny_tokenizer, tiny_splits["train"][6:12], cfg, tmp_path / "s", PC)
    assert len(run_sampling(tiny_model, tiny_tokenizer, recs, cfg, tmp_path / "s", PC)) == 12
    assert (tmp_path / "s" / "sampling.json").exists()


def test_pass_at_k_report_from_samples():
    df = pd.DataFrame({"prompt_id": ["a"] * 4 + ["b"] * 4, "sample_index": list(range(4)) * 2,
                       "correct": [True, False, False, False] + [False] * 4})
    rep = pass_at_k_report(df)
    assert rep[1] == pytest.approx((0.25 + 0) / 2)
    assert rep[4] == pytest.approx(0.5)


def _logp(model, tok, prompt: str, completion: str) -> float:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model(ids).logits[0, len(p) - 1:-1]
    return float(torch.log_softmax(logits, -1)[torch.arange(len(c)), torch.tensor(c)].sum())


def test_dpo_raises_the_margin(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    from taosr.modeling import load_model, save

    save(tiny_model, tiny_tokenizer, tmp_path / "sft")  # DPO's reference is the saved SFT checkpoint
    model, tok = load_model(tmp_path / "sft")
    rng = random.Random(0)
    pairs = []
    for r in tiny_splits["train"][:24]:
        wrong = rng.choice([lv for lv in (1, 2, 3, 4) if lv != r.label])
        pairs.append({"prompt": prompt_text(r, PC), "chosen": response_text(r.label, None, "answer_only"),
                      "rejected": response_text(wrong, None, "answer_only"), "kind": "oracle"})

    def margin():
        model.eval()
        return sum(_logp(model, tok, p["prompt"], p["chosen"]) - _logp(model, tok, p["prompt"], p["rejected"])
                   for p in pairs) / len(pairs)

    before = margin()
    s = run_dpo(model, tok, pairs, DPOStageConfig(max_steps=12, batch_size=8, learning_rate=1e-3, beta=0.1, sft_weight=0.0), tmp_path / "dpo")
    after = margin()
    assert after > before + 0.5, (before, after)
    assert s["steps"] == 12 and (tmp_path / "dpo" / "model" / "model.safetensors").exists()
    assert s["beta"] == 0.1


@pytest.mark.parametrize(("order", "beta"), [("answer_first", 2.0), ("think_first", 0.1)])
def test_dpo_beta_default_follows_the_span(tiny_model, tiny_tokenizer, tiny_splits, tmp_path, order, beta):
    """Label-only (answer-span) DPO defaults to beta 2.0, whole responses to 0.1 (docs/results.md)."""
    r = tiny_splits["train"][0]
    pairs = [{"prompt": prompt_text(r, PC), "chosen": response_text(r.label, None, "answer_only"),
              "rejected": response_text(1 if r.label != 1 else 2, None, "answer_only"), "kind": "oracle"}] * 2
    s = run_dpo(tiny_model, tiny_tokenizer, pairs, DPOStageConfig(max_steps=1, batch_size=2), tmp_path, order)
    assert s["beta"] == beta


def test_dpo_rows_use_the_scoring_prompt_ids_and_end_answer_spans_without_eos(tiny_tokenizer, tiny_splits):
    """The prompt ids of a DPO row are the ones SFT and scoring build; a response cut after </answer> gets no EOS
    (the model's response goes on there), a whole response does; a pair without its record falls back to its
    prompt text."""
    tok, (a, b) = tiny_tokenizer, tiny_splits["train"][:2]
    pairs = [{"prompt_id": r.id, "prompt": prompt_text(r, PC), "chosen": response_text(r.label, None, "answer_only"),
              "rejected": response_text(1 if r.label != 1 else 2, None, "answer_only")} for r in (a, b)]
    cut = tokenize_pairs(tok, pairs, [a], PC, eos=False)
    assert cut[0]["prompt_ids"] == encode_prompt(tok, a, PC)
    assert cut[1]["prompt_ids"] == tok(prompt_text(b, PC), add_special_tokens=False)["input_ids"]
    span = tok(response_text(a.label, None, "answer_only"), add_special_tokens=False)["input_ids"]
    assert cut[0]["chosen_ids"] == span and tok.eos_token_id not in cut[0]["rejected_ids"]
    whole = tokenize_pairs(tok, pairs, [a, b], PC, eos=True)
    assert whole[0]["chosen_ids"] == span + [tok.eos_token_id] and whole[1]["rejected_ids"][-1] == tok.eos_token_id


def test_make_pairs_from_samples_uses_teacher_for_oracle(tiny_splits):
    recs = tiny_splits["train"][:2]
    a, b = recs
    wrong_a = 1 if a.label != 1 else 2
    rows = [  # prompt a: one right, one wrong -> self-correction; prompt b: all wrong -> oracle
        {"prompt_id": a.id, "sample_index": 0, "text": response_text(a.label, None, "answer_only"), "parsed": a.label, "gold": a.label, "correct": True},
        {"prompt_id": a.id, "sample_index": 1, "text": response_text(wrong_a, None, "answer_only"), "parsed": wrong_a, "gold": a.label, "correct": False},
        {"prompt_id": b.id, "sample_index": 0, "text": "garbage", "parsed": None, "gold": b.label, "correct": False},
    ]
    pairs, counts = make_pairs(pd.DataFrame(rows).astype({"parsed": "Int64"}), recs, RuleTeacher(), "answer_first", PC, PairPolicy())
    assert counts["self_correction"] == 1 and counts["oracle"] == 1
    oracle = next(p for p in pairs if p["kind"] == "oracle")
    assert oracle["chosen"].startswith(response_text(b.label, None, "answer_only"))  # answer first, then reasoning
    assert "judgement:" in oracle["chosen"] and oracle["rejected"] == "garbage"
