"""Statistics for comparing stages over seeds: query-level bootstrap CIs, paired deltas, pass@k floors.

The pairs of one query are correlated (same intent, same wording), so the bootstrap resamples
queries, not pairs. Seeds are resampled too (a hierarchical bootstrap): each replicate draws seeds
with replacement and one multiset of queries, and averages macro-F1 over the drawn seeds. A paired
delta between two rows uses the same draws for both, with row B's seed s paired with row A's seed s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

LEVELS = (1, 2, 3, 4)


def weighted_macro_f1(gold: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> float:
    """Macro-F1 over levels 1-4 with per-pair weights (integer weights = pairs repeated).

    gold, pred: (n,) ints (pred 0 = unparseable, always wrong); weight: (n,) >= 0.
    Equals sklearn's f1_score(average="macro", labels=[1, 2, 3, 4], zero_division=0) for unit weights.
    """
    f1s = []
    for lv in LEVELS:
        tp = weight[(gold == lv) & (pred == lv)].sum()
        fp = weight[(gold != lv) & (pred == lv)].sum()
        fn = weight[(gold == lv) & (pred != lv)].sum()
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(f1s))


def _query_index(query_ids: Sequence[str]) -> np.ndarray:
    """(n,) position of each pair's query among the distinct queries."""
    _, inverse = np.unique(np.asarray(query_ids, dtype=object).astype(str), return_inverse=True)
    return inverse


def _draws(n_queries: int, n_seeds: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, n_queries) query multiplicities and (n_boot, n_seeds) drawn seed positions."""
    rng = np.random.default_rng(seed)
    q = rng.multinomial(n_queries, np.full(n_queries, 1.0 / n_queries), size=n_boot)
    s = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return q, s


def _per_replicate(gold: np.ndarray, preds: np.ndarray, qix: np.ndarray, q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(n_boot,) mean macro-F1 over each replicate's drawn seeds on its drawn queries. preds: (n_seeds, n)."""
    out = np.empty(len(q))
    for b in range(len(q)):
        w = q[b][qix].astype(float)  # (n,) each pair weighted by its query's multiplicity
        out[b] = np.mean([weighted_macro_f1(gold, preds[j], w) for j in s[b]])
    return out


def seed_stats(gold: Sequence[int], preds_by_seed: Sequence[Sequence[int]], query_ids: Sequence[str],
               n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-seed macro-F1, their mean, and the 95% hierarchical-bootstrap CI of the mean (all in %)."""
    gold_a = np.asarray(gold)
    preds = np.asarray(preds_by_seed)
    ones = np.ones(len(gold_a))
    per_seed = [100 * weighted_macro_f1(gold_a, p, ones) for p in preds]
    qix = _query_index(query_ids)
    q, s = _draws(int(qix.max()) + 1, len(preds), n_boot, seed)
    reps = 100 * _per_replicate(gold_a, preds, qix, q, s)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"macro_f1": [round(x, 3) for x in per_seed], "mean": round(float(np.mean(per_seed)), 3),
            "ci95": [round(float(lo), 3), round(float(hi), 3)]}


def paired_delta(gold: Sequence[int], preds_a: Sequence[Sequence[int]], preds_b: Sequence[Sequence[int]],
                 query_ids: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean macro-F1 of A minus B (points), with the 95% CI from shared draws (seed s of A paired with B's)."""
    gold_a = np.asarray(gold)
    pa, pb = np.asarray(preds_a), np.asarray(preds_b)
    if pa.shape != pb.shape:
        raise ValueError(f"rows differ in shape: {pa.shape} vs {pb.shape} (same seeds and test pairs needed)")
    qix = _query_index(query_ids)
    q, s = _draws(int(qix.max()) + 1, len(pa), n_boot, seed)
    reps = 100 * (_per_replicate(gold_a, pa, qix, q, s) - _per_replicate(gold_a, pb, qix, q, s))
    ones = np.ones(len(gold_a))
    point = 100 * np.mean([weighted_macro_f1(gold_a, a, ones) - weighted_macro_f1(gold_a, b, ones)
                           for a, b in zip(pa, pb)])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"delta": round(float(point), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)]}


def prior_pass_at_k(train_labels: Sequence[int], gold: Sequence[int], ks: Sequence[int]) -> dict[int, float]:
    """pass@k of a judge that ignores the input and samples the training label prior: the floor that
    pass@k "headroom" must be read against. For gold level g with prior p_g: 1 - (1 - p_g)^k, averaged."""
    counts = Counter(train_labels)
    total = sum(counts.values())
    p = np.array([counts.get(int(g), 0) / total for g in gold])
    return {int(k): float(np.mean(1 - (1 - p) ** k)) for k in ks}
