"""Tests for taosr.deploy.cumpt: CumPT tiering, the baselines, and dev-set calibration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from taosr.deploy.cumpt import (
    DEFAULT_CUTOFFS,
    CalibrationResult,
    argmax_levels,
    calibrate_beta,
    calibrate_cutoffs,
    cumpt_levels,
    default_beta_grid,
    expected_score_levels,
    expected_scores,
    score_levels,
    scores_for_betas,
    tiers_of,
)

ROW = [0.1, 0.2, 0.3, 0.4]  # tails from the top: L4 0.4, L3 0.7, L2 0.9, L1 1.0


# ---------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize(
    "beta, level",
    [(0.0, 4), (1e-6, 4), (0.4, 4), (0.41, 3), (0.5, 3), (0.7, 3), (0.71, 2), (0.9, 2), (0.95, 1), (1.0, 1)],
)
def test_cumpt_hand_cases(beta, level):
    assert cumpt_levels(np.array([ROW]), beta).tolist() == [level]


def test_cumpt_rows_are_independent_and_vectorised():
    probs = np.array([ROW, [0.0, 0.0, 1.0, 0.0], [0.7, 0.1, 0.1, 0.1], [0.0, 0.5, 0.0, 0.5]])
    assert cumpt_levels(probs, 0.5).tolist() == [3, 3, 1, 4]
    assert cumpt_levels(probs, 0.6).tolist() == [3, 3, 1, 2]
    assert cumpt_levels(probs, 1e-9 / 2).tolist() == [4, 3, 4, 4]  # tiny beta: highest level with mass
    assert cumpt_levels(probs, 1.0).tolist() == [1, 3, 1, 2]  # beta 1: lowest level with mass
    assert cumpt_levels(np.zeros((0, 4)), 0.5).shape == (0,)


def test_cumpt_row_short_of_beta_falls_back_to_level_1():
    assert cumpt_levels(np.array([[0.1, 0.1, 0.1, 0.1]]), 0.9).tolist() == [1]


def test_cumpt_float_tolerance_at_beta_one():
    row = np.array([[0.0, 0.1, 0.2, 0.7]])
    row[0, 3] -= 1e-15  # sums to 1 - 1e-15
    assert cumpt_levels(row, 1.0).tolist() == [2]


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.ones(4), np.array([[0.5, 0.5, -0.1, 0.1]]), np.array([[np.nan, 0, 0, 1]])])
def test_bad_probs_raise(bad):
    with pytest.raises(ValueError):
        cumpt_levels(bad, 0.5)


@pytest.mark.parametrize("beta", [-0.1, 1.1])
def test_bad_beta_raises(beta):
    with pytest.raises(ValueError):
        cumpt_levels(np.array([ROW]), beta)


def test_argmax_levels_ties_go_low():
    probs = np.array([ROW, [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert argmax_levels(probs).tolist() == [4, 1, 4]


def test_expected_score_levels():
    probs = np.array([ROW, [1, 0, 0, 0], [0, 0, 0, 1], [0, 0.5, 0.5, 0]], dtype=float)
    assert np.allclose(expected_scores(probs), [3.0, 1.0, 4.0, 2.5])
    assert expected_score_levels(probs).tolist() == [3, 1, 4, 3]  # 2.5 >= c2 = 2.5
    assert expected_score_levels(probs, (2.0, 3.5, 3.9)).tolist() == [2, 1, 4, 2]
    assert expected_score_levels(probs, (1.0, 1.0, 5.0)).tolist() == [3, 3, 3, 3]  # equal cut-offs allowed
    for bad in [(3.0, 2.0, 1.0), (1.0, 2.0), (1.0, float("nan"), 3.0)]:
        with pytest.raises(ValueError):
            expected_score_levels(probs, bad)


def test_tiers_of():
    assert tiers_of(np.array([4, 3, 2, 1])).tolist() == ["Good", "Good", "Mid", "Bad"]
    assert tiers_of([]).tolist() == []
    with pytest.raises(ValueError):
        tiers_of(np.array([0, 5]))


# ---------------------------------------------------------------- properties

weights = st.lists(st.integers(0, 20), min_size=4, max_size=4).filter(any)
prob_rows = st.lists(weights, min_size=1, max_size=12).map(lambda w: np.array(w, float) / np.sum(w, 1, keepdims=True))
betas = st.floats(0.0, 1.0, allow_nan=False)


def _reference(probs: np.ndarray, beta: float) -> list[int]:
    """Literal reading of the rule, one row at a time."""
    out = []
    for row in probs:
        level = 1
        for k in (4, 3, 2, 1):
            tail = row[k - 1 :].sum()
            if tail >= beta - 1e-9 and (beta == 0 or tail > 0):
                level = k
                break
        out.append(level)
    return out


@settings(max_examples=150, deadline=None)
@given(prob_rows, betas)
def test_levels_in_range_and_match_reference(probs, beta):
    levels = cumpt_levels(probs, beta)
    assert set(levels.tolist()) <= {1, 2, 3, 4}
    assert levels.tolist() == _reference(probs, beta)


@settings(max_examples=150, deadline=None)
@given(prob_rows, betas, betas)
def test_raising_beta_never_raises_a_level(probs, b1, b2):
    lo, hi = sorted((b1, b2))
    assert np.all(cumpt_levels(probs, hi) <= cumpt_levels(probs, lo))


@settings(max_examples=100, deadline=None)
@given(prob_rows)
def test_extreme_betas(probs):
    has_mass = probs > 0
    highest = 4 - np.argmax(has_mass[:, ::-1], axis=1)
    lowest = 1 + np.argmax(has_mass, axis=1)
    assert cumpt_levels(probs, 1e-6).tolist() == highest.tolist()
    assert cumpt_levels(probs, 1.0).tolist() == lowest.tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.floats(1e-6, 1.0))
def test_one_hot_rows_agree_with_argmax(levels, beta):
    probs = np.eye(4)[np.array(levels) - 1]
    assert cumpt_levels(probs, beta).tolist() == levels
    assert argmax_levels(probs).tolist() == levels
    assert expected_score_levels(probs).tolist() == levels


# ---------------------------------------------------------------- calibration


def _miscalibrated_dev(reps: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Gold g < 4 gets P(g) = 0.4, P(g+1) = 0.6 (over-confident one level up); gold 4 is one-hot.

    CumPT is perfect exactly for beta in (0.6, 1]; at the median (0.5) levels 1-3 are all wrong.
    """
    rows, gold = [], []
    for g in (1, 2, 3, 4):
        row = np.zeros(4)
        if g < 4:
            row[g - 1], row[g] = 0.4, 0.6
        else:
            row[3] = 1.0
        rows += [row] * reps
        gold += [g] * reps
    return np.array(rows), np.array(gold)


