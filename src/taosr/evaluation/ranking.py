"""Ranking metrics per query, next to macro-F1: what a search team reads (nDCG@k, MRR).

Each pair gets a score: the expected level under the model's P(level) where the model is read from its
first-token distribution, else its predicted level (think-first, parsed from text). Items of one query
(same query text) are ranked by that score; the gain of an item is its gold level - 1 (Irrelevant 0,
Excellent 3). nDCG@k is scikit-learn's `ndcg_score`; MRR is the mean reciprocal rank of the first
Excellent (ESCI: Exact) item. A query with a single item, or (for MRR) without an Excellent item, ranks
nothing and is counted, not scored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import ndcg_score

from ..records import Record

LEVEL_VALUES = np.array([1.0, 2.0, 3.0, 4.0])


def pair_scores(pred: Sequence[int], probs: np.ndarray | None = None) -> np.ndarray:
    """(n,) ranking score per pair: expected level from `probs` (n, 4) when given, else the predicted level."""
    if probs is not None:
        return np.asarray(probs, dtype=float) @ LEVEL_VALUES
    return np.asarray(pred, dtype=float)


def ranking_metrics(records: Sequence[Record], scores: np.ndarray, k: int = 10) -> dict:
    """nDCG@k and MRR averaged over queries, and how many queries could be ranked."""
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_query[r.query.strip().lower()].append(i)
    ndcgs, rrs = [], []
    for ix in by_query.values():
        if len(ix) < 2:
            continue
        gold = np.array([records[i].label - 1 for i in ix], dtype=float)  # gains 0..3
        s = np.asarray([scores[i] for i in ix], dtype=float)
        if gold.max() > 0:
            ndcgs.append(float(ndcg_score(gold[None, :], s[None, :], k=k)))
        if (gold == 3).any():
            ranked = np.argsort(-s, kind="stable")
            first = int(np.nonzero(gold[ranked] == 3)[0][0])
            rrs.append(1.0 / (first + 1))
    return {
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else None, "mrr": float(np.mean(rrs)) if rrs else None,
        "queries": len(by_query), "queries_ranked": len(ndcgs), "queries_single_item": sum(len(ix) < 2 for ix in
                                                                                           by_query.values()),
        "k": k,
    }


def ranking_note(r: dict) -> str:
    """One readable line about the ranking metrics (why they are missing, when they are)."""
    k = r.get("k", 10)
    if r.get(f"ndcg@{k}") is None:
        return (f"ranking: no query has two or more judged items with a relevant one ({r.get('queries_single_item')} "
                f"of {r.get('queries')} queries have a single item), so nDCG@{k} and MRR are not defined here")
    mrr = "-" if r.get("mrr") is None else f"{100 * r['mrr']:.2f}"
    return (f"ranking: nDCG@{k} {100 * r[f'ndcg@{k}']:.2f}, MRR {mrr} over {r['queries_ranked']} of {r['queries']} "
            f"queries ({r['queries_single_item']} with a single item left out)")
