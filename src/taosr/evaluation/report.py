"""`taosr report runs/<name>`: one self-contained HTML page for a run (plots are inline base64 PNGs).

Every input is optional; a section whose files are missing says so instead of failing:

    config.json / demo_config.json     run configuration (summary + full JSON)
    data/stats.json                    split sizes and label mix
    results.json                       {"rows": [{"name", ...metrics}], "wall_s"} -> stage table,
                                       per-query-type bars, confusion matrices
                                       (fallback: <stage>/metrics.json and <stage>/eval-*.json)
    <stage>/summary.json               loss_curve (+ margin_curve for dpo_*, reward_curve for grpo)
    dpo_*/metrics.json, */pass_at_k.json   pass@k {"1": p1, ...} -> pass@k curve
    calibration.json, */model/taosr_serving.json   CumPT beta (curve where recorded), rule, dev scores
    <stage>/samples.json               [{id, query, title, gold, pred, text?, probs?}] -> sample table

Which files a folder holds is `report_inputs`' business: a demo folder and one built stage by stage
(README, "Your own data") both work.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from html import escape
from pathlib import Path

import numpy as np

from ..io import write_text
from ..labels import LEVEL_NAMES
from .report_inputs import calibrations, pass_at_k_curves, read, result_rows, stage_dirs

PAPER_TABLE = [("BERT (24-layer)", 61.33, 33.87, 69.36), ("Qwen3-0.6B SFT", 52.95, 23.50, 70.29),
               ("LLM base, answer-only SFT", 62.22, 32.91, 75.04),
               ("TaoSR1 CoT (think-first SFT)", 51.54, 19.68, 68.22),
               ("+ DPO", 63.58, 37.96, 75.54), ("full (+GRPO, post-CoT)", 67.12, 44.94, 76.86)]

NAV = [("config", "config"), ("table", "stage table"), ("qtypes", "query types"), ("confusion", "confusion"),
       ("training", "training"), ("passk", "pass@k"), ("cumpt", "CumPT"), ("samples", "samples")]

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1280px;margin:0 auto;padding:24px 32px 60px}
h1{margin:0 0 4px;font-size:26px}
h2{margin:36px 0 10px;padding-bottom:4px;border-bottom:2px solid #d5dae3;font-size:20px}
h3{margin:14px 0 6px;font-size:15px} .sub{color:#5b6475;font-size:13px}
.note{color:#7a8394;font-style:italic;font-size:13px;margin:6px 0}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f6} td.l,th.l{text-align:left} tr.best td{font-weight:600;background:#f0f8ee}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:8px}
.card .cap{font-size:12px;color:#3b4350;text-align:center;margin-top:2px;max-width:320px}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:2px 16px;font-size:13px;background:#fff;
 border:1px solid #dde2ea;border-radius:6px;padding:10px 14px} .kv span.k{color:#5b6475}
pre{background:#fff;border:1px solid #dde2ea;padding:8px;font-size:12px;max-height:360px;overflow:auto}
img{display:block;max-width:100%} .ok{color:#1f7a36;font-weight:600} .bad{color:#b3261e;font-weight:600}
table.samples td{text-align:left;max-width:420px}
td.reason{font-size:12px;color:#333;white-space:pre-wrap;min-width:320px}
nav{margin-top:8px} nav a{margin-right:14px;font-size:13px;color:#2b6cb0}
"""


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="plot">'


def _fig(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _pc(m: dict, lv: int) -> dict:
    pc = m.get("per_class", {})
    return pc.get(str(lv), pc.get(lv, {}))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}"


# ---------------------------------------------------------------- sections

