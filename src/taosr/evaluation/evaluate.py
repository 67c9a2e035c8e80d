"""`taosr eval`: macro-F1 (headline), per-class P/R/F1, accuracy, confusion matrix, per query type.

Answer-only and answer-first models are read from the first label token's distribution (prefill
only); think-first models generate their reasoning greedily and the label is parsed from the text.
An unparseable output counts as wrong (predicted level 0) and is reported.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from rich.table import Table
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ..generation import generate_texts
from ..infer.scoring import score_records
from ..labels import THINK_CLOSE, THINK_OPEN, conclusion_of, parse_response
from ..prompts import PromptConfig, encode_prompt
from ..records import Record
from .ranking import pair_scores, ranking_metrics

LEVELS = [1, 2, 3, 4]


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over levels 1-4 (a prediction 0, unparseable, is wrong for every level). A level absent from
    `gold` counts 0 unless predicted (then also 0): `metrics` also reports the mean over the levels present."""
    return float(f1_score(gold, pred, labels=LEVELS, average="macro", zero_division=0))


def metrics(gold: Sequence[int], pred: Sequence[int], query_types: Sequence[str | None] | None = None) -> dict:
    """All reported numbers for one set of predictions (pred 0 = unparseable, always wrong)."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=LEVELS, zero_division=0)
    present = [lv for lv in LEVELS if (gold == lv).any()]
    out = {
        "n": int(len(gold)),
        "macro_f1": macro_f1(gold, pred),
        "macro_f1_present": float(f1_score(gold, pred, labels=present, average="macro", zero_division=0))
        if present else 0.0,
        "levels_absent": [lv for lv in LEVELS if lv not in present],
        "accuracy": float(accuracy_score(gold, pred)),
        "per_class": {lv: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, lv in enumerate(LEVELS)},
        "confusion": confusion_matrix(gold, pred, labels=[0, *LEVELS])[1:].tolist(),  # rows gold 1-4, cols pred 0-4
        "unparseable": int((pred == 0).sum()),
    }
    if query_types is not None:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, qt in enumerate(query_types):
            groups[qt or "unknown"].append(i)
        out["per_query_type"] = {
            qt: {"n": len(ix), "macro_f1": macro_f1(gold[ix], pred[ix]),
                 "accuracy": float(accuracy_score(gold[ix], pred[ix]))}
            for qt, ix in sorted(groups.items())
        }
    return out


def discriminative_hallucination(texts: Sequence[str]) -> dict:
    """Share of responses whose stated label disagrees with their own reasoning's conclusion.

    Counted over responses that have both a parseable answer and a reasoning ending in
    "judgement: <level>." (TaoSR1: sound reasoning, wrong final label).
    """
    both = disagree = 0
    for t in texts:
        answer = parse_response(t).level
        reasoning = t.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)[0] if THINK_OPEN in t else ""
        concluded = conclusion_of(reasoning)
        if answer is None or concluded is None:
            continue
        both += 1
        disagree += answer != concluded
    return {"judged": both, "disagree": disagree, "rate": disagree / both if both else None}


def majority_baseline(train: Sequence[Record], test: Sequence[Record]) -> dict:
    """Predict the most frequent training level for every test pair."""
    top = Counter(r.label for r in train).most_common(1)[0][0]
    return metrics([r.label for r in test], [top] * len(test), [r.query_type for r in test])


def predict(model, tokenizer, records: Sequence[Record], order: str, prompt_cfg: PromptConfig,
            batch_size: int = 64, max_new_tokens: int = 128) -> dict:
    """Predictions of one model: `pred` levels, plus `probs` (answer-first) or `texts` (think-first)."""
    if order == "think_first":
        prompts = [encode_prompt(tokenizer, r, prompt_cfg) for r in records]
        outs = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size, desc="eval: generating")
        texts = [t[0] for t in outs]
        parsed = [parse_response(t) for t in texts]
        return {"pred": [p.level or 0 for p in parsed], "texts": texts}
    probs = score_records(model, tokenizer, records, prompt_cfg, batch_size, desc="eval: scoring")
    return {"pred": (probs.argmax(1) + 1).tolist(), "probs": probs}


def evaluate(model, tokenizer, records: Sequence[Record], order: str, prompt_cfg: PromptConfig,
             **kw) -> tuple[dict, dict]:
    out = predict(model, tokenizer, records, order, prompt_cfg, **kw)
    m = metrics([r.label for r in records], out["pred"], [r.query_type for r in records])
    m["ranking"] = ranking_metrics(records, pair_scores(out["pred"], out.get("probs")))
    if "texts" in out:
        m["hallucination"] = discriminative_hallucination(out["texts"])
    return m, out


def class_f1(m: dict, level: int) -> float:
    """Per-class F1 from a metrics dict, fresh (int keys) or read back from JSON (str keys)."""
    pc = m["per_class"]
    return (pc[level] if level in pc else pc[str(level)])["f1"]


def stage_table(rows: list[tuple[str, dict]], title: str = "TaoSR1 table on the taosr benchmark (test split)") -> Table:
    """The paper's table: one row per stage; macro-F1, class 1-4 F1, accuracy (all in %)."""
    t = Table(title=title)
    t.add_column("model / stage")
    majority = next((m["macro_f1"] for name, m in rows if name == "majority class"), None)
    present = any(m.get("levels_absent") for _, m in rows)  # a level missing from the split: show both means
    cols = ["macro-F1", *(["macro-F1 (levels present)"] if present else []), "F1-4", "F1-3", "F1-2", "F1-1",
            "accuracy", "unparsed"] + (["vs majority"] if majority else [])
    for col in cols:
        t.add_column(col, justify="right")
    for name, m in rows:
        extra = [f"{100 * (m['macro_f1'] - majority):+.2f}"] if majority else []
        both = [f"{100 * m.get('macro_f1_present', m['macro_f1']):.2f}"] if present else []
        t.add_row(name, f"{100 * m['macro_f1']:.2f}", *both,
                  *(f"{100 * class_f1(m, lv):.2f}" for lv in (4, 3, 2, 1)),
                  f"{100 * m['accuracy']:.2f}", str(m.get("unparseable", 0)), *extra)
    return t


def query_type_table(rows: list[tuple[str, dict]]) -> Table:
    qts = sorted({qt for _, m in rows for qt in m.get("per_query_type", {})})
    t = Table(title="macro-F1 by query type (%)")
    t.add_column("model / stage")
    for qt in qts:
        t.add_column(qt, justify="right")
    for name, m in rows:
        per = m.get("per_query_type", {})
        t.add_row(name, *(f"{100 * per[qt]['macro_f1']:.1f}" if qt in per else "-" for qt in qts))
    return t
