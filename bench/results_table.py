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


def delta(d: dict | None) -> str:
    if not d:
        return ""
    return f"{d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"


def markdown(result: dict, source: str) -> str:
    m = result["machine"]
    lines = [
        f"Source: `{source}` ({result['model']} model, preset `{result['preset']}`, "
        f"{m.get('gpu') or m.get('cpu')}, commit `{(result.get('commit') or 'see docs/results.md')[:10]}`). "
        "Test macro-F1 in %, mean over seeds with the 95% bootstrap CI (queries and seeds resampled); deltas are "
        "paired over seeds and queries.",
        "",
        "| row | seeds | macro-F1 | 95% CI | vs its parent | vs its continued-SFT control |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r.get("ci95") else ""
        lines.append(f"| {r['name']} | {len(r['seeds'])} | {r['mean']:.2f} | {ci} | "
                     f"{delta(r.get('delta_vs_parent'))} | {delta(r.get('delta_vs_control'))} |")
    return "\n".join(lines)


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
    start, end = f"<!-- {args.block}:start -->", f"<!-- {args.block}:end -->"
    readme = ROOT / "docs" / "results.md"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} ... {end} block")
    readme.write_text(re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{table}\n{end}", text,
                             flags=re.S))
    print(f"rewrote the table in {readme}")


if __name__ == "__main__":
    main()
