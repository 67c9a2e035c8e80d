"""The results tables of docs/results.md, generated from a method-bench JSON (docs/results/*.json).

    python bench/results_table.py docs/results/method_gpu_h200.json         # print the markdown
    python bench/results_table.py docs/results/method_gpu_h200.json --doc   # rewrite the block in docs/results.md
    python bench/results_table.py docs/results/smollm2.json --doc --block smollm2-table

A block sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` (NAME: `--block`, default method-table).
The README's short table quotes these numbers by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"


def delta(d: dict | None) -> str:
    if not d:
        return ""
    return f"{d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"


def kept_from_extra(row: dict) -> dict | None:
    """kept_parent of a JSON written before the bench recorded it: an RL or control row whose dev-best step is 0."""
    if row.get("stage") not in ("dpo", "grpo", "control"):
        return None
    steps = [e.get("dev_best_step") for e in row.get("extra", {}).values() if "dev_best_step" in e]
    return {"seeds": sum(s == 0 for s in steps), "of": len(steps)} if steps else None


def markdown(result: dict, source: str) -> str:
    m = result["machine"]
    lines = [
        f"Source: `{source}` ({result.get('model', 'fresh')} model, preset `{result['preset']}`, "
        f"teacher error rate {result.get('teacher_error_rate', 0.0)}, "
        f"{m.get('gpu') or m.get('cpu')}, commit `{(result.get('commit') or 'see docs/results.md')[:10]}`). "
        "Test macro-F1 in %, mean over seeds with the 95% bootstrap CI (queries and seeds resampled); deltas are "
        "paired over seeds and queries. *dev kept parent*: seeds in which dev chose the stage's start model (step 0); "
        "a row reverted in every seed repeats its parent and is marked (reverted).",
        "",
        "| row | seeds | macro-F1 | 95% CI | vs its parent | vs its continued-SFT control | dev kept parent |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r.get("ci95") else ""
        kept = r.get("kept_parent") or kept_from_extra(r)
        name = r["name"] + (" (reverted)" if kept and kept["seeds"] == kept["of"] else "")
        reverted = f"{kept['seeds']}/{kept['of']}" if kept else ""
        lines.append(f"| {name} | {len(r['seeds'])} | {r['mean']:.2f} | {ci} | "
                     f"{delta(r.get('delta_vs_parent'))} | {delta(r.get('delta_vs_control'))} | {reverted} |")
    return "\n".join(lines)


def rewrite_block(block: str, text: str, doc: Path | None = None) -> None:
    """Put `text` between `<!-- block:start -->` and `<!-- block:end -->` in `doc` (docs/results.md)."""
    doc = doc or DOC
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    body = doc.read_text()
    if start not in body or end not in body:
        raise SystemExit(f"{doc}: no {start} ... {end} block")
    doc.write_text(re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", body,
                          flags=re.S))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("--doc", action="store_true", help="Rewrite the block in docs/results.md instead of printing.")
    ap.add_argument("--block", default="method-table", help="Name of the block to rewrite.")
    args = ap.parse_args()
    path = args.json.resolve()
    table = markdown(json.loads(path.read_text()), str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    if not args.doc:
        print(table)
        return
    rewrite_block(args.block, table)
    print(f"rewrote the table in {DOC}")


if __name__ == "__main__":
    main()
