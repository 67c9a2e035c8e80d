"""Choosing how long a stage trains on the dev split: a trainer callback that keeps the best weights.

Every `every` optimiser steps (and at the last one) the model is read on the dev records in its
output order (first-label-token scoring for answer_only / answer_first, greedy generation for
think_first) and its macro-F1 recorded. The weights of the best step are kept in memory and put back
when training ends, so the stage saves the dev-best model. With `include_start` the model as the stage
received it is a candidate too (step 0), so a stage that does not beat its parent on dev hands the
parent's weights on. The test split is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback

from ..prompts import PromptConfig
from ..records import Record
from .evaluate import metrics, predict


class DevSelect(TrainerCallback):
    """Keeps the weights of the dev-best step; `history` holds (step, dev macro-F1) pairs."""

    def __init__(self, model, tokenizer, dev: Sequence[Record], order: str, prompt_cfg: PromptConfig,
                 every: int, batch_size: int = 64, max_new_tokens: int = 128, include_start: bool = False):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.tok, self.dev, self.order, self.prompt_cfg = model, tokenizer, list(dev), order, prompt_cfg
        self.every, self.batch_size, self.max_new_tokens = every, batch_size, max_new_tokens
        self.include_start = include_start
        self.history: list[tuple[int, float]] = []
        self.best_step, self.best_f1, self._best_state = None, -1.0, None

    def dev_f1(self) -> float:
        was_training = self.model.training
        self.model.eval()
        out = predict(self.model, self.tok, self.dev, self.order, self.prompt_cfg,
                      batch_size=self.batch_size, max_new_tokens=self.max_new_tokens)
        if was_training:
            self.model.train()
        return metrics([r.label for r in self.dev], out["pred"])["macro_f1"]

    def _check(self, step: int) -> None:
        if self.history and self.history[-1][0] == step:
            return
        f1 = self.dev_f1()
        self.history.append((step, f1))
        if f1 > self.best_f1:  # ties keep the earlier (shorter) run
            self.best_step, self.best_f1 = step, f1
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def on_train_begin(self, args, state, control, **kw):
        if self.include_start and state.global_step == 0:  # a resumed run no longer has its start weights
            self._check(0)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._check(state.global_step)

    def on_train_end(self, args, state, control, **kw):
        self._check(state.global_step)
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)

    def summary(self) -> dict:
        return {"dev_best_step": self.best_step, "dev_best_macro_f1": self.best_f1,
                "dev_curve": [(s, round(f, 5)) for s, f in self.history]}


def still_rising(curve: Sequence[Sequence[float]], within: float) -> bool | None:
    """Whether a dev curve ((step, macro-F1 in 0-1) pairs) was still rising when training stopped: its best
    value is the last check's, `within` points (0-100) or more above the check before. None below two checks.

    A check at the final step right after a scheduled one (fewer steps apart than half the widest gap) stands
    in for it, so the two are not compared with each other."""
    pts = sorted((int(s), float(f)) for s, f in curve)
    if len(pts) >= 3 and pts[-1][0] - pts[-2][0] < max(b[0] - a[0] for a, b in zip(pts, pts[1:])) / 2:
        pts = pts[:-2] + pts[-1:]
    if len(pts) < 2:
        return None
    last, before = pts[-1][1], pts[-2][1]
    return last >= max(f for _, f in pts) and 100 * (last - before) >= within
