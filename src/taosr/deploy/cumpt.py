"""Deployment tiering: turn the four first-token label probabilities into a level and a tier.

Online, the judge is scored by one prefill: the softmax over the four label tokens at the first
answer position gives `probs[:, j] = P(level j+1)` (column 0 is level 1, column 3 is level 4).
This module turns those rows into levels three ways:

* `cumpt_levels` -- **CumPT** (cumulative-probability tiering, TaoSR1): one knob `beta`; the
  predicted level is the highest k with P(4) + ... + P(k) >= beta. beta = 0.5 is the median level;
  a larger beta is stricter (lower levels), a smaller one more lenient.
* `argmax_levels` -- the most likely level.
* `expected_score_levels` -- the classic multi-threshold scheme on s = sum_k k * P(k).

`calibrate_beta` and `calibrate_cutoffs` tune the knob(s) on a labelled dev set, and `tiers_of`
maps levels to the online tiers Good / Mid / Bad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from ..labels import LEVELS, TIERS

#: Absolute slack on the cumulative sums, so that beta = 1 still matches a row summing to 1 - 1e-16.
TOL = 1e-9
#: Cut-offs of the expected-score scheme when nothing is tuned: halfway between adjacent levels.
DEFAULT_CUTOFFS = (1.5, 2.5, 3.5)
_OBJECTIVES = ("macro_f1", "accuracy")


def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[1] != 4:
        raise ValueError(f"probs must have shape (n, 4) [P(1), P(2), P(3), P(4)], got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probs must be finite and non-negative")
    return p


def _check_levels(levels: np.ndarray, what: str = "levels") -> np.ndarray:
    lv = np.asarray(levels)
    if lv.size and not np.all(np.isin(lv, LEVELS)):
        bad = lv[~np.isin(lv, LEVELS)].ravel()[:5]
        raise ValueError(f"{what} must be in 1..4, got e.g. {bad.tolist()}")
    return lv.astype(int)


# --------------------------------------------------------------------------------------------
# Level rules
# --------------------------------------------------------------------------------------------


def cumpt_levels(probs: np.ndarray, beta: float) -> np.ndarray:
    """CumPT: the highest level k in 4..1 with P(4) + ... + P(k) >= beta, per row.

    Conventions: sums are compared with `TOL` slack (>= beta - 1e-9), so beta = 1 gives the
    lowest level that carries mass; for beta > 0 a level whose tail sum is exactly 0 is never
    picked, so a tiny positive beta gives the highest level with non-zero mass; beta = 0 gives 4.
    Rows should sum to 1 (they are not renormalised); if no level qualifies (a row summing to
    less than beta), the level is 1.
    """
    p = _check_probs(probs)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    # tail[:, j] = P(j+1) + ... + P(4); reversed cumsum of non-negative terms is monotone.
    tail = np.cumsum(p[:, ::-1], axis=1)[:, ::-1]
    ok = tail >= beta - TOL
    if beta > 0:
        ok &= tail > 0
    # Highest qualifying level: scan columns from level 4 down, take the first True.
    from_top = ok[:, ::-1]
    levels = 4 - np.argmax(from_top, axis=1)
    return np.where(from_top.any(axis=1), levels, 1).astype(int)


def argmax_levels(probs: np.ndarray) -> np.ndarray:
    """The most probable level per row (ties go to the lower level)."""
    return (np.argmax(_check_probs(probs), axis=1) + 1).astype(int)


def expected_scores(probs: np.ndarray) -> np.ndarray:
    """s = sum_k k * P(k), in [1, 4] for rows that sum to 1."""
    return _check_probs(probs) @ np.array(LEVELS, dtype=float)


def expected_score_levels(probs: np.ndarray, cutoffs: tuple[float, float, float] = DEFAULT_CUTOFFS) -> np.ndarray:
    """Multi-threshold scheme: level 1 if s < c1, 2 if s < c2, 3 if s < c3, else 4.

    `cutoffs` must be non-decreasing (equal cut-offs leave a level empty).
    """
    c = np.asarray(cutoffs, dtype=float)
    if c.shape != (3,) or np.any(np.diff(c) < 0) or np.any(np.isnan(c)):
        raise ValueError(f"cutoffs must be three non-decreasing numbers, got {cutoffs!r}")
    s = expected_scores(probs)
    return (1 + (s[:, None] >= c[None, :]).sum(axis=1)).astype(int)


def tiers_of(levels: np.ndarray) -> np.ndarray:
    """Map levels to online tiers: 4, 3 -> "Good"; 2 -> "Mid"; 1 -> "Bad"."""
    lv = _check_levels(levels)
    lookup = np.array(["", *(TIERS[k] for k in LEVELS)], dtype=object)
    return lookup[lv].astype(str)


# --------------------------------------------------------------------------------------------
# Calibration on a labelled dev set
# --------------------------------------------------------------------------------------------


def score_levels(gold: np.ndarray, pred: np.ndarray, objective: str = "macro_f1") -> float:
    """The calibration objective: macro-F1 over all four levels (absent ones count 0) or accuracy."""
    if objective == "macro_f1":
        return float(f1_score(gold, pred, average="macro", labels=list(LEVELS), zero_division=0))
    if objective == "accuracy":
        return float(accuracy_score(gold, pred))
    raise ValueError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen beta, its dev score, and the whole curve (beta, score) sorted by beta."""

    beta: float
    score: float
    curve: list[tuple[float, float]] = field(default_factory=list)


