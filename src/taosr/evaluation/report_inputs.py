"""What `taosr report` reads from a run folder: a demo's files, or whatever stage outputs a user's folder holds.

A demo folder has `results.json` and `<stage>/metrics.json`; a folder built stage by stage (README, "Your own
data") has, in any sub-folder: `summary.json` (training curves), `eval-*.json` (`taosr eval`),
`pass_at_k.json` (`taosr sample`), `model/taosr_serving.json` (`taosr calibrate`) and `samples.json`.
Each reader returns what it finds and never fails on a missing or unreadable file.
"""

from __future__ import annotations

import json
from pathlib import Path

STAGE_ORDER = ["base", "baseline", "sft_answer_only", "sft_think_first", "sft_answer_first",
               "dpo_think_first", "dpo_answer_first", "grpo"]
STAGE_FILES = ("summary.json", "metrics.json", "samples.json", "pass_at_k.json", "model/taosr_serving.json")
SERVING_FILE = "model/taosr_serving.json"


def read(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def stage_dirs(run: Path) -> list[Path]:
    """Sub-folders holding any stage output, the demo's stages first in pipeline order, then by name."""
    dirs = [d for d in run.iterdir() if d.is_dir()
            and (any((d / f).exists() for f in STAGE_FILES) or any(d.glob("eval-*.json")))]
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(dirs, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def result_rows(run: Path, results: dict | None) -> tuple[list[dict], str]:
    """The stage table's rows and where they came from: results.json, else every stage folder's metrics.json and
    eval-*.json (one row per file)."""
    if results and results.get("rows"):
        return results["rows"], "from results.json"
    rows = []
    for d in stage_dirs(run):
        m = read(d / "metrics.json")
        if isinstance(m, dict) and "macro_f1" in m:
            rows.append({"name": d.name, **m})
        for path in sorted(d.glob("eval-*.json")):
            m = read(path)
            if isinstance(m, dict) and "macro_f1" in m:
                rows.append({"name": f"{d.name} ({path.stem.removeprefix('eval-')})", **m})
    return rows, "no results.json; rows from the stage folders' metrics.json and eval-*.json (taosr eval)"


def pass_at_k_curves(run: Path) -> list[tuple[str, list[tuple[int, float]], dict | None]]:
    """(name, [(k, pass@k)], DPO pair counts or None): from dpo_*/metrics.json (demo) and */pass_at_k.json
    (`taosr sample`)."""
    curves = []
    for d in stage_dirs(run):
        m = read(d / "metrics.json") if d.name.startswith("dpo_") else None
        if isinstance(m, dict) and m.get("pass_at_k"):
            curves.append((d.name.removeprefix("dpo_") + " SFT", m["pass_at_k"], m.get("pair_counts")))
        pk = read(d / "pass_at_k.json")
        if isinstance(pk, dict) and pk:
            curves.append((d.name, pk, None))
    out = []
    for name, pk, counts in curves:
        try:
            out.append((name, sorted((int(k), float(v)) for k, v in pk.items()), counts))
        except (TypeError, ValueError):
            continue
    return out


def calibrations(run: Path) -> list[tuple[str, dict]]:
    """(name, calibration): the demo's calibration.json (with its beta curve), and each stage's
    model/taosr_serving.json (`taosr calibrate`: the chosen rule, beta and dev scores)."""
    found = []
    cal = read(run / "calibration.json")
    if isinstance(cal, dict) and cal.get("curve"):
        found.append(("run", cal))
    for d in stage_dirs(run):
        cal = read(d / SERVING_FILE)
        if isinstance(cal, dict) and "beta" in cal:
            found.append((d.name, cal))
    return found
