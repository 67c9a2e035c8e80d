"""The serving export `<model_dir>/taosr_serving.json`: how to read a model's scores (schema, loading, checks).

`taosr calibrate` (`taosr.deploy.calibrate`) writes it next to the checkpoint: everything a server
needs besides the weights:

    {"rule", "beta", "objective", "dev_score", "cutoffs", "label_token_ids", "label_tokens",
     "answer_prefix": "<answer>", "prompt": {PromptConfig}, "n_dev", "comparison"}

Both the transformers scorers (`taosr.deploy.serve`, `taosr.deploy.batch_score`) and a vLLM deployment read it.

vLLM recipe (GPU path; implemented by `taosr.deploy.scorer.VLLMScorer`)
-------------------------------------------------------
The prompt is exactly the transformers prompt: ``encode_prompt(tok, record, prompt) +
answer_prefix_ids(tok)`` -- instructions, query, item, then ``<answer>`` -- passed as token ids so
that no chat template or re-tokenisation changes it. The engine runs with
``logprobs_mode="processed_logprobs"`` and one token is generated:

    SamplingParams(max_tokens=1, temperature=1.0, logprobs=4, allowed_token_ids=label_token_ids)

With the allowed-token mask applied before the log-softmax, the four returned log-probs are exactly
``log softmax`` over the four label logits: the same renormalisation as `taosr.infer.scoring` /
`taosr.infer.prefix` (`infer.vllm_engine.renormalise` also accepts raw log-probs, where only logZ differs).
vLLM's automatic prefix caching plays the part of `PrefixScorer`'s shared instruction+query cache.
Levels and tiers follow with ``ServingConfig.levels(p)`` (CumPT at beta, or argmax where calibration chose it)
and ``tiers_of``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ..errors import InputError
from ..labels import ANSWER_OPEN, LABEL_TOKENS
from ..prompts import PromptConfig, model_prompt
from ..settings import read_json_model
from .cumpt import DEFAULT_CUTOFFS, argmax_levels, cumpt_levels

log = logging.getLogger(__name__)
SERVING_FILE = "taosr_serving.json"


class ServingConfig(BaseModel):
    """What `taosr_serving.json` holds. Without the file: beta 0.5 and the model's stored prompt layout."""

    rule: Literal["cumpt", "argmax"] = Field(
        "cumpt", description="How probabilities become a level: 'cumpt' (threshold beta) or 'argmax' (the most "
        "probable level). Calibration serves argmax where no beta reaches argmax's score on dev.")
    beta: float = Field(0.5, ge=0, le=1, description="CumPT threshold: highest k with P(4)+...+P(k) >= beta.")
    objective: str | None = Field(None, description="Dev objective beta was tuned for (macro_f1 | accuracy).")
    dev_score: float | None = Field(None, description="That objective on the dev split at the chosen beta.")
    cutoffs: tuple[float, float, float] = Field(DEFAULT_CUTOFFS,
                                                description="Tuned expected-score cut-offs (comparison only).")
    label_token_ids: list[int] | None = Field(None, description="Token ids of levels 1, 2, 3, 4 (checked against the "
                                              "tokenizer).")
    label_tokens: list[str] = Field([LABEL_TOKENS[k] for k in (1, 2, 3, 4)], description="Label tokens of levels 1..4.")
    answer_prefix: str = Field(ANSWER_OPEN,
                               description="Text appended to the prompt so that the next token is the label.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt layout the model was trained with.")
    n_dev: int | None = Field(None, description="Dev pairs used for calibration.")
    comparison: dict | None = Field(None, description="CumPT vs argmax vs expected-score cut-offs on dev.")

    def levels(self, probs: np.ndarray) -> np.ndarray:
        """Levels 1..4 of `probs` (n, 4) by this config's rule."""
        return argmax_levels(probs) if self.rule == "argmax" else cumpt_levels(probs, self.beta)


def load_serving_config(model_dir: str | Path) -> ServingConfig:
    """Read `<model_dir>/taosr_serving.json`; when it is absent, beta = 0.5 and the prompt layout stored with
    the model (`prompts.PROMPT_FILE`)."""
    path = Path(model_dir) / SERVING_FILE
    if not path.is_file():
        log.info("%s not found: serving with beta = 0.5 (run `taosr calibrate` to tune it)", path)
        return ServingConfig(prompt=model_prompt(model_dir))
    return read_json_model(ServingConfig, path, "serving export",
                           "run `taosr calibrate` again, or delete the file to serve with beta 0.5")


def check_label_ids(cfg: ServingConfig, tokenizer) -> list[int]:
    """The tokenizer's label ids; a mismatch with the stored ids means the wrong tokenizer/export."""
    from ..modeling import label_token_ids  # torch and transformers load only where a model is checked

    ids = label_token_ids(tokenizer)
    if cfg.label_token_ids is not None and list(cfg.label_token_ids) != ids:
        raise InputError(f"{SERVING_FILE} has label_token_ids {cfg.label_token_ids} but the tokenizer gives {ids}: "
                         "the export belongs to another tokenizer; run `taosr calibrate` again")
    return ids