def _header(run: Path, results: dict | None) -> str:
    cfg = read(run / "config.json") or (read(run / "demo_config.json") or {}).get("run")
    out = [f"<h1>taosr run: {escape(run.name)}</h1>",
           f'<div class="sub">{escape(str(run.resolve()))} &middot; report generated {dt.datetime.now():%Y-%m-%d %H:%M}'
           + (f" &middot; pipeline wall time {results['wall_s']:.0f} s" if results and results.get("wall_s") else "")
           + "</div>"]
    out.append("<nav>" + " ".join(f'<a href="#{a}">{t}</a>' for a, t in NAV) + "</nav>")
    out.append('<h2 id="config">Run configuration</h2>')
    if not cfg:
        out.append('<p class="note">No config.json in this run folder.</p>')
    else:
        flat = []
        for k, v in cfg.items():
            if isinstance(v, dict):
                flat += [(f"{k}.{k2}", v2) for k2, v2 in v.items() if not isinstance(v2, (dict, list))]
            elif not isinstance(v, list):
                flat.append((k, v))
        out.append('<div class="kv">' + "".join(
            f'<div><span class="k">{escape(k)}</span> = {escape(str(v).strip())}</div>' for k, v in flat) + "</div>")
        for name in ("config.json", "demo_config.json"):
            if (run / name).exists():
                text = escape((run / name).read_text())
                out.append(f"<details><summary>{name} (full)</summary><pre>{text}</pre></details>")
    stats = read(run / "data" / "stats.json")
    if stats:
        out.append("<h3>Data</h3><table><tr><th class=l>split</th><th>pairs</th><th>queries</th>"
                   + "".join(f"<th>level {lv}</th>" for lv in (4, 3, 2, 1)) + "</tr>")
        for split, s in stats.items():
            if isinstance(s, dict):
                labels = s.get("labels", {})
                out.append(f"<tr><td class=l>{escape(split)}</td><td>{s.get('pairs', '-')}</td>"
                           f"<td>{s.get('queries', '-')}</td>"
                           + "".join(f"<td>{labels.get(str(lv), labels.get(lv, 0))}</td>" for lv in (4, 3, 2, 1))
                           + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _table(rows: list[dict], source: str) -> str:
    out = ['<h2 id="table">Stage table (test split, %)</h2>']
    if not rows:
        return out[0] + '<p class="note">No results.json, no stage metrics.json and no eval-*.json yet.</p>'
    best = max(range(len(rows)), key=lambda i: rows[i].get("macro_f1", -1))
    absent = sorted({lv for m in rows for lv in m.get("levels_absent") or ()})
    ranked = any((m.get("ranking") or {}).get("ndcg@10") is not None for m in rows)
    out.append(f'<p class="sub">{escape(source)}; best macro-F1 highlighted.</p>')
    if absent:
        out.append(f'<p class="note">Level(s) {", ".join(map(str, absent))} absent from an evaluated split: macro-F1 '
                   "over four levels counts them as 0; the next column averages the levels present.</p>")
    out.append("<table><tr><th class=l>model / stage</th><th>n</th><th>macro-F1</th>"
               + ("<th>macro-F1 (levels present)</th>" if absent else "")
               + "<th>F1-4</th><th>F1-3</th><th>F1-2</th><th>F1-1</th><th>accuracy</th>"
               + ("<th>nDCG@10</th><th>MRR</th>" if ranked else "") + "<th>unparsed</th></tr>")
    for i, m in enumerate(rows):
        rank = m.get("ranking") or {}
        rising = " <span class=note>(dev still rising)</span>" if m.get("dev_still_rising") else ""
        out.append(f'<tr{" class=best" if i == best else ""}><td class=l>{escape(str(m.get("name", "?")))}{rising}</td>'
                   f'<td>{m.get("n", "-")}</td><td>{_pct(m.get("macro_f1"))}</td>'
                   + (f'<td>{_pct(m.get("macro_f1_present"))}</td>' if absent else "")
                   + "".join(f"<td>{_pct(_pc(m, lv).get('f1'))}</td>" for lv in (4, 3, 2, 1))
                   + f'<td>{_pct(m.get("accuracy"))}</td>'
                   + (f"<td>{_pct(rank.get('ndcg@10'))}</td><td>{_pct(rank.get('mrr'))}</td>" if ranked else "")
                   + f'<td>{m.get("unparseable", 0)}</td></tr>')
    out.append("</table><details><summary>the paper's table, for the shape (macro-F1 / class-3 F1 / accuracy)</summary>"
               "<table><tr><th class=l>model</th><th>macro-F1</th><th>F1-3</th><th>accuracy</th></tr>"
               + "".join(f"<tr><td class=l>{escape(n)}</td><td>{a:.2f}</td><td>{b:.2f}</td><td>{c:.2f}</td></tr>"
                         for n, a, b, c in PAPER_TABLE)
               + "</table></details>")
    return "\n".join(out)


def _query_types(rows: list[dict]) -> str:
    out = ['<h2 id="qtypes">Macro-F1 by query type</h2>']
    rows = [m for m in rows if m.get("per_query_type")]
    if not rows:
        return out[0] + '<p class="note">No per-query-type metrics.</p>'
    qts = sorted({qt for m in rows for qt in m["per_query_type"]})
    fig, (ax,) = _fig(max(8.0, 1.6 * len(qts) + 3), 4.2)
    w = 0.8 / len(rows)
    cmap = __import__("matplotlib").colormaps["tab10"]
    for i, m in enumerate(rows):
        vals = [100 * m["per_query_type"].get(qt, {}).get("macro_f1", np.nan) for qt in qts]
        ax.bar(np.arange(len(qts)) + (i - (len(rows) - 1) / 2) * w, vals, w, label=str(m.get("name")),
               color=cmap(i % 10))
    ns = {qt: max(m["per_query_type"].get(qt, {}).get("n", 0) for m in rows) for qt in qts}
    ax.set_xticks(np.arange(len(qts)), [f"{qt}\n(n={ns[qt]})" for qt in qts])
    ax.set_ylabel("macro-F1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return out[0] + f'<div class="card">{_png(fig)}</div>'


def _confusions(rows: list[dict]) -> str:
    out = ['<h2 id="confusion">Confusion matrices</h2>',
           '<p class="sub">Rows: gold level, columns: predicted level (0 = unparseable). '
           "Colour = share of the gold row; numbers = counts.</p>"]
    rows = [m for m in rows if m.get("confusion")]
    if not rows:
        return out[0] + '<p class="note">No confusion matrices.</p>'
    out.append('<div class="grid">')
    for m in rows:
        c = np.asarray(m["confusion"], dtype=float)  # rows gold 1-4, cols pred 0-4
        share = c / np.maximum(c.sum(1, keepdims=True), 1)
        fig, (ax,) = _fig(2.9, 2.6)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for g in range(c.shape[0]):
            for p in range(c.shape[1]):
                ax.text(p, g, f"{int(c[g, p])}", ha="center", va="center", fontsize=8,
                        color="white" if share[g, p] > 0.55 else "#222")
        ax.set_xticks(range(c.shape[1]), ["?", "1", "2", "3", "4"][: c.shape[1]])
        ax.set_yticks(range(c.shape[0]), [str(lv) for lv in (1, 2, 3, 4)][: c.shape[0]])
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("gold", fontsize=9)
        out.append(f'<div class="card">{_png(fig)}<div class="cap">{escape(str(m.get("name")))} '
                   f'&middot; macro-F1 {_pct(m.get("macro_f1"))}</div></div>')
    return "\n".join(out) + "</div>"


def _curve(ax, pts, label: str, color: str) -> bool:
    pts = [(s, v) for s, v in (pts or []) if v is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker="." if len(pts) < 30 else None, lw=1.4)
        ax.set_ylabel(label, fontsize=9)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    return bool(pts)


def _training(run: Path) -> str:
    out = ['<h2 id="training">Training curves</h2>']
    cards = []
    for d in stage_dirs(run):
        s = read(d / "summary.json")
        if not isinstance(s, dict):
            continue
        curves = (("margin_curve", "reward margin"), ("reward_curve", "accuracy reward"))
        extra = [(k, lab) for k, lab in curves if s.get(k)]
        panels = ([("loss_curve", "loss")] if s.get("loss_curve") else []) + extra
        if not panels:
            continue
        fig, axes = _fig(3.1 * len(panels), 2.5, len(panels))
        for ax, (key, lab), color in zip(axes, panels, ["#2b6cb0", "#c05621", "#2f855a"]):
            _curve(ax, s[key], lab, color)
        fig.suptitle(d.name, fontsize=10)
        shown = ("steps", "wall_s", "examples", "pairs", "prompts")
        info = " &middot; ".join(f"{k} {escape(str(s[k]))}" for k in shown if k in s)
        cards.append(f'<div class="card">{_png(fig)}<div class="cap">{info}</div></div>')
    if not cards:
        return out[0] + '<p class="note">No stage summary.json with a loss / margin / reward curve.</p>'
    return out[0] + '<div class="grid">' + "\n".join(cards) + "</div>"


def _pass_at_k(run: Path) -> str:
    out = ['<h2 id="passk">Offline sampling: pass@k</h2>']
    curves = pass_at_k_curves(run)
    if not curves:
        return out[0] + '<p class="note">No dpo_*/metrics.json with pass_at_k and no pass_at_k.json.</p>'
    fig, (ax,) = _fig(5.5, 3.4)
    for name, pk, _ in curves:
        ax.plot([k for k, _ in pk], [100 * v for _, v in pk], marker="o", label=name)
    ax.set_xlabel("k (samples per prompt)")
    ax.set_ylabel("pass@k (%)")
    ax.set_xticks(sorted({k for _, pk, _ in curves for k, _ in pk}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    counts = "".join(f"<div>{escape(n)}: pass@1 {_pct(pk[0][1])}, pass@{pk[-1][0]} {_pct(pk[-1][1])}"
                     + (" &middot; DPO pairs: " + escape(", ".join(f"{k} {v}" for k, v in c.items()))
                        if isinstance(c, dict) else "") + "</div>" for n, pk, c in curves)
    return (out[0] + f'<div class="card" style="display:inline-block">{_png(fig)}'
            f'<div class="cap" style="text-align:left">{counts}</div></div>')


def _calibration(run: Path) -> str:
    out = ['<h2 id="cumpt">CumPT threshold (beta) on dev</h2>']
    found = calibrations(run)
    if not found:
        return out[0] + ('<p class="note">No calibration.json and no model/taosr_serving.json (written by '
                         "`taosr calibrate`).</p>")
    for name, cal in found:
        objective = cal.get("objective") or "macro_f1"
        argmax = ((cal.get("comparison") or {}).get("argmax") or {}).get(objective)
        out.append(f'<p class="note">{escape(name)}: served {escape(str(cal.get("rule", "cumpt")))}, beta '
                   f'{float(cal["beta"]):.3g}, dev {escape(objective)} {_pct(cal.get("dev_score"))} '
                   f'(argmax {_pct(argmax)}) on {cal.get("n_dev", "?")} pairs.</p>')
        if cal.get("curve"):
            out.append(f'<div class="card" style="display:inline-block">{_beta_plot(cal, argmax)}</div>')
    return "\n".join(out)


def _beta_plot(cal: dict, argmax) -> str:
    pts = sorted((float(b), float(s)) for b, s in cal["curve"])
    fig, (ax,) = _fig(5.5, 3.4)
    ax.plot([b for b, _ in pts], [100 * s if s <= 1 else s for _, s in pts], color="#2b6cb0")
    ax.axvline(float(cal["beta"]), color="#c53030", ls="--", lw=1.2, label=f"chosen beta = {float(cal['beta']):.3g}")
    if argmax is not None:
        ax.axhline(100 * float(argmax), color="#2f855a", ls=":", lw=1.2, label="argmax")
    ax.legend(fontsize=9)
    ax.set_xlabel("beta (cumulative-probability threshold)")
    ax.set_ylabel(f"{cal.get('metric', 'macro-F1')} (%)")
    ax.grid(alpha=0.3)
    return _png(fig)


def _level(v) -> str:
    try:
        return f"{int(v)} {LEVEL_NAMES.get(int(v), 'unparsed')}"
    except (TypeError, ValueError):
        return escape(str(v))


def _probs(probs) -> str:
    if not probs:
        return ""
    top = int(np.argmax(probs))
    return " ".join(f"<b>{float(p):.2f}</b>" if i == top else f"{float(p):.2f}" for i, p in enumerate(probs))


def _samples(run: Path, max_samples: int) -> str:
    out = ['<h2 id="samples">Sample judgements</h2>']
    blocks = []
    for d in stage_dirs(run):
        rows = read(d / "samples.json")
        if not isinstance(rows, list) or not rows:
            continue
        shown = rows[:max_samples]
        right = sum(1 for r in shown if r.get("gold") == r.get("pred"))
        has_text = any(r.get("text") for r in shown)
        has_probs = any(r.get("probs") for r in shown)
        t = ['<table class="samples"><tr><th class=l>id</th><th class=l>query</th><th class=l>item title</th>'
             "<th class=l>gold</th><th class=l>pred</th>" + ("<th class=l>P(1..4)</th>" if has_probs else "")
             + ("<th class=l>generated reasoning</th>" if has_text else "") + "</tr>"]
        for r in shown:
            ok = r.get("gold") == r.get("pred")
            probs = r.get("probs") or []
            t.append(f"<tr><td>{escape(str(r.get('id', '')))}</td><td>{escape(str(r.get('query', '')))}</td>"
                     f"<td>{escape(str(r.get('title', '')))}</td><td>{_level(r.get('gold'))}</td>"
                     f'<td class="{"ok" if ok else "bad"}">{_level(r.get("pred"))}</td>'
                     + (f"<td>{_probs(probs)}</td>" if has_probs else "")
                     + (f'<td class="reason">{escape(str(r.get("text") or ""))}</td>' if has_text else "") + "</tr>")
        blocks.append(f"<details open><summary><b>{escape(d.name)}</b>: {len(shown)} of {len(rows)} pairs, "
                      f"{right} right</summary>" + "".join(t) + "</table></details>")
    if not blocks:
        return out[0] + '<p class="note">No &lt;stage&gt;/samples.json.</p>'
    return out[0] + "\n".join(blocks)


def render_html(run_dir: str | Path, max_samples: int = 20) -> str:
    """The report page for one run folder, as a string."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder {run}")
    results = read(run / "results.json")
    results = results if isinstance(results, dict) else None
    rows, source = result_rows(run, results)
    body = [_header(run, results), _table(rows, source), _query_types(rows), _confusions(rows),
            _training(run), _pass_at_k(run), _calibration(run), _samples(run, max_samples)]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>taosr report: {escape(run.name)}</title><style>{CSS}</style></head><body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def build_report(run_dir: str | Path, out: str | Path | None = None, max_samples: int = 20) -> Path:
    """Write `runs/<name>/report.html` (or `out`) and return its path."""
    return write_text(Path(out) if out else Path(run_dir) / "report.html", render_html(run_dir, max_samples))