def test_calibrate_beta_finds_known_best():
    probs, gold = _miscalibrated_dev()
    res = calibrate_beta(probs, gold)
    assert isinstance(res, CalibrationResult)
    assert res.score == pytest.approx(1.0)
    assert res.beta == pytest.approx(0.62)  # smallest grid beta above 0.6: closest to 0.5 among the ties
    assert score_levels(gold, cumpt_levels(probs, 0.5)) < 0.5
    betas = [b for b, _ in res.curve]
    assert betas == sorted(betas) and 0.02 in betas and 0.98 in betas and 0.6 in betas
    assert all(s == pytest.approx(1.0) for b, s in res.curve if b > 0.6 + 1e-9)
    assert calibrate_beta(probs, gold, objective="accuracy").score == pytest.approx(1.0)


def test_calibrate_beta_ties_prefer_half_and_custom_grid():
    probs = np.eye(4)[[0, 1, 2, 3, 3]]
    gold = np.array([1, 2, 3, 4, 4])
    assert calibrate_beta(probs, gold).beta == 0.5  # every beta is perfect
    assert calibrate_beta(probs, gold, grid=[0.3, 0.7]).beta == 0.3  # equidistant: the smaller
    probs2, gold2 = _miscalibrated_dev(2)
    res = calibrate_beta(probs2, gold2, grid=[0.5, 0.9])
    assert res.beta == 0.9 and [b for b, _ in res.curve] == [0.5, 0.9]