def _dev_inputs(probs: np.ndarray, gold: np.ndarray, objective: str) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs)
    g = _check_levels(np.ravel(gold), "gold")
    if len(g) != len(p) or len(p) == 0:
        raise ValueError(f"need a non-empty dev set with one gold label per row ({len(p)} rows, {len(g)} labels)")
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {_OBJECTIVES}, got {objective!r}")
    return p, g


def default_beta_grid(probs: np.ndarray, max_extra: int = 20_000) -> np.ndarray:
    """0.02, 0.04, ..., 0.98 plus the distinct tail sums P(4), P(4)+P(3), P(4)+P(3)+P(2) of `probs`.

    Those tail sums are where CumPT's output changes, so they are the exact candidates (the full sum,
    always ~1, changes nothing). Only beyond `max_extra` of them (dev sets of many thousands) are they
    thinned to evenly spaced quantiles; then the chosen beta can move with float noise in `probs`.
    """
    p = _check_probs(probs)
    base = np.round(np.arange(1, 50) * 0.02, 10)
    tail = np.cumsum(p[:, ::-1], axis=1)[:, :3].ravel()
    extra = np.unique(tail[(tail > 0) & (tail <= 1.0)])
    if len(extra) > max_extra:
        extra = np.unique(np.quantile(extra, np.linspace(0.0, 1.0, max_extra), method="nearest"))
    return np.unique(np.concatenate([base, extra]))


def scores_for_betas(probs: np.ndarray, gold: np.ndarray, betas: np.ndarray, objective: str = "macro_f1",
                     chunk: int = 256) -> np.ndarray:
    """`score_levels(gold, cumpt_levels(probs, b), objective)` for every b in `betas`, vectorised.

    Per chunk of B betas: levels (B, N) as `cumpt_levels` computes them, confusion counts (B, 4, 4)
    by bincount, then per-level F1 = 2 tp / (2 tp + fp + fn) (0 where a level is absent from both).
    """
    tail = np.cumsum(probs[:, ::-1], axis=1)[:, ::-1]  # (N, 4): tail[:, j] = P(j+1) + ... + P(4)
    g = np.asarray(gold, dtype=int) - 1  # (N,)
    out = []
    for start in range(0, len(betas), chunk):
        b = np.asarray(betas[start:start + chunk], dtype=float)[:, None, None]  # (B, 1, 1)
        ok = (tail[None] >= b - TOL) & ((tail[None] > 0) | (b <= 0))  # (B, N, 4)
        from_top = ok[..., ::-1]
        pred = np.where(from_top.any(-1), 3 - np.argmax(from_top, -1), 0)  # (B, N) level - 1
        if objective == "accuracy":
            out.append((pred == g[None]).mean(1))
            continue
        idx = (np.arange(len(b))[:, None] * 16 + g[None] * 4 + pred).ravel()
        conf = np.bincount(idx, minlength=len(b) * 16).reshape(len(b), 4, 4)  # (B, gold, pred)
        tp = np.diagonal(conf, axis1=1, axis2=2)  # (B, 4)
        denom = conf.sum(2) + conf.sum(1)  # (B, 4): 2 tp + fp + fn
        out.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean(1))
    return np.concatenate(out) if out else np.zeros(0)


