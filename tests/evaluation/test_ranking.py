"""Ranking metrics per query (nDCG@k, MRR) and macro-F1 over the levels a split has."""

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from taosr.evaluation.evaluate import metrics
from taosr.evaluation.ranking import pair_scores, ranking_metrics, ranking_note
from taosr.records import Record


def recs(spec):
    return [Record(query=q, title=f"item {i}", label=lv) for i, (q, lv) in enumerate(spec)]


def test_ndcg_and_mrr_per_query():
    records = recs([("a", 4), ("a", 1), ("a", 3), ("b", 1), ("b", 4), ("c", 4)])
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.8, 0.3])  # query a ranks its Exact item last; b ranks it first
    r = ranking_metrics(records, scores, k=10)
    want_a = ndcg_score([[3, 0, 2]], [[0.2, 0.9, 0.5]], k=10)
    assert r["ndcg@10"] == pytest.approx((want_a + 1.0) / 2)
    assert r["mrr"] == pytest.approx((1 / 3 + 1) / 2)
    assert (r["queries"], r["queries_ranked"], r["queries_single_item"]) == (3, 2, 1)
    assert "over 2 of 3 queries (1 with a single item left out)" in ranking_note(r)


def test_single_item_queries_rank_nothing():
    r = ranking_metrics(recs([("a", 4), ("b", 1)]), np.array([0.5, 0.5]))
    assert r["ndcg@10"] is None and r["mrr"] is None and "not defined here" in ranking_note(r)


def test_scores_are_the_expected_level_or_the_prediction():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    assert pair_scores([4, 1], probs).tolist() == pytest.approx([3.0, 1.0])
    assert pair_scores([4, 1]).tolist() == [4.0, 1.0]


def test_macro_f1_over_the_levels_present():
    gold, pred = [4, 4, 4, 3, 1], [4, 4, 4, 4, 4]  # no level 2 in gold
    m = metrics(gold, pred)
    f4 = 2 * 0.6 * 1.0 / 1.6
    assert m["levels_absent"] == [2]
    assert m["macro_f1"] == pytest.approx(f4 / 4) and m["macro_f1_present"] == pytest.approx(f4 / 3)
