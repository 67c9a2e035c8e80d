"""Calibrate a judge for serving, and the serving export (`<model_dir>/taosr_serving.json`).

`calibrate_model` scores a labelled dev split with the answer-first scorer (KV prefix sharing),
picks the CumPT threshold beta (`cumpt.calibrate_beta`), tunes the expected-score cut-offs of the
classic multi-threshold scheme (`cumpt.calibrate_cutoffs`) for comparison, and writes next to the
checkpoint everything a server needs besides the weights:

    {"beta", "objective", "dev_score", "cutoffs", "label_token_ids", "label_tokens",
     "answer_prefix": "<answer>", "prompt": {PromptConfig}, "n_dev", "comparison"}

Both the transformers server (`taosr.serve`, `taosr.batch_score`) and a vLLM deployment read it.

vLLM recipe (GPU path; implemented by `taosr.vllm_engine.VLLMScorer`)
-------------------------------------------------------
The prompt is exactly the transformers prompt: ``encode_prompt(tok, record, prompt) +
answer_prefix_ids(tok)`` -- instructions, query, item, then ``<answer>`` -- passed as token ids so
that no chat template or re-tokenisation changes it. The engine runs with
``logprobs_mode="processed_logprobs"`` and one token is generated:

    SamplingParams(max_tokens=1, temperature=1.0, logprobs=4, allowed_token_ids=label_token_ids)

With the allowed-token mask applied before the log-softmax, the four returned log-probs are exactly
``log softmax`` over the four label logits: the same renormalisation as `taosr.scoring` /
`taosr.prefix` (`vllm_engine.renormalise` also accepts raw log-probs, where only logZ differs).
vLLM's automatic prefix caching plays the part of `PrefixScorer`'s shared instruction+query cache.
Levels and tiers follow with ``cumpt_levels(p, beta)`` and ``tiers_of``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .cumpt import (DEFAULT_CUTOFFS, argmax_levels, calibrate_beta, calibrate_cutoffs, cumpt_levels,
                    expected_score_levels, score_levels)
from .labels import ANSWER_OPEN, LABEL_TOKENS
from .prompts import PromptConfig
from .records import Record

log = logging.getLogger(__name__)
SERVING_FILE = "taosr_serving.json"


class ServingConfig(BaseModel):
    """What `taosr_serving.json` holds. Without the file: beta 0.5 and the default prompt."""

    beta: float = Field(0.5, ge=0, le=1, description="CumPT threshold: highest k with P(4)+...+P(k) >= beta.")
    objective: str | None = Field(None, description="Dev objective beta was tuned for (macro_f1 | accuracy).")
    dev_score: float | None = Field(None, description="That objective on the dev split at the chosen beta.")
    cutoffs: tuple[float, float, float] = Field(DEFAULT_CUTOFFS, description="Tuned expected-score cut-offs (comparison only).")
    label_token_ids: list[int] | None = Field(None, description="Token ids of levels 1, 2, 3, 4 (checked against the tokenizer).")
    label_tokens: list[str] = Field([LABEL_TOKENS[k] for k in (1, 2, 3, 4)], description="Label tokens of levels 1..4.")
    answer_prefix: str = Field(ANSWER_OPEN, description="Text appended to the prompt so that the next token is the label.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt layout the model was trained with.")
    n_dev: int | None = Field(None, description="Dev pairs used for calibration.")
    comparison: dict | None = Field(None, description="CumPT vs argmax vs expected-score cut-offs on dev.")


def load_serving_config(model_dir: str | Path) -> ServingConfig:
    """Read `<model_dir>/taosr_serving.json`; defaults (beta = 0.5) when the file is absent."""
    path = Path(model_dir) / SERVING_FILE
    if not path.is_file():
        log.info("%s not found: serving with beta = 0.5 (run `taosr calibrate` to tune it)", path)
        return ServingConfig()
    return ServingConfig.model_validate_json(path.read_text())


def check_label_ids(cfg: ServingConfig, tokenizer) -> list[int]:
    """The tokenizer's label ids; a mismatch with the stored ids means the wrong tokenizer/export."""
    from .modeling import label_token_ids

    ids = label_token_ids(tokenizer)
    if cfg.label_token_ids is not None and list(cfg.label_token_ids) != ids:
        raise ValueError(f"{SERVING_FILE} has label_token_ids {cfg.label_token_ids} but the tokenizer gives {ids}")
    return ids


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


def calibrate_model(model_dir: str | Path, dev_records: Sequence[Record], prompt_cfg: PromptConfig | None = None,
                    objective: str = "macro_f1", batch_size: int = 32, device: str = "auto",
                    dtype: str = "float32") -> dict:
    """Score `dev_records` (all labelled), tune beta and cut-offs, write `taosr_serving.json`.

    Returns the written config as a dict (plus "path"). Raises ValueError on unlabelled records.
    """
    from .modeling import label_token_ids, load_model
    from .prefix import PrefixScorer

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
    cfg = ServingConfig(
        beta=chosen.beta, objective=objective, dev_score=chosen.score, cutoffs=cutoffs,
        label_token_ids=label_token_ids(tok), answer_prefix=ANSWER_OPEN, prompt=prompt_cfg,
        n_dev=len(dev_records), comparison=compare_tiering(probs, gold, chosen.beta, cutoffs),
    )
    path = Path(model_dir) / SERVING_FILE
    path.write_text(cfg.model_dump_json(indent=1))
    return cfg.model_dump(mode="json") | {"path": str(path), "curve": chosen.curve}


