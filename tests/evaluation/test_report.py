"""`taosr report`: a self-contained HTML page from a (fake but realistic) run folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from taosr.evaluation.evaluate import metrics  # noqa: E402
from taosr.evaluation.report import build_report, render_html  # noqa: E402

QTYPES = ["plain", "attribute", "negation", "alternative", "knowledge"]
ROWS = [("majority class", 0.0), ("BERT cross-encoder", 0.55), ("LLM base, answer-only SFT", 0.6),
        ("CoT think-first SFT", 0.45), ("post-CoT + DPO", 0.7), ("post-CoT + DPO + GRPO (full)", 0.8)]
STAGES = ["baseline", "sft_answer_only", "sft_think_first", "dpo_think_first", "dpo_answer_first", "grpo"]


def _fake_metrics(skill: float, rng: np.random.Generator, n: int = 300) -> dict:
    gold = rng.choice([4, 3, 2, 1], size=n, p=[0.5, 0.05, 0.36, 0.09])
    pred = np.where(rng.random(n) < skill, gold, rng.choice([4, 2], size=n))
    if skill == 0.0:
        pred = np.full(n, 4)
    pred[: int(3 * skill)] = 0  # a few unparseable outputs
    return json.loads(json.dumps(metrics(gold.tolist(), pred.tolist(), [QTYPES[i % 5] for i in range(n)])))


def make_fake_run(root: Path) -> tuple[Path, list[dict]]:
    """The files a real pipeline run leaves, with the layout of runs/<name>/ (numbers made up)."""
    rng = np.random.default_rng(0)
    run = root / "fake"
    (run / "data").mkdir(parents=True)
    rows = [{"name": name, **_fake_metrics(skill, rng), "dev_still_rising": name == "CoT think-first SFT"}
            for name, skill in ROWS]
    (run / "results.json").write_text(json.dumps({"rows": rows, "wall_s": 812.4}))
    (run / "config.json").write_text(json.dumps({"name": "fake", "runs_dir": "runs",
                                                 "synth": {"seed": 0, "n_queries": 3000},
                                                 "model": {"name_or_path": "Qwen/Qwen3-0.6B", "hidden_size": 1024},
                                                 "sft": {"order": "answer_first", "max_steps": 600}}))
    (run / "data" / "stats.json").write_text(json.dumps({s: {"pairs": n, "queries": n // 3,
                                                             "labels": {"1": n // 10, "2": n // 3, "3": n // 20, "4": n // 2}}
                                                         for s, n in [("train", 9580), ("dev", 924), ("test", 1496)]}))
    for stage in STAGES:
        d = run / stage
        d.mkdir()
        steps = np.arange(10, 310, 10)
        summary = {"steps": 300, "wall_s": 95.2, "loss_curve": [[int(s), float(1.4 * np.exp(-s / 120) + 0.3)] for s in steps]}
        if stage.startswith("dpo_"):
            summary["margin_curve"] = [[int(s), float(np.log1p(s / 50))] for s in steps]
            m = _fake_metrics(0.7, rng)
            top = 0.25 if stage == "dpo_answer_first" else 0.15
            m["pass_at_k"] = {str(k): 0.6 + top * (1 - 0.6 ** k) for k in range(1, 6)}
            m["pair_counts"] = {"self_correction": 120, "oracle": 30}
            (d / "metrics.json").write_text(json.dumps(m))
        if stage == "grpo":
            summary = {"steps": 100, "wall_s": 300.0, "reward_curve": [[int(s), float(0.5 + s / 1000)] for s in range(1, 101, 5)]}
        (d / "summary.json").write_text(json.dumps(summary))
    samples = [{"id": f"q{i}-{i % 3}", "query": "running shoes not leather" if i % 2 else "cheaper alternative to a dyson vacuum",
                "title": f"<b>Stridex</b> mesh running shoe #{i} & co", "gold": [4, 2, 3, 1][i % 4], "pred": [4, 2, 2, 1][i % 4],
                "text": f"query understanding: wants non-leather shoes <script>alert({i})</script>\njudgement: level {[4, 2, 2, 1][i % 4]}",
                "probs": [0.05, 0.1, 0.15, 0.7]} for i in range(25)]
    (run / "grpo" / "samples.json").write_text(json.dumps(samples))
    (run / "baseline" / "samples.json").write_text(json.dumps([{k: v for k, v in s.items() if k != "text"} for s in samples[:8]]))
    (run / "calibration.json").write_text(json.dumps({"beta": 0.55, "rule": "argmax", "objective": "macro_f1",
                                                      "comparison": {"argmax": {"macro_f1": 0.61}},
                                                      "curve": [[b, 0.6 - (b - 0.55) ** 2]
                                                                for b in np.linspace(0.05, 0.95, 19).tolist()]}))
    return run, rows


N_IMAGES = 1 + len(ROWS) + len(STAGES) + 1 + 1  # query-type bars, confusions, curves, pass@k, CumPT


def test_report_has_all_sections(tmp_path):
    run, rows = make_fake_run(tmp_path)
    path = build_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert page.count('<img src="data:image/png;base64,') == N_IMAGES
    assert "http://" not in page and "https://" not in page  # self-contained
    # the stage table: macro-F1, F1-4 and accuracy of every row, in %
    for m in rows:
        mark = " <span class=note>(dev still rising)</span>" if m["dev_still_rising"] else ""
        cells = re.search(rf"<td class=l>{re.escape(m['name'] + mark)}</td>(.*?)</tr>", page).group(1)
        nums = re.findall(r"<td>([\d.\-]+)</td>", cells)
        assert nums[1] == f"{100 * m['macro_f1']:.2f}"
        assert nums[2] == f"{100 * m['per_class']['4']['f1']:.2f}"
        assert nums[6] == f"{100 * m['accuracy']:.2f}"
    best = max(rows, key=lambda m: m["macro_f1"])["name"]
    assert re.search(rf"<tr class=best><td class=l>{re.escape(best)}</td>", page)
    # samples: capped at 20, HTML in the data is escaped
    assert "<script>" not in page and "&lt;script&gt;alert(0)&lt;/script&gt;" in page
    assert "20 of 25 pairs" in page and "8 of 8 pairs" in page
    assert "&lt;b&gt;Stridex&lt;/b&gt;" in page
    for heading in ("Run configuration", "Stage table", "query type", "Confusion", "Training curves", "pass@k", "CumPT",
                    "Sample judgements"):
        assert heading in page
    assert "run: served argmax, beta 0.55, dev macro_f1" in page


def test_report_sections_missing(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    page = render_html(run)
    assert "<img" not in page
    assert page.count('class="note"') >= 7  # each section says what is missing


def test_report_falls_back_to_stage_metrics(tmp_path):
    run, _ = make_fake_run(tmp_path)
    (run / "results.json").unlink()
    page = render_html(run)
    assert "rows from the stage folders" in page
    assert "<td class=l>dpo_answer_first</td>" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_chromium(tmp_path):
    run, _ = make_fake_run(tmp_path)
    page = build_report(run)
    png = tmp_path / "report.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1400,3000",
           page.resolve().as_uri()]
    subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    assert png.exists() and png.stat().st_size > 50_000
    try:
        from PIL import Image
    except ImportError:
        return
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[:2] == (3000, 1400)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # text, tables and plots, not a blank page
    assert (img.std(axis=(1, 2)) > 5).mean() > 0.3  # content spread down the page


def test_report_reads_a_folder_built_stage_by_stage(tmp_path):
    """The README's own-data layout: eval-*.json beside a model, pass_at_k.json of `taosr sample`,
    model/taosr_serving.json of `taosr calibrate`; no results.json, no calibration.json."""
    run = tmp_path / "me"
    metrics = {"n": 30, "macro_f1": 0.2115, "macro_f1_present": 0.2821, "levels_absent": [2], "accuracy": 0.7333,
               "per_class": {str(lv): {"f1": 0.8462 if lv == 4 else 0.0} for lv in (1, 2, 3, 4)},
               "confusion": [[0, 0, 0, 0, 1], [0] * 5, [0, 0, 0, 0, 7], [0, 0, 0, 0, 22]], "unparseable": 0,
               "ranking": {"ndcg@10": 0.9, "mrr": 0.75, "queries": 5, "queries_ranked": 4}}
    for stage in ("sft", "dpo", "grpo"):
        (run / stage / "model").mkdir(parents=True)
        (run / stage / "summary.json").write_text(json.dumps({"steps": 4, "loss_curve": [[1, 2.0], [2, 1.5]]}))
    (run / "grpo" / "eval-test.json").write_text(json.dumps(metrics))
    (run / "grpo" / "model" / "taosr_serving.json").write_text(json.dumps(
        {"rule": "cumpt", "beta": 0.36, "objective": "macro_f1", "dev_score": 0.2389, "n_dev": 20,
         "comparison": {"argmax": {"macro_f1": 0.2}}}))
    (run / "samples").mkdir()
    (run / "samples" / "pass_at_k.json").write_text(json.dumps({"1": 0.25, "2": 0.4}))
    page = render_html(run)
    cells = re.search(r"<td class=l>grpo \(test\)</td>(.*?)</tr>", page).group(1)
    nums = re.findall(r"<td>([\d.\-]+)</td>", cells)
    assert nums[:3] == ["30", "21.15", "28.21"]  # n, macro-F1 over four levels, over the levels present
    assert nums[-3:-1] == ["90.00", "75.00"]  # nDCG@10, MRR
    assert "absent from an evaluated split" in page
    assert "grpo: served cumpt, beta 0.36, dev macro_f1 23.89 (argmax 20.00) on 20 pairs" in page
    assert page.count('<img src="data:image/png;base64,') == 1 + 3 + 1  # confusion, training curves, pass@k
    assert "No results.json, no stage" not in page and "No calibration.json and no" not in page
