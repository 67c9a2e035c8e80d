"""Tests for taosr.evaluation.stats: the weighted macro-F1, the query bootstrap and the prior pass@k floor."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from taosr.evaluation.stats import paired_delta, prior_pass_at_k, seed_stats, weighted_macro_f1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 4)), min_size=1, max_size=60))
def test_weighted_macro_f1_equals_sklearn_for_unit_weights(pairs):
    gold, pred = (np.array(x) for x in zip(*pairs))
    want = f1_score(gold, pred, labels=[1, 2, 3, 4], average="macro", zero_division=0)
    assert abs(weighted_macro_f1(gold, pred, np.ones(len(gold))) - want) < 1e-12


def test_integer_weights_equal_repeated_pairs():
    gold, pred = np.array([1, 2, 3, 4, 4]), np.array([1, 3, 3, 4, 2])
    w = np.array([2, 0, 1, 3, 1])
    rep_g, rep_p = np.repeat(gold, w), np.repeat(pred, w)
    assert weighted_macro_f1(gold, pred, w.astype(float)) == f1_score(rep_g, rep_p, labels=[1, 2, 3, 4],
                                                                      average="macro", zero_division=0)


def test_seed_stats_mean_and_ci_contain_the_point():
    rng = np.random.default_rng(0)
    gold = rng.integers(1, 5, 400)
    qids = [f"q{i // 4}" for i in range(400)]
    preds = [np.where(rng.random(400) < acc, gold, rng.integers(1, 5, 400)) for acc in (0.6, 0.65, 0.7)]
    s = seed_stats(gold, preds, qids, n_boot=300)
    assert len(s["macro_f1"]) == 3 and abs(s["mean"] - np.mean(s["macro_f1"])) < 1e-2
    assert s["ci95"][0] < s["mean"] < s["ci95"][1]
    assert s["ci95"][1] - s["ci95"][0] < 20


def test_paired_delta_sees_a_real_gain_and_not_a_null_one():
    rng = np.random.default_rng(1)
    gold = rng.integers(1, 5, 600)
    qids = [f"q{i // 6}" for i in range(600)]
    base = [np.where(rng.random(600) < 0.5, gold, rng.integers(1, 5, 600)) for _ in range(3)]
    better = [np.where(rng.random(600) < 0.3, gold, b) for b in base]  # fixes ~30% of the remaining errors
    d = paired_delta(gold, better, base, qids, n_boot=300)
    assert d["delta"] > 5 and d["ci95"][0] > 0
    null = paired_delta(gold, base, base, qids, n_boot=100)
    assert null["delta"] == 0 and null["ci95"] == [0.0, 0.0]


def test_prior_pass_at_k_floor():
    train = [4] * 50 + [2] * 30 + [1] * 15 + [3] * 5
    got = prior_pass_at_k(train, [4, 3], [1, 2])
    assert abs(got[1] - (0.5 + 0.05) / 2) < 1e-12
    assert abs(got[2] - ((1 - 0.5 ** 2) + (1 - 0.95 ** 2)) / 2) < 1e-12
