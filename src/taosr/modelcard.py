"""The model card: a README.md in every model folder a stage writes, rebuilt from what the folder holds.

`record_stage` (called by `taosr sft | dpo | grpo`) stores how the model was made in `taosr_card.json`
(stage, the model it started from, the data, the output order); `write_card` renders README.md from that,
the stage's `summary.json` beside the model folder, the evaluations `taosr eval` wrote there
(`eval-*.json`) and the calibration `taosr calibrate` stored in the folder (`taosr_serving.json`).
`taosr eval` and `taosr calibrate` call `write_card` again, so the card shows what is known.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import __version__
from .prompts import PROMPT_FILE, PromptConfig, model_order, write_prompt
from .runtime import is_main_process

CARD_FILE = "taosr_card.json"
SERVING_FILE = "taosr_serving.json"
SUMMARY_KEYS = ("examples", "pairs", "prompts", "steps", "wall_s", "loss_first", "loss_last", "rejects",
                "mean_accuracy_reward", "groups_masked", "groups_total")


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_stage(model_dir: Path, stage: str, base_model: str | Path | None, data: str | Path | None,
                 order: str, prompt: PromptConfig) -> Path:
    """Store the prompt layout with the output `order`, how the model in `model_dir` was made, and (re)write its
    README.md (main process only under a multi-process launch); returns the card's path."""
    if not is_main_process():
        return Path(model_dir) / "README.md"
    write_prompt(prompt, model_dir, order)
    facts = {"stage": stage, "base_model": str(base_model) if base_model else "a fresh small model (built from a "
             "config)", "data": str(data) if data else None, "order": order, "taosr_version": __version__}
    (Path(model_dir) / CARD_FILE).write_text(json.dumps(facts, indent=1), encoding="utf-8")
    return write_card(model_dir)


def evaluations(model_dir: Path) -> list[tuple[str, dict]]:
    """(file stem, metrics) of every `eval-*.json` beside the model folder."""
    found = []
    for path in sorted(Path(model_dir).parent.glob("eval-*.json")):
        m = read_json(path)
        if m and "macro_f1" in m:
            found.append((path.stem, m))
    return found


def pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}"


def write_card(model_dir: str | Path) -> Path:
    """Render `model_dir/README.md` from the facts the folder and its stage folder hold; returns its path."""
    model_dir = Path(model_dir)
    facts = read_json(model_dir / CARD_FILE) or {}
    order = model_order(model_dir) or facts.get("order")
    lines = [f"# taosr relevance judge: {model_dir.parent.name or model_dir.name}", "",
             "A TaoSR1-style relevance judge trained with taosr: four levels, 4 Excellent, 3 Related, 2 Mismatch, "
             "1 Irrelevant.", "",
             "| | |", "|---|---|",
             f"| stage | {facts.get('stage', 'unknown')} |",
             f"| started from | {facts.get('base_model', 'unknown')} |",
             f"| training data | {facts.get('data') or 'unknown'} |",
             f"| output order | {order or 'not recorded'} ({PROMPT_FILE}) |",
             f"| taosr | {facts.get('taosr_version', __version__)} |"]
    summary = read_json(model_dir.parent / "summary.json") or {}
    shown = [(k, summary[k]) for k in SUMMARY_KEYS if summary.get(k) is not None]
    if shown:
        rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown]
        lines += ["", "## Training", "", "| | |", "|---|---|", *rows]
    evals = evaluations(model_dir)
    if evals:
        lines += ["", "## Evaluation (%)", "", "| file | n | macro-F1 | macro-F1 (levels present) | accuracy | "
                  "nDCG@10 | MRR |", "|---|---|---|---|---|---|---|"]
        for name, m in evals:
            rank = m.get("ranking") or {}
            lines.append(f"| {name} | {m.get('n')} | {pct(m.get('macro_f1'))} | {pct(m.get('macro_f1_present'))} | "
                         f"{pct(m.get('accuracy'))} | {pct(rank.get('ndcg@10'))} | {pct(rank.get('mrr'))} |")
    serving = read_json(model_dir / SERVING_FILE)
    lines += ["", "## Calibration", ""]
    if serving:
        lines.append(f"Served rule: {serving.get('rule', 'cumpt')}, beta {serving.get('beta')}, chosen on "
                     f"{serving.get('n_dev', '?')} dev pairs ({SERVING_FILE}).")
    else:
        lines.append("Not calibrated yet (`taosr calibrate --model THIS_FOLDER --data dev.jsonl`).")
    lines += ["", "## Use", "", "```bash", f"taosr eval --model {model_dir} --data test.jsonl",
              f"taosr score --model {model_dir} --data pairs.parquet --out scored.parquet",
              f"taosr serve --model {model_dir}", "```", ""]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
