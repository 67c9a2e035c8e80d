"""The regime study's report, from its method-bench JSONs (docs/results/regime_*.json).

    python bench/regime_report.py docs/results/regime_exact_seed0.json docs/results/regime_noisy_30_seed0.json
    python bench/regime_report.py docs/results/regime_*.json --doc   # rewrite the blocks in docs/results.md

Given several JSONs of one preset (a seed-0 table and the 3-seed table), it reports the one with the most seeds,
then the most rows, and says which it skipped.

Prints one summary table (a column per regime: the SFT orders, the full model, and every RL row as its paired
delta against its continued-SFT control) and, per regime, what the study's plan asks to see beside it: how
often the teacher erred in the SFT data, every RL and control stage's dev gain over its parent and whether dev
kept it, the hallucination rate per stage, pass@k of the sampled models against the label-prior floor, the
prompts GRPO kept, and macro-F1 per query type. The blocks `regime-summary` and `regime-diagnostics` sit
between `<!-- NAME:start -->` and `<!-- NAME:end -->` in docs/results.md; README.md holds `regime-summary` too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_table import DOC, ROOT, delta, kept_from_extra, rewrite_block

MAIN_ROWS = ("majority class", "BERT-style cross-encoder (MiniLM-L6)", "LLM base, answer-only SFT",
             "CoT think-first SFT", "CoT answer-first SFT (post-CoT)", "full, generated label",
             "full, first-token probs (CumPT or argmax, chosen on dev)")
RL_STAGES = ("dpo", "grpo")
README = ROOT / "README.md"
SFT_ROWS = MAIN_ROWS[2:6]


def seeds_run(result: dict) -> list:
    """The seeds whose stages are in the table: a run cut short by its deadline lists more seeds than ran."""
    return sorted({s for row in result["rows"] for s in row.get("seeds", [])}) or result["seeds"]


def regime_name(result: dict) -> str:
    n = len(seeds_run(result))
    return f"{result['preset']} (error {result.get('teacher_error_rate', 0.0):g}, {n} seed{'s' if n != 1 else ''})"


def score(row: dict) -> str:
    ci = f" [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]" if row.get("ci95") else ""
    return f"{row['mean']:.2f}{ci}"


def kept_seeds(row: dict) -> tuple[int, int]:
    """(seeds in which dev kept the stage, seeds) for an RL or control row, from the bench's `kept_parent` count."""
    reverted = row.get("kept_parent") or kept_from_extra(row) or {"seeds": 0, "of": 0}
    return reverted["of"] - reverted["seeds"], reverted["of"]


def rl_cell(row: dict) -> str:
    kept, of = kept_seeds(row)
    mark = "reverted" if of and not kept else f"kept {kept}/{of}"
    return f"{delta(row.get('delta_vs_control'))} ({mark})"


