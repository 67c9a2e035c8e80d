"""vLLM's offline engine for scoring and pass@N rollouts (the GPU path; transformers is the fallback).

Scoring follows the recipe in `taosr.calibrate`: the transformers prompt ids plus ``<answer>``, one
generated token, the log-probs of the four label tokens renormalised (`renormalise`). Sampling
draws N responses per prompt with vLLM's own `n`, decoded with the special tokens kept so the
evaluation parser sees ``<think>``/``<answer>`` and the label tokens exactly as transformers does.

`renormalise` is tested here against the transformers scorer; the engine classes need vLLM and a
CUDA GPU (`tests/test_scale.py` compares them with transformers where vLLM is importable).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .records import Record
from .scale import vllm_available

log = logging.getLogger(__name__)


def renormalise(label_logprobs: np.ndarray) -> np.ndarray:
    """(n, 4) log-probs of the label tokens (any normaliser; -inf = absent) -> (n, 4) probabilities."""
    z = label_logprobs - label_logprobs.max(axis=1, keepdims=True)  # (n, 4), max 0 per row
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=1)
def _sampling_engine(model_dir: str):
    """One engine per model folder for all shards of a sampling run (vLLM does not reliably free a
    dropped engine's GPU memory, so building one per shard can run out of memory)."""
    return _llm(model_dir)


def _llm(model_dir: str | Path, **llm_kwargs):
    if not vllm_available():
        raise RuntimeError("vLLM needs `pip install vllm` and a CUDA GPU; use the transformers engine instead")
    from vllm import LLM

    return LLM(model=str(model_dir), enable_prefix_caching=True, **llm_kwargs)


class VLLMScorer:
    """Answer-first P(level 1..4) on vLLM; same interface as `PrefixScorer.score_records` / `score_items`."""

    def __init__(self, model_dir: str | Path, serving=None, **llm_kwargs):
        from .calibrate import check_label_ids, load_serving_config

        self.llm = _llm(model_dir, logprobs_mode="processed_logprobs", **llm_kwargs)  # raises without vLLM + GPU
        from vllm import SamplingParams

        self.serving = serving or load_serving_config(model_dir)
        self.tok = self.llm.get_tokenizer()
        self.label_ids = check_label_ids(self.serving, self.tok)
        self.params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=len(self.label_ids),
                                     allowed_token_ids=self.label_ids)

    def score_records(self, records: Sequence[Record]) -> np.ndarray:
        """(n, 4) probabilities, columns = levels 1..4."""
        from .prompts import answer_prefix_ids, encode_prompt

        suffix = answer_prefix_ids(self.tok)
        prompts = [{"prompt_token_ids": encode_prompt(self.tok, r, self.serving.prompt) + suffix} for r in records]
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        logp = np.full((len(records), 4), -np.inf)
        for i, out in enumerate(outs):
            top = out.outputs[0].logprobs[0]  # {token_id: Logprob} at the one generated position
            for j, tid in enumerate(self.label_ids):
                if tid in top:
                    logp[i, j] = top[tid].logprob
        return renormalise(logp)

    score_items = score_records  # vLLM's prefix caching shares the query prefix by itself

    def score_groups(self, groups: Sequence[Sequence[Record]]) -> list[np.ndarray]:
        """One (n_i, 4) array per group, all groups in one vLLM call."""
        probs = self.score_records([r for g in groups for r in g])
        return np.split(probs, np.cumsum([len(g) for g in groups])[:-1]) if groups else []


def vllm_generate(model_dir: str | Path, prompts: Sequence[list[int]], n: int, temperature: float, top_p: float,
                  max_new_tokens: int, seed: int, **llm_kwargs) -> list[list[str]]:
    """N sampled responses per prompt (token-id prompts), decoded with special tokens kept."""
    llm = _llm(model_dir, **llm_kwargs) if llm_kwargs else _sampling_engine(str(model_dir))  # raises without vLLM + GPU
    from vllm import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed,
                            skip_special_tokens=False)
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=True)
    eos = llm.get_tokenizer().eos_token or ""
    return [[o.text.split(eos)[0] if eos else o.text for o in out.outputs] for out in outs]
