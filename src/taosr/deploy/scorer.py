"""The scorer a deployment uses: answer-first P(level 1..4) for groups of items sharing a query.

`make_scorer` sets it up from a model folder and its `taosr_serving.json` for every deployment
(`taosr score`, the Ray actors, `taosr serve`): vLLM (`VLLMScorer`), or transformers with the
prefix-shared `PrefixScorer` (or `UnsharedScorer`, every prompt whole). All of them answer
`score_records`, `score_items` and `score_groups` with the same numbers (vLLM up to its kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..infer.vllm_engine import load_llm, renormalise
from ..prompts import answer_prefix_ids, encode_prompt
from ..records import Record
from .schema import ServingConfig, check_label_ids, load_serving_config


class VLLMScorer:
    """Answer-first P(level 1..4) on vLLM; same interface as `PrefixScorer.score_records` / `score_items`."""

    def __init__(self, model_dir: str | Path, serving: ServingConfig | None = None, **llm_kwargs):
        self.llm = load_llm(model_dir, logprobs_mode="processed_logprobs", **llm_kwargs)  # raises without vLLM + GPU
        from vllm import SamplingParams

        self.serving = serving or load_serving_config(model_dir)
        self.tok = self.llm.get_tokenizer()
        self.label_ids = check_label_ids(self.serving, self.tok)
        self.params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=len(self.label_ids),
                                     allowed_token_ids=self.label_ids)

    def score_records(self, records: Sequence[Record]) -> np.ndarray:
        """(n, 4) probabilities, columns = levels 1..4."""
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


def make_scorer(model_dir: str | Path, serving: ServingConfig, engine: str = "transformers",
                device: str | None = "auto",
                dtype: str = "float32", batch_size: int = 32, prefix_sharing: bool = True):
    """The scorer for `model_dir` on `engine` (vllm | transformers, already resolved), label ids checked.

    transformers: the model in `dtype` on `device` (see `modeling.pick_device`), scored by `PrefixScorer`
    (`batch_size` items per forward where items are batched), or without prefix sharing by `UnsharedScorer`.
    """
    if engine == "vllm":
        return VLLMScorer(model_dir, serving)
    from ..infer.prefix import PrefixScorer
    from ..infer.scoring import UnsharedScorer
    from ..modeling import load_model

    model, tok = load_model(model_dir, dtype, device)
    check_label_ids(serving, tok)
    kind = PrefixScorer if prefix_sharing else UnsharedScorer
    return kind(model, tok, serving.prompt, batch_size)