def calibrate_beta(
    probs: np.ndarray,
    gold: np.ndarray,
    objective: str = "macro_f1",
    grid: np.ndarray | list[float] | None = None,
) -> CalibrationResult:
    """Pick the CumPT beta that maximises `objective` on a labelled dev set.

    `grid` defaults to `default_beta_grid(probs)`, every beta where the levels change: an exact search.
    Ties (within 1e-12) go to the beta closest to 0.5, then to the smaller beta, so the result is
    deterministic.
    """
    p, g = _dev_inputs(probs, gold, objective)
    betas = default_beta_grid(p) if grid is None else np.unique(np.asarray(grid, dtype=float))
    if len(betas) == 0 or betas.min() < 0 or betas.max() > 1:
        raise ValueError("grid must be a non-empty set of betas in [0, 1]")
    scores = scores_for_betas(p, g, betas, objective)
    tied = np.flatnonzero(scores >= scores.max() - 1e-12)
    best = min(tied, key=lambda i: (round(abs(betas[i] - 0.5), 9), betas[i]))  # round: |0.7-.5| < |0.3-.5|
    curve = [(float(b), float(s)) for b, s in zip(betas, scores)]
    return CalibrationResult(beta=float(betas[best]), score=float(scores[best]), curve=curve)


def calibrate_cutoffs(
    probs: np.ndarray,
    gold: np.ndarray,
    objective: str = "macro_f1",
    n_quantiles: int = 33,
    max_rounds: int = 3,
) -> tuple[tuple[float, float, float], float]:
    """Tune the expected-score cut-offs (c1 <= c2 <= c3) by coordinate search on a dev set.

    Candidates are `n_quantiles` quantiles of s, the default cut-offs (1.5, 2.5, 3.5) and a value
    just above max(s) (which empties the levels above). Starting from the defaults, each round
    moves one cut-off at a time to its best candidate between its neighbours, accepting only
    strict improvements; at most `max_rounds` rounds (~3 * 36 evaluations each). The result is
    therefore never worse than the defaults on this dev set. Returns (cutoffs, score).
    """
    p, g = _dev_inputs(probs, gold, objective)
    s = expected_scores(p)
    cands = np.unique(np.concatenate([
        np.quantile(s, np.linspace(0.0, 1.0, n_quantiles)),
        DEFAULT_CUTOFFS,
        [np.nextafter(s.max(), np.inf)],
    ]))

    def evaluate(c: list[float]) -> float:
        return score_levels(g, expected_score_levels(p, tuple(c)), objective)

    cut = list(DEFAULT_CUTOFFS)
    best = evaluate(cut)
    for _ in range(max_rounds):
        improved = False
        for i in range(3):
            lo = cut[i - 1] if i > 0 else -np.inf
            hi = cut[i + 1] if i < 2 else np.inf
            for c in cands[(cands >= lo) & (cands <= hi)]:
                trial = cut.copy()
                trial[i] = float(c)
                sc = evaluate(trial)
                if sc > best + 1e-12:
                    best, cut, improved = sc, trial, True
        if not improved:
            break
    return (cut[0], cut[1], cut[2]), float(best)
