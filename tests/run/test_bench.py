"""`taosr bench method`'s table: CIs per row and per query type, deltas, and reverted stages marked."""

from __future__ import annotations

import json

from rich.console import Console

from taosr.data.splits import write_splits
from taosr.records import Record
from taosr.run.bench import aggregate, print_table, stage_extra


def _rows(pred_sft, pred_dpo, pred_ctl, dpo_best, ctl_best):
    meta = lambda key, stage, parent=None, control=None: {"key": key, "stage": stage, "order": "answer_first",
                                                          "parent": parent, "control": control}
    return [
        {"name": "sft", **meta("sft_answer_first", "sft"), "macro_f1": 0.5, "pred": pred_sft,
         "train": {"steps": 100, "epochs": 2.0, "dev_best_step": 75, "dev_curve": [[25, 0.4], [75, 0.6], [100, 0.5]]}},
        {"name": "dpo", **meta("dpo_answer_first", "dpo", "sft_answer_first", "control_dpo_answer_first"),
         "macro_f1": 0.5, "pred": pred_dpo, "pair_counts": {"self": 3},
         "train": {"steps": 20, "dev_best_step": dpo_best, "dev_curve": [[0, 0.6], [20, 0.55]]}},
        {"name": "control", **meta("control_dpo_answer_first", "control", "sft_answer_first"), "macro_f1": 0.5,
         "pred": pred_ctl, "train": {"steps": 20, "dev_best_step": ctl_best, "dev_curve": [[0, 0.6], [20, 0.62]]}},
    ]


def test_aggregate_marks_reverted_stages_and_reports_query_types(tmp_path):
    test = [Record(id=f"t{i}", query=f"q{i // 2}", title="x", label=[4, 2, 1, 3][i % 4],
                   query_type=["plain", "negation"][(i // 2) % 2]) for i in range(40)]
    write_splits({"train": [], "dev": [], "test": test}, tmp_path / "seed0" / "data")
    gold = [r.label for r in test]
    wrong = [4 if g != 4 else 1 for g in gold]
    for seed, dpo_best in ((0, 0), (1, 10)):
        (tmp_path / f"seed{seed}").mkdir(exist_ok=True)
        rows = _rows(gold, gold if dpo_best == 0 else wrong, gold, dpo_best, 20)
        if seed == 1:  # its SFT was extended twice while dev still rose
            rows[0]["train"] |= {"extensions": 2, "epochs": 6.0, "dev_best_epochs": 4.0}
        (tmp_path / f"seed{seed}" / "rows.json").write_text(json.dumps(rows))
    out = {r["name"]: r for r in aggregate(tmp_path, [0, 1], None, n_boot=200)}
    assert out["dpo"]["kept_parent"] == {"seeds": 1, "of": 2}
    assert out["control"]["kept_parent"] == {"seeds": 0, "of": 2}
    assert "kept_parent" not in out["sft"]
    assert out["dpo"]["extra"][0]["kept_parent"] is True and out["dpo"]["extra"][1]["kept_parent"] is False
    assert out["sft"]["mean"] == 100.0 and out["dpo"]["delta_vs_parent"]["delta"] < -40
    assert set(out["sft"]["per_query_type"]) == {"plain", "negation"}
    assert out["sft"]["per_query_type"]["plain"]["pairs"] == 20
    assert out["sft"]["extra"][0]["dev_last_macro_f1"] == 0.5 and out["sft"]["extra"][0]["epochs"] == 2.0
    assert out["sft"]["dev_still_rising"] == {"seeds": 0, "of": 2}
    assert out["sft"]["extended"] == {"seeds": 1, "of": 2, "max_epochs": 6.0, "kept_epochs": [4.0]}
    assert "extended" not in out["dpo"]
    console = Console(width=250, record=True)
    print_table({"preset": "p", "teacher_error_rate": 0.3, "rows": list(out.values())}, console)
    text = console.export_text()
    assert "sft (extended in 1/2, to 6.0 epochs at most; dev kept 4.0)" in text and "dpo (extended" not in text
    assert out["control"]["dev_still_rising"] == {"seeds": 2, "of": 2}  # +2 points at its last check
    assert {r["name"]: r for r in aggregate(tmp_path, [0, 1], None, n_boot=50, within=2.5)}["control"][
        "dev_still_rising"] == {"seeds": 0, "of": 2}


def test_stage_extra_keeps_grpo_selection():
    e = stage_extra({"stage": "grpo", "selection": {"prompts_out": 8, "distinct_per_level": {1: 2, 4: 4}},
                     "train": {"dev_best_step": 0, "frac_zero_spread_groups": 0.25, "steps": 10}}, 1.5)
    assert e == {"steps": 10, "dev_best_step": 0, "kept_parent": True, "grpo_prompts_out": 8,
                 "grpo_distinct_per_level": {1: 2, 4: 4}, "zero_spread_frac": 0.25}