def test_calibration_input_checks():
    probs, gold = _miscalibrated_dev(1)
    with pytest.raises(ValueError):
        calibrate_beta(probs, gold[:-1])
    with pytest.raises(ValueError):
        calibrate_beta(probs, gold, objective="f2")
    with pytest.raises(ValueError):
        calibrate_beta(probs, gold, grid=[1.5])
    with pytest.raises(ValueError):
        calibrate_cutoffs(probs, gold + 1)  # level 5


def test_score_levels_is_sklearn_macro_f1_over_all_levels():
    gold, pred = np.array([4, 4, 3, 1]), np.array([4, 3, 3, 4])  # level 2 absent from both: counts 0
    expected = f1_score(gold, pred, average="macro", labels=[1, 2, 3, 4], zero_division=0)
    assert score_levels(gold, pred) == pytest.approx(expected)
    assert score_levels(gold, pred, "accuracy") == pytest.approx(0.5)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.sampled_from(["macro_f1", "accuracy"]))
def test_vectorised_scores_equal_score_levels_of_cumpt_levels(seed, n, objective):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4) * rng.uniform(0.2, 2), size=n)
    probs[rng.random(n) < 0.2, 0] = 0.0  # some zero masses (beta > 0 never picks an empty tail)
    probs /= probs.sum(1, keepdims=True)
    gold = rng.integers(1, 5, size=n)
    tails = np.cumsum(probs[:, ::-1], axis=1).ravel()
    betas = np.unique(np.concatenate([[0.0, 1e-12, 0.5, 1.0], tails[tails <= 1], rng.random(5)]))
    want = [score_levels(gold, cumpt_levels(probs, b), objective) for b in betas]
    np.testing.assert_allclose(scores_for_betas(probs, gold, betas, objective, chunk=7), want, atol=1e-12)


def test_calibration_is_exact_so_float_noise_does_not_move_it():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=1500)  # 4,500 tail sums: every one is a candidate
    gold = np.where(rng.random(1500) < 0.6, np.argmax(probs, 1) + 1, rng.integers(1, 5, 1500))
    noisy = np.clip(probs + rng.normal(0, 1e-7, probs.shape), 0, None)
    noisy /= noisy.sum(1, keepdims=True)
    a, b = calibrate_beta(probs, gold), calibrate_beta(noisy, gold)
    assert a.score == pytest.approx(b.score, abs=1e-12) and a.beta == pytest.approx(b.beta, abs=1e-5)
    assert len(a.curve) > 4000  # not thinned
    some = np.random.default_rng(4).random(200)  # no beta does better than the exact search's
    assert a.score >= max(score_levels(gold, cumpt_levels(probs, x)) for x in some) - 1e-12


def test_default_grid_is_thinned_on_large_dev_sets():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=2000)
    grid = default_beta_grid(probs, max_extra=100)
    assert len(grid) <= 49 + 100 and grid.min() > 0 and grid.max() <= 1


def test_calibrate_cutoffs_beats_default():
    probs, gold = _miscalibrated_dev()
    default = score_levels(gold, expected_score_levels(probs, DEFAULT_CUTOFFS))
    cutoffs, score = calibrate_cutoffs(probs, gold)
    assert score == pytest.approx(1.0) and default < 1.0
    assert list(cutoffs) == sorted(cutoffs)
    assert score == pytest.approx(score_levels(gold, expected_score_levels(probs, cutoffs)))


def test_calibrate_cutoffs_never_worse_than_default_on_noise():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=300)
    gold = rng.integers(1, 5, size=300)
    for objective in ("macro_f1", "accuracy"):
        default = score_levels(gold, expected_score_levels(probs), objective)
        cutoffs, score = calibrate_cutoffs(probs, gold, objective)
        assert score >= default
        assert score == pytest.approx(score_levels(gold, expected_score_levels(probs, cutoffs), objective))
