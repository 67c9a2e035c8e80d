"""bench/regime_report.py: the regime study's summary table and diagnostics, read from method-bench JSONs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "regime_report.py"


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports its neighbour results_table
    spec = importlib.util.spec_from_file_location("regime_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def regime(preset: str, error: float, rl_delta: float, kept: list[bool]) -> dict:
    teacher = {"teacher_agrees": 70, "teacher_disagrees": 30, "kept_teacher_label": 30, "gold_label_put": 0}
    seeds = list(range(len(kept)))
    return {
        "preset": preset, "teacher_error_rate": error, "seeds": seeds,
        "rows": [
            {"name": "LLM base, answer-only SFT", "stage": "sft", "mean": 50.0, "ci95": [48.0, 52.0],
             "per_query_type": {"plain": {"mean": 40.0}, "qa": {"mean": 60.0}}},
            {"name": "CoT think-first SFT", "stage": "sft", "mean": 45.5, "ci95": [43.0, 48.0],
             "extra": {str(s): {"teacher": teacher} for s in seeds}, "per_query_type": {"plain": {"mean": 41.0}}},
            {"name": "post-CoT + DPO", "stage": "dpo", "mean": 52.0,
             "kept_parent": {"seeds": sum(kept), "of": len(kept)},  # seeds dev reverted, as the bench aggregates
             "delta_vs_control": {"delta": rl_delta, "ci95": [rl_delta - 1, rl_delta + 1], "seeds": len(kept)},
             "extra": {str(s): {"kept_parent": k, "dev_best_macro_f1": 0.6 if k else 0.63,
                                "dev_curve": [[0, 0.6], [10, 0.55], [20, 0.63 if not k else 0.58]],
                                "hallucination": {"rate": 0.02 * (s + 1)},
                                "pass_at_k": {"1": 0.5, "4": 0.9}, "pass_at_k_prior": {"1": 0.3, "4": 0.7}}
                       for s, k in zip(seeds, kept)}},
        ],
    }


def test_summary_has_a_column_per_regime_and_rl_rows_as_deltas_against_their_control(report):
    table = report.summary([regime("cpu-long", 0.0, -0.5, [True]), regime("regime-noisy-30", 0.3, 2.25, [False, True])])
    lines = table.splitlines()
    assert lines[0] == "| row | cpu-long (error 0, 1 seed) | regime-noisy-30 (error 0.3, 2 seeds) |"
    assert "| LLM base, answer-only SFT | 50.00 [48.00, 52.00] | 50.00 [48.00, 52.00] |" in lines
    rl = [ln for ln in lines if ln.startswith("| post-CoT + DPO, minus its control")]
    assert rl == ["| post-CoT + DPO, minus its control | -0.50 [-1.50, +0.50] (reverted) | "
                  "+2.25 [+1.25, +3.25] (kept 1/2) |"]


def test_diagnostics_report_teacher_errors_dev_gain_hallucination_and_pass_at_k(report):
    text = report.diagnostics(regime("regime-noisy-30", 0.3, 2.25, [False, True]))
    assert "Teacher label wrong in 30.0% of the CoT SFT examples" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| post-CoT + DPO |"))
    # best check after step 0 minus step 0: seed 0 +3.00, seed 1 -2.00 -> mean +0.50; hallucination 2% and 4%.
    assert row == "| post-CoT + DPO | +0.50 | 1/2 | 3.0% | 50.0 / 90.0 (30.0 / 70.0) |  |"
    assert "| CoT think-first SFT | 41.0 |  |" in text


def test_dev_gain_needs_the_parent_check(report):
    assert report.dev_gain({"dev_curve": [[5, 0.5]], "dev_best_macro_f1": 0.5}) is None
    assert report.dev_gain({"dev_curve": [[0, 0.5], [5, 0.4]], "dev_best_macro_f1": 0.5}) == pytest.approx(-10.0)


def test_one_json_per_regime_the_one_with_most_seeds(report):
    seed0, three = regime("regime-noisy-30", 0.3, 1.0, [False]), regime("regime-noisy-30", 0.3, 2.0, [False] * 3)
    exact = regime("cpu-long", 0.0, 0.0, [True])
    partial = {**exact, "rows": exact["rows"][:2]}
    loaded = [(Path("regime_exact_partial.json"), partial), (Path("regime_exact_seed0.json"), exact),
              (Path("regime_noisy_30.json"), three), (Path("regime_noisy_30_seed0.json"), seed0)]
    kept, superseded = report.one_per_regime(loaded)
    assert [p.name for p, _ in kept] == ["regime_exact_seed0.json", "regime_noisy_30.json"]
    assert [r["seeds"] for _, r in kept] == [[0], [0, 1, 2]]
    assert [p.name for p in superseded] == ["regime_exact_partial.json", "regime_noisy_30_seed0.json"]


def test_a_run_cut_short_counts_the_seeds_its_rows_have(report):
    cut = regime("regime-noisy-15", 0.15, 1.0, [False])
    cut["seeds"] = [0, 1, 2]  # asked for three, the deadline stopped it after seed 0
    cut["rows"][0]["seeds"] = [0]
    assert report.regime_name(cut) == "regime-noisy-15 (error 0.15, 1 seed)"
