"""DevSelect keeps the weights of the dev-best check, the start model included when asked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from taosr.evaluation.devselect import DevSelect, still_rising
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


def test_still_rising_reads_the_measured_curves():
    # the cross-encoder at 1 epoch and answer-only SFT at 5 (dev-best last, under 1.5 points above the check
    # before; the final-step check 2 steps after a scheduled one stands in for it)
    assert still_rising([[98, .42094], [196, .67602], [294, .84024], [392, .84994], [394, .84994]], 1.5) is False
    assert still_rising([[393, .235], [786, .398], [1179, .466], [1572, .534], [1965, .5445], [1969, .5445]], 1.5) is False
    # think-first SFT at 4 epochs: +6.9 at the last check
    assert still_rising([[315, .279], [630, .323], [945, .438], [1260, .717], [1575, .786]], 1.5) is True
    assert still_rising([[0, .6], [20, .55]], 1.5) is False  # peaked at the start
    assert still_rising([[10, .5]], 1.5) is None


@given(st.lists(st.floats(0, 1), min_size=2, max_size=8), st.floats(0, 20))
def test_still_rising_only_when_the_last_check_is_best_and_far_above_the_one_before(fs, within):
    curve = [[100 * (i + 1), f] for i, f in enumerate(fs)]
    want = fs[-1] >= max(fs) and 100 * (fs[-1] - fs[-2]) >= within
    assert still_rising(curve, within) is want
