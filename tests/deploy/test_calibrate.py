"""Calibration writes the serving export; CumPT vs argmax vs expected-score comparison; vLLM gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taosr.deploy.calibrate import calibrate_model, compare_tiering
from taosr.deploy.cumpt import calibrate_beta, calibrate_cutoffs
from taosr.deploy.schema import SERVING_FILE, ServingConfig, check_label_ids, load_serving_config
from taosr.deploy.scorer import VLLMScorer
from taosr.infer.scoring import score_records
from taosr.infer.vllm_engine import vllm_generate
from taosr.modeling import build_model, label_token_ids, save
from taosr.prompts import PromptConfig
from taosr.runtime import vllm_available

PC = PromptConfig()


@pytest.fixture(scope="module")
def model_dir(tiny_tokenizer, tiny_config, tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "model"
    save(build_model(tiny_tokenizer, tiny_config), tiny_tokenizer, path)
    return path


def test_calibrate_writes_the_serving_export(model_dir, tiny_splits, tiny_tokenizer):
    from taosr.modeling import load_model

    dev = tiny_splits["dev"]
    out = calibrate_model(model_dir, dev, PC, objective="macro_f1")
    saved = json.loads((model_dir / SERVING_FILE).read_text())
    assert set(saved) >= {"beta", "objective", "dev_score", "cutoffs", "label_token_ids", "label_tokens",
                          "answer_prefix", "prompt"}
    # the same numbers as calibrating the offline (unshared) scores by hand (they agree to ~1e-8, and
    # beta / cut-offs are picked among those scores' cumulative sums / quantiles)
    model, tok = load_model(model_dir)
    probs = score_records(model, tok, dev, PC)
    gold = np.array([r.label for r in dev])
    expected = calibrate_beta(probs, gold, "macro_f1")
    cutoffs, _ = calibrate_cutoffs(probs, gold, "macro_f1")
    assert saved["beta"] == pytest.approx(expected.beta, abs=1e-6)
    assert saved["dev_score"] == pytest.approx(expected.score, abs=1e-9)
    assert saved["cutoffs"] == pytest.approx(list(cutoffs), abs=1e-6)
    assert saved["objective"] == "macro_f1" and saved["n_dev"] == len(dev)
    assert saved["label_token_ids"] == label_token_ids(tiny_tokenizer)
    assert saved["label_tokens"] == ["<irrelevant>", "<mismatch>", "<related>", "<excellent>"]
    assert saved["answer_prefix"] == "<answer>" and saved["prompt"] == PC.model_dump()
    assert saved["comparison"]["cumpt"]["macro_f1"] == pytest.approx(expected.score, abs=1e-9)
    assert out["beta"] == saved["beta"] and out["path"] == str(model_dir / SERVING_FILE)
    argmax_dev = saved["comparison"]["argmax"]["macro_f1"]
    assert saved["rule"] == ("cumpt" if expected.score > argmax_dev else "argmax")
    loaded = load_serving_config(model_dir)
    assert loaded.beta == saved["beta"] and tuple(loaded.cutoffs) == pytest.approx(cutoffs)


def test_calibrate_needs_labels(model_dir, tiny_splits):
    dev = [r.model_copy(update={"label": None}) for r in tiny_splits["dev"][:3]]
    with pytest.raises(ValueError, match="no label"):
        calibrate_model(model_dir, dev, PC)
    with pytest.raises(ValueError, match="non-empty"):
        calibrate_model(model_dir, [], PC)


def test_defaults_without_the_file(tmp_path, tiny_tokenizer):
    cfg = load_serving_config(tmp_path)
    assert cfg.beta == 0.5 and cfg.prompt == PromptConfig() and cfg.label_token_ids is None
    assert check_label_ids(cfg, tiny_tokenizer) == label_token_ids(tiny_tokenizer)
    with pytest.raises(ValueError, match="label_token_ids"):
        check_label_ids(ServingConfig(label_token_ids=[1, 2, 3, 4]), tiny_tokenizer)


def test_compare_tiering_side_by_side():
    probs = np.array([[0.05, 0.05, 0.1, 0.8],   # gold 4: every rule says 4 (E[s] = 3.65)
                      [0.4, 0.3, 0.2, 0.1],     # gold 2: argmax says 1; CumPT(0.5) and E[s] = 2.0 say 2
                      [0.9, 0.05, 0.03, 0.02]])  # gold 1: every rule says 1
    out = compare_tiering(probs, np.array([4, 2, 1]), beta=0.5, cutoffs=(1.5, 2.5, 3.5))
    assert out["cumpt"]["accuracy"] == pytest.approx(1.0)
    assert out["expected_score"]["accuracy"] == pytest.approx(1.0)
    assert out["argmax"]["accuracy"] == pytest.approx(2 / 3)
    assert out["cumpt"]["macro_f1"] == pytest.approx(0.75)  # level 3 absent: its F1 counts 0
    assert out["argmax"]["macro_f1"] == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)
    # a strict beta moves row 2 down to level 1
    assert compare_tiering(probs, np.array([4, 2, 1]), beta=0.7)["cumpt"]["accuracy"] == pytest.approx(2 / 3)


def test_argmax_is_served_where_no_beta_reaches_it_on_dev():
    """Rows where argmax is right but no single CumPT threshold gets all three: level 2 has the mode, yet the tail
    sums put CumPT at 3 (or 4) for beta <= 0.55 (row 1) and at 1 for beta > 0.55 (row 3)."""
    from taosr.deploy.calibrate import choose_rule

    probs = np.array([[0.1, 0.35, 0.25, 0.3],    # gold 2: argmax 2; tails 0.3 / 0.55 / 0.9 -> CumPT 3 up to 0.55
                      [0.05, 0.05, 0.1, 0.8],    # gold 4: every rule says 4
                      [0.45, 0.5, 0.03, 0.02]])  # gold 2: argmax 2; tails 0.02 / 0.05 / 0.55 -> CumPT 1 above 0.55
    gold = np.array([2, 4, 2])
    best = calibrate_beta(probs, gold, "accuracy")
    argmax = compare_tiering(probs, gold, best.beta)["argmax"]["accuracy"]
    assert argmax == pytest.approx(1.0) and best.score == pytest.approx(2 / 3)
    assert choose_rule(best.score, argmax) == "argmax"
    assert choose_rule(0.7, 0.7) == "argmax" and choose_rule(0.71, 0.7) == "cumpt"  # ties: no threshold needed
    assert choose_rule(0.5, 0.9, "cumpt") == "cumpt"
    with pytest.raises(ValueError, match="rule must be"):
        choose_rule(0.5, 0.9, "median")
    assert ServingConfig(rule="argmax", beta=0.9).levels(probs).tolist() == [2, 4, 2]
    assert ServingConfig(rule="cumpt", beta=0.5).levels(probs).tolist() == [3, 4, 2]
    assert ServingConfig(rule="cumpt", beta=0.56).levels(probs).tolist() == [2, 4, 1]


def test_vllm_path_is_gated_off_here(tmp_path):
    if vllm_available():
        pytest.skip("vLLM + CUDA present")
    with pytest.raises(RuntimeError, match="CUDA"):
        VLLMScorer(tmp_path)
    with pytest.raises(RuntimeError, match="CUDA"):
        vllm_generate(tmp_path, [[1, 2]], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)
