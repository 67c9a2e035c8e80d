"""SFT extensions while dev still rises: the loop, the cap, resuming, and what the table and later stages see."""

import pytest
from rich.console import Console

import taosr.run.demo as demo_mod
from taosr.run.demo import Demo
from taosr.run.extend import joined_train
from taosr.run.presets import load_preset


def test_joined_train_sums_budgets_and_joins_curves_without_each_start_point():
    base = {"steps": 600, "epochs": 6.0, "dev_curve": [(300, .5), (600, .7)], "examples": 10}
    ext = {"steps": 200, "epochs": 2.0, "dev_curve": [(0, .7), (100, .8), (200, .75)], "examples": 10}
    j = joined_train([base, ext])
    assert j["dev_curve"] == [(300, .5), (600, .7), (700, .8), (800, .75)]
    assert (j["steps"], j["epochs"], j["extensions"]) == (800, 8.0, 1)
    assert (j["dev_best_step"], j["dev_best_macro_f1"], j["dev_best_epochs"]) == (700, .8, 7.0)
    kept_start = joined_train([base, {**ext, "dev_curve": [(0, .7), (100, .5), (200, .69)]}])
    assert (kept_start["dev_best_step"], kept_start["dev_best_epochs"]) == (600, 6.0)  # the extension was not kept
    assert joined_train([base])["extensions"] == 0


class FakeDev:
    def __init__(self, curve):
        self.curve = curve

    def summary(self):
        best = max(self.curve, key=lambda x: x[1])
        return {"dev_best_step": best[0], "dev_best_macro_f1": best[1], "dev_curve": self.curve}


@pytest.fixture
def fake_training(monkeypatch):
    """Training replaced by recorded calls; dev curves: the base run and two extensions rise, the third is flat."""
    curves = [[(300, .5), (600, .7)], [(0, .7), (100, .75), (200, .80)], [(0, .80), (100, .82), (200, .84)],
              [(0, .84), (100, .845), (200, .84)], [(0, .84), (100, .84), (200, .84)]]
    trained, served = [], []

    def dev_select(self, model, tok, order, steps, checks=None, include_start=None):
        served.append(include_start)
        return [FakeDev(curves[len(served) - 1])]

    def run_sft(model, tok, recs, cfg, out_dir, *a, **k):
        trained.append((out_dir.name, cfg.epochs, cfg.seed))
        return {"steps": int(100 * cfg.epochs), "epochs": cfg.epochs}

    monkeypatch.setattr(demo_mod, "load_model", lambda path: (None, None))
    monkeypatch.setattr(demo_mod, "run_sft", run_sft)
    monkeypatch.setattr(Demo, "dev_select", dev_select)
    monkeypatch.setattr(Demo, "evaluate", lambda self, m, t, order, stage: (
        {"macro_f1": 0.1 * len(trained), "accuracy": 0.5, "pred": [len(trained)]}, {}))
    return trained, served, curves


def make_demo(tmp_path, **ext) -> Demo:
    over = {"run": {"runs_dir": str(tmp_path)}, "sft_dev_checks": 2, "converged_within": 1.5,
            "sft_by_order": {"answer_first": {"epochs": 6.0}}, "sft_extend": {"epochs": 2.0, **ext}}
    d = Demo(load_preset("tiny", "t", over), Console())
    d.splits = {"train": [None] * 10}
    return d


def test_sft_extends_while_dev_rises_and_later_stages_read_the_last_extension(tmp_path, fake_training):
    trained, served, _ = fake_training
    d = make_demo(tmp_path)
    d.sft("answer_first", "post-CoT")
    # rising after the base run (+20 points) and the first two extensions (+5, +2); not after the third
    assert trained == [("sft_answer_first", 6.0, 0), ("sft_answer_first_ext1", 2.0, 1),
                       ("sft_answer_first_ext2", 2.0, 2), ("sft_answer_first_ext3", 2.0, 3)]
    assert served == [False, True, True, True]  # each extension's start model is a dev candidate
    assert d.sft_stage("answer_first") == "sft_answer_first_ext3" and d.sft_stage("think_first") == "sft_think_first"
    (row, m, meta), = d.rows
    assert (row, meta["key"], meta["order"]) == ("post-CoT", "sft_answer_first", "answer_first")
    assert m["pred"] == [4] and m["train"]["extensions"] == 3 and m["train"]["epochs"] == 12.0
    assert m["train"]["dev_best_macro_f1"] == .845 and m["train"]["steps"] == 1200
    assert m["train"]["dev_best_epochs"] == 11.0

    again = make_demo(tmp_path)
    again.sft("answer_first", "post-CoT")  # every part read back, nothing trained again
    assert len(trained) == 4 and again.sft_stage("answer_first") == "sft_answer_first_ext3"
    with pytest.raises(ValueError, match=r"sft_answer_first_ext1: ran with other settings \(extension.max_epochs"):
        make_demo(tmp_path, max_epochs=9.0).sft("answer_first", "post-CoT")


def test_sft_extension_stops_at_the_epoch_cap_and_is_off_by_default(tmp_path, fake_training):
    trained, _, _ = fake_training
    make_demo(tmp_path / "a", max_epochs=8.0).sft("answer_first", "post-CoT")
    assert [t[0] for t in trained] == ["sft_answer_first", "sft_answer_first_ext1"]  # 6 + 2 epochs reach the cap
    trained.clear()
    d = make_demo(tmp_path / "b", epochs=0.0)
    d.sft("answer_first", "post-CoT")
    assert [t[0] for t in trained] == ["sft_answer_first"] and d.rows[0][2]["key"] == "sft_answer_first"
    assert load_preset("instrument", "t").sft_extend.epochs == 0.0
    assert load_preset("regime-noisy-30", "t").sft_extend.epochs == 2.0


def test_an_extension_that_keeps_its_start_model_hands_on_the_stage_it_started_from(tmp_path, fake_training):
    trained, _, curves = fake_training
    curves[1:] = [[(0, .7), (100, .55), (200, .68)]]  # a restart that never gets back above its start
    d = make_demo(tmp_path)
    d.sft("answer_first", "post-CoT")
    assert [t[0] for t in trained] == ["sft_answer_first", "sft_answer_first_ext1"]
    assert d.sft_stage("answer_first") == "sft_answer_first"  # later stages stay children of the 6-epoch model
    m = d.rows[0][1]
    assert (m["train"]["extensions"], m["train"]["dev_best_epochs"], m["train"]["dev_best_step"]) == (1, 6.0, 600)
