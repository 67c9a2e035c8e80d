"""DevSelect keeps the weights of the dev-best check, the start model included when asked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from taosr.evaluation.devselect import DevSelect
from taosr.prompts import PromptConfig


class ScriptedDev(DevSelect):
    """Dev macro-F1 read from a script instead of the model; each check also records the weight it saw."""

    def __init__(self, model, f1s, include_start):
        super().__init__(model, None, [], "answer_first", PromptConfig(), every=1, include_start=include_start)
        self.f1s, self.seen = list(f1s), []

    def dev_f1(self) -> float:
        self.seen.append(float(self.model.weight))
        return self.f1s.pop(0)


def run(f1s, include_start: bool) -> tuple[ScriptedDev, torch.nn.Linear]:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    cb = ScriptedDev(model, f1s, include_start)
    state = SimpleNamespace(global_step=0, max_steps=4)
    cb.on_train_begin(None, state, None)
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(step))  # "training": step k leaves weight k
        state.global_step = step
        cb.on_step_end(None, state, None)
    cb.on_train_end(None, state, None)
    return cb, model


@pytest.mark.parametrize("include_start, best_step", [(True, 0), (False, 3)])
def test_dev_best_weights_come_back(include_start, best_step):
    f1s = [0.50, 0.30, 0.40, 0.45, 0.20] if include_start else [0.30, 0.40, 0.45, 0.20]
    cb, model = run(f1s, include_start)
    assert cb.best_step == best_step
    assert float(model.weight) == float(best_step)  # the saved model is the dev-best one
    assert [s for s, _ in cb.history] == ([0, 1, 2, 3, 4] if include_start else [1, 2, 3, 4])


def test_a_resumed_run_has_no_start_candidate():
    model = torch.nn.Linear(1, 1, bias=False)
    cb = ScriptedDev(model, [0.9], include_start=True)
    cb.on_train_begin(None, SimpleNamespace(global_step=2, max_steps=4), None)
    assert cb.history == []
