"""bench/sft_continue.py: SFT trained on from a stage's last checkpoint, part by part, beside the bench's stages."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

import taosr.run.demo as demo_mod
from taosr.run.demo import Demo
from taosr.run.presets import load_preset

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "sft_continue.py"


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("sft_continue", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_checkpoint(stage_dir: Path, step: int, tag: str) -> None:
    ckpt = stage_dir / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.pt"):
        (ckpt / f).write_text(f"{tag}:{f}")


def test_each_part_starts_from_the_last_checkpoint_of_the_one_before(tmp_path, script, monkeypatch):
    loaded, trained = [], []
    curves = iter([[(0, .70), (100, .60), (200, .78)], [(0, .78), (100, .74), (200, .80)]])

    class Dev:
        def __init__(self):
            self.curve = next(curves)

        def summary(self):
            best = max(self.curve, key=lambda x: x[1])
            return {"dev_best_step": best[0], "dev_best_macro_f1": best[1], "dev_curve": self.curve}

    def run_sft(model, tok, recs, cfg, out_dir, *a, **k):
        trained.append((out_dir.name, cfg.epochs, cfg.seed))
        fake_checkpoint(out_dir, 200, out_dir.name)
        fake_checkpoint(out_dir, 100, "earlier")
        return {"steps": 200, "epochs": cfg.epochs}

    monkeypatch.setattr(demo_mod, "run_sft", run_sft)
    monkeypatch.setattr(Demo, "dev_select", lambda self, *a, **k: [Dev()])
    monkeypatch.setattr(Demo, "evaluate", lambda self, m, t, order, stage: ({"macro_f1": .5, "accuracy": .6, "pred": [1]}, {}))
    monkeypatch.setattr(demo_mod, "load_model", lambda path: (loaded.append((path / "model.safetensors").read_text()),
                                                              None))

    def seed_demo(preset, name, seed, first, overrides, console):
        over = {"run": {"runs_dir": str(tmp_path)}, "seed": seed, "sft_extend": {"epochs": 2.0}}
        d = Demo(load_preset("tiny", f"{name}/seed{seed}", over), Console())
        d.splits = {"train": [None] * 10}
        return d

    import taosr.run.bench as bench_mod
    monkeypatch.setattr(bench_mod, "seed_demo", seed_demo)
    run_dir = tmp_path / "study" / "seed1"
    fake_checkpoint(run_dir / "sft_think_first_ext1", 788, "ext1-last")
    out = tmp_path / "summary.json"
    argv = ["sft_continue.py", "--preset", "tiny", "--name", "study", "--seed", "1", "--order", "think_first",
            "--start", "sft_think_first_ext1", "--parts", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()

    assert loaded == ["ext1-last:model.safetensors", "continue_think_first_2:model.safetensors"]
    assert trained == [("continue_think_first_2", 2.0, 3), ("continue_think_first_3", 2.0, 4)]  # seed + k
    assert not (run_dir / "sft_think_first_ext1_last" / "model" / "optimizer.pt").exists()
    s = json.loads(out.read_text())
    assert [p["from"] for p in s["parts"]] == ["sft_think_first_ext1_last", "continue_think_first_2_last"]
    assert [p["dev_best_step"] for p in s["parts"]] == [200, 200] and s["parts"][1]["dev_curve"][-1] == [200, .80]
    assert s["command"].startswith("python bench/sft_continue.py --preset tiny")

    trained.clear()
    script.main()  # finished parts are read back
    assert trained == []
