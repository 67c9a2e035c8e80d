"""vLLM's offline engine for pass@N rollouts and scoring (the GPU path; transformers is the fallback).

Sampling (`vllm_generate`) draws N responses per prompt with vLLM's own `n`, decoded with the special
tokens kept so the evaluation parser sees ``<think>``/``<answer>`` and the label tokens exactly as
transformers does. Scoring on vLLM (`taosr.deploy.scorer.VLLMScorer`) generates one token after
``<answer>`` and turns the label tokens' log-probs into probabilities with `renormalise`.

The engine needs vLLM and a CUDA GPU (`tests/test_scale.py` compares it with transformers where vLLM
is importable).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..runtime import vllm_available

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
    return load_llm(model_dir)


def load_llm(model_dir: str | Path, **llm_kwargs):
    """A vLLM engine over a model folder, with prefix caching (raises without vLLM and a CUDA GPU)."""
    if not vllm_available():
        raise RuntimeError("vLLM needs `pip install vllm` and a CUDA GPU; use the transformers engine instead")
    from vllm import LLM

    return LLM(model=str(model_dir), enable_prefix_caching=True, **llm_kwargs)


def vllm_generate(model_dir: str | Path, prompts: Sequence[list[int]], n: int, temperature: float, top_p: float,
                  max_new_tokens: int, seed: int, **llm_kwargs) -> list[list[str]]:
    """N sampled responses per prompt (token-id prompts), decoded with special tokens kept."""
    llm = load_llm(model_dir,
                   **llm_kwargs) if llm_kwargs else _sampling_engine(str(model_dir))  # raises without vLLM + GPU
    from vllm import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed,
                            skip_special_tokens=False)
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=True)
    eos = llm.get_tokenizer().eos_token or ""
    return [[o.text.split(eos)[0] if eos else o.text for o in out.outputs] for out in outs]
