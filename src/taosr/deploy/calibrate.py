"""`taosr calibrate`: choose the CumPT threshold beta on labelled dev data and store it with the model.

`calibrate_model` scores a labelled dev split with the answer-first scorer (KV prefix sharing),
picks the CumPT threshold beta (`cumpt.calibrate_beta`), tunes the expected-score cut-offs of the
classic multi-threshold scheme (`cumpt.calibrate_cutoffs`) for comparison, and writes next to the
checkpoint everything a server needs besides the weights: `<model_dir>/taosr_serving.json`, whose
schema is `taosr.deploy.schema.ServingConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..infer.prefix import PrefixScorer
from ..io import write_text
from ..labels import ANSWER_OPEN
from ..modeling import label_token_ids, load_model
from ..prompts import PromptConfig
from ..records import Record
from .cumpt import (
    DEFAULT_CUTOFFS,
    argmax_levels,
    calibrate_beta,
    calibrate_cutoffs,
    cumpt_levels,
    expected_score_levels,
    score_levels,
)
from .schema import SERVING_FILE, ServingConfig


def compare_tiering(probs: np.ndarray, gold: np.ndarray, beta: float,
                    cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> dict[str, dict[str, float]]:
    """Macro-F1 and accuracy of three level rules on the same probabilities, side by side.

    Keys: "cumpt" (one threshold `beta`), "argmax", "expected_score" (s = sum_k k P(k) with the
    three `cutoffs`).
    """
    g = np.asarray(gold, dtype=int)
    preds = {"cumpt": cumpt_levels(probs, beta), "argmax": argmax_levels(probs),
             "expected_score": expected_score_levels(probs, tuple(cutoffs))}
    return {name: {"macro_f1": score_levels(g, p, "macro_f1"), "accuracy": score_levels(g, p, "accuracy")}
            for name, p in preds.items()}


def choose_rule(cumpt_score: float, argmax_score: float, rule: str = "auto") -> str:
    """The level rule to serve: `rule` itself unless "auto", where argmax wins ties (it needs no threshold)."""
    if rule not in ("auto", "cumpt", "argmax"):
        raise ValueError(f"rule must be auto, cumpt or argmax, got {rule!r}")
    if rule != "auto":
        return rule
    return "cumpt" if cumpt_score > argmax_score else "argmax"


def calibrate_model(model_dir: str | Path, dev_records: Sequence[Record], prompt_cfg: PromptConfig | None = None,
                    objective: str = "macro_f1", batch_size: int = 32, device: str = "auto",
                    dtype: str = "float32", rule: str = "auto") -> dict:
    """Score `dev_records` (all labelled), tune beta and cut-offs, write `taosr_serving.json`.

    Returns the written config as a dict (plus "path"). Raises ValueError on unlabelled records.
    """
    if not dev_records:
        raise ValueError("calibration needs a non-empty labelled dev set")
    unlabelled = [r.id for r in dev_records if r.label is None]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} dev record(s) have no label, e.g. {unlabelled[:3]}")
    prompt_cfg = prompt_cfg or PromptConfig()
    model, tok = load_model(model_dir, dtype, device)
    probs = PrefixScorer(model, tok, prompt_cfg, batch_size).score_records(dev_records)
    gold = np.array([r.label for r in dev_records])
    chosen = calibrate_beta(probs, gold, objective)
    cutoffs, _ = calibrate_cutoffs(probs, gold, objective)
    comparison = compare_tiering(probs, gold, chosen.beta, cutoffs)
    cfg = ServingConfig(
        rule=choose_rule(chosen.score, comparison["argmax"][objective], rule), beta=chosen.beta,
        objective=objective, dev_score=chosen.score, cutoffs=cutoffs,
        label_token_ids=label_token_ids(tok), answer_prefix=ANSWER_OPEN, prompt=prompt_cfg,
        n_dev=len(dev_records), comparison=comparison,
    )
    path = write_text(Path(model_dir) / SERVING_FILE, cfg.model_dump_json(indent=1))
    return cfg.model_dump(mode="json") | {"path": str(path), "curve": chosen.curve}