def summary(results: list[dict]) -> str:
    """One table: the main rows' test macro-F1 and every RL row's delta vs its control, a column per regime."""
    head = "| row | " + " | ".join(regime_name(r) for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    by_name = [{row["name"]: row for row in r["rows"]} for r in results]
    for name in MAIN_ROWS:
        lines.append(f"| {name} | " + " | ".join(score(b[name]) if name in b else "" for b in by_name) + " |")
    rl_names = [row["name"] for r in results for row in r["rows"] if row.get("stage") in RL_STAGES]
    for name in dict.fromkeys(rl_names):
        cells = [rl_cell(b[name]) if name in b else "" for b in by_name]
        lines.append(f"| {name}, minus its control | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dev_gain(extra: dict) -> float | None:
    """The stage's best dev check after step 0 minus its parent's (step 0), in points: what training reached on
    dev, whether or not dev kept it. None without a step-0 check or any later one."""
    curve = extra.get("dev_curve", [])
    start, later = [f for s, f in curve if s == 0], [f for s, f in curve if s > 0]
    return 100 * (max(later) - start[0]) if start and later else None


def mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def diagnostics(result: dict) -> str:
    rows = result["rows"]
    out = [f"**{regime_name(result)}**", ""]
    teach = []
    for row in rows:
        for e in row.get("extra", {}).values():
            t = e.get("teacher")
            if row["name"] in SFT_ROWS[1:3] and t and t.get("teacher_agrees", 0) + t.get("teacher_disagrees", 0):
                teach.append(t["teacher_disagrees"] / (t["teacher_agrees"] + t["teacher_disagrees"]))
    if teach:
        out += [f"Teacher label wrong in {100 * mean(teach):.1f}% of the CoT SFT examples (mean over orders and seeds).",
                ""]
    out += ["| stage | best dev check minus parent (points, mean) | dev kept it | hallucination (kept model) | pass@1 / pass@4 "
            "(prior floor) | GRPO prompts kept (zero-spread) |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("stage") not in RL_STAGES + ("control",) or row["name"] in MAIN_ROWS:
            continue
        ex = list(row.get("extra", {}).values())
        kept, of = kept_seeds(row)
        hal = mean([e["hallucination"]["rate"] * 100 for e in ex if "hallucination" in e])
        pk = [e for e in ex if "pass_at_k" in e]
        passk = (f"{100 * mean([e['pass_at_k']['1'] for e in pk]):.1f} / {100 * mean([e['pass_at_k']['4'] for e in pk]):.1f}"
                 f" ({100 * mean([e['pass_at_k_prior']['1'] for e in pk]):.1f} / "
                 f"{100 * mean([e['pass_at_k_prior']['4'] for e in pk]):.1f})") if pk else ""
        gr = [e for e in ex if "grpo_prompts_out" in e]
        grpo = (f"{sum(e['grpo_prompts_out'] for e in gr)} of {sum(e['grpo_prompts_in'] for e in gr)} "
                f"({100 * mean([e['zero_spread_frac'] for e in gr]):.0f}%)") if gr else ""
        out.append(f"| {row['name']} | {fmt(mean([dev_gain(e) for e in ex]), '+.2f')} | {kept}/{of} | "
                   f"{fmt(hal, '.1f')}{'%' if hal is not None else ''} | {passk} | {grpo} |")
    types = sorted({t for row in rows for t in row.get("per_query_type", {})})
    if types:
        out += ["", "| macro-F1 per query type | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
        for row in rows:
            if row["name"] in SFT_ROWS and row.get("per_query_type"):
                pq = row["per_query_type"]
                out.append(f"| {row['name']} | " + " | ".join(f"{pq[t]['mean']:.1f}" if t in pq else "" for t in types)
                           + " |")
    return "\n".join(out)


def one_per_regime(loaded: list[tuple[Path, dict]]) -> tuple[list[tuple[Path, dict]], list[Path]]:
    """One JSON per preset, the one with the most seeds, then rows (a regime's 3-seed table supersedes its seed-0
    table, a full table a partial one), in the order given; returns the kept (path, result) pairs and the
    superseded paths."""
    def size(result: dict) -> tuple[int, int]:
        return len(seeds_run(result)), len(result["rows"])

    best: dict[str, tuple[Path, dict]] = {}
    for path, result in loaded:
        if result["preset"] not in best or size(result) > size(best[result["preset"]][1]):
            best[result["preset"]] = (path, result)
    chosen = {path for path, _ in best.values()}
    return [pr for pr in loaded if pr[0] in chosen], [p for p, _ in loaded if p not in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", type=Path, nargs="+", help="Regime JSONs, one column each, in the order given.")
    ap.add_argument("--doc", action="store_true", help="Rewrite the two blocks in docs/results.md and the summary in README.md.")
    args = ap.parse_args()
    kept, superseded = one_per_regime([(p, json.loads(p.read_text())) for p in args.json])
    for p in superseded:
        print(f"skipped {p}: another JSON of the same preset has more seeds or rows")
    results = [r for _, r in kept]
    sources = "Sources: " + ", ".join(f"`{p}`" for p, _ in kept) + ". Test macro-F1 in %, mean over seeds " \
        "[95% CI over seeds and queries]; RL rows: paired delta against the continued-SFT control, and in how " \
        "many seeds dev kept the stage (a reverted stage counts with its parent's predictions)."
    table = sources + "\n\n" + summary(results)
    diag = "\n\n".join(diagnostics(r) for r in results)
    if not args.doc:
        print(table + "\n\n" + diag)
        return
    rewrite_block("regime-summary", table)
    rewrite_block("regime-diagnostics", diag)
    rewrite_block("regime-summary", table, README)
    print(f"rewrote regime-summary and regime-diagnostics in {DOC}, regime-summary in {README}")


if __name__ == "__main__":
    main()
