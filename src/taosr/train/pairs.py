"""Stage 2 of TaoSR1: pass@k of the SFT model's samples, and DPO preference pairs built from them.

The SFT model is sampled N times per training prompt. Per prompt:

* some samples correct, some wrong -> **self-correction** pairs: chosen = a correct sample,
  rejected = a wrong one (up to `pairs_per_prompt` distinct combinations);
* no sample correct -> one **oracle** pair: chosen = a teacher-written correct response,
  rejected = a wrong sample (when the policy allows it and the teacher has a response);
* all samples correct -> no pair: there is nothing to reject.

Everything here is pure and deterministic: the same samples, teacher and policy (seed included)
give the same pairs, in the same order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..settings import Seed, StrictConfig

# --------------------------------------------------------------------------------------------
# pass@k
# --------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code".) Computed in the
    stable product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms huge binomials.
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError("n, c and k must be integers")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_curve(correct_counts: Iterable[int], n: int) -> dict[int, float]:
    """Mean pass@k over prompts for k = 1..n; `correct_counts[i]` = #correct of prompt i's n samples."""
    counts = list(correct_counts)
    if not counts:
        raise ValueError("correct_counts is empty")
    return {k: sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in range(1, n + 1)}


# --------------------------------------------------------------------------------------------
# Samples, policy, result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One sampled response of the SFT model to one training prompt."""

    prompt_id: str  # groups the N samples of one prompt
    prompt: str  # the model input (identical across the prompt's samples)
    sample_index: int  # 0..N-1, unique within the prompt
    text: str  # the generated response
    parsed: int | None  # the level parsed from `text`; None = unparseable
    gold: int  # the gold level
    correct: bool  # whether the sample counts as correct (normally parsed == gold)


_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))


def _as_sample(x: Sample | Mapping[str, Any]) -> Sample:
    if isinstance(x, Sample):
        return x
    missing = [f for f in _SAMPLE_FIELDS if f not in x]
    if missing:
        raise ValueError(f"sample is missing {missing}: {dict(x)!r:.200}")
    return Sample(**{f: x[f] for f in _SAMPLE_FIELDS})


class PairPolicy(StrictConfig):
    """How preference pairs are built from a prompt's samples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs_per_prompt: int = Field(
        1, ge=1, description="Most self-correction pairs per prompt (distinct (chosen, rejected) combinations)."
    )
    oracle: bool = Field(
        True, description="When no sample is correct, pair a teacher-written response (chosen) with a wrong sample."
    )
    chosen: Literal["sample", "teacher"] = Field(
        "sample",
        description=(
            "Where the chosen response comes from when some sample is correct: 'sample' = the model's own "
            "correct sample (the paper's self-correction pair; its label is checked, its reasoning is not), "
            "'teacher' = the teacher's verified response for every prompt with a wrong sample."
        ),
    )
    prefer_parseable_rejected: bool = Field(
        True,
        description=(
            "Reject samples that parse to a wrong level before unparseable ones. A well-formed wrong "
            "answer is the judgement error DPO should fix; an unparseable one mostly differs in format "
            "(already taught by SFT, and checked by the strict parser), so it is an easy, "
            "low-information pair whose large likelihood gap can dominate the DPO loss."
        ),
    )
    label_balance: Literal["natural", "symmetric"] = Field(
        "natural",
        description=(
            "'natural' keeps every pair. 'symmetric' keeps, for every two levels a and b, as many 'a over b' "
            "pairs as 'b over a' (the surplus dropped at random), so every level is chosen as often as it is "
            "rejected: what is left is the input-dependent preference, not a shift of the label prior toward "
            "the levels the model confuses least (see docs/results.md, post-CoT DPO)."
        ),
    )
    seed: Seed = Field(0, description="Seed of the deterministic choice of samples (per prompt).")


@dataclass
class PairResult:
    """`rows`: dicts with prompt_id, prompt, chosen, rejected, kind ("self_correction" | "oracle" | "teacher").

    `counts`: prompts (distinct prompt ids), self_correction, oracle and teacher (pairs kept),
    all_correct_skipped and no_teacher (prompts that gave no pair for that reason), and with
    `label_balance="symmetric"` dropped_by_balance.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


Kind = Literal["self_correction", "oracle", "teacher"]


# --------------------------------------------------------------------------------------------
# Pair building
# --------------------------------------------------------------------------------------------


def _rng(seed: int, prompt_id: str) -> random.Random:
    """A generator per (seed, prompt): one prompt's choice does not depend on the other prompts."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _group(samples: Iterable[Sample | Mapping[str, Any]]) -> dict[str, list[Sample]]:
    """Samples by prompt id (first-appearance order), each group sorted by sample_index."""
    groups: dict[str, list[Sample]] = {}
    for s in map(_as_sample, samples):
        groups.setdefault(s.prompt_id, []).append(s)
    for pid, group in groups.items():
        group.sort(key=lambda s: s.sample_index)
        idx = [s.sample_index for s in group]
        if len(set(idx)) != len(idx):
            raise ValueError(f"prompt {pid!r}: duplicate sample_index in {idx}")
        if len({s.prompt for s in group}) != 1:
            raise ValueError(f"prompt {pid!r}: samples disagree on the prompt text")
    return groups


def _rejected_tiers(wrong: list[Sample], policy: PairPolicy) -> list[list[Sample]]:
    """Wrong samples in preference order: parseable-wrong first, then unparseable (if preferred)."""
    if not policy.prefer_parseable_rejected:
        return [wrong]
    parseable = [s for s in wrong if s.parsed is not None]
    unparseable = [s for s in wrong if s.parsed is None]
    return [t for t in (parseable, unparseable) if t]


def _row(s: Sample, chosen: str, rejected: Sample, kind: Kind) -> dict[str, Any]:
    """One pair; the chosen response always carries the gold level, the rejected one its parsed level (None =
    unparseable)."""
    return {"prompt_id": s.prompt_id, "prompt": s.prompt, "chosen": chosen, "rejected": rejected.text, "kind": kind,
            "chosen_level": s.gold, "rejected_level": rejected.parsed}


def symmetric(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The rows with as many (a over b) as (b over a) pairs for every two levels; order kept, surplus dropped at
    random (deterministic for `seed`). Pairs against an unparseable response have no mirror and are dropped."""
    by_levels: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        by_levels.setdefault((r["chosen_level"], r["rejected_level"]), []).append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for (a, b), idx in by_levels.items():
        n = min(len(idx), len(by_levels.get((b, a), [])))
        keep.update(rng.sample(idx, n))
    return [r for i, r in enumerate(rows) if i in keep]


def build_pairs(
    samples: Iterable[Sample | Mapping[str, Any]],
    teacher_response: Callable[[str], str | None],
    policy: PairPolicy | None = None,
) -> PairResult:
    """Build DPO preference pairs from sampled responses (see the module docstring for the rules).

    `samples`: `Sample`s or dicts with the same fields. `teacher_response(prompt_id)` returns a
    correct teacher-written response, or None (or blank) when there is none; it is called for
    prompts with no correct sample when `policy.oracle`, and for every prompt with a wrong sample
    when `policy.chosen == "teacher"`. The caller vouches that
    the teacher's text is correct. Prompts come out in first-appearance order.
    """
    policy = policy or PairPolicy()
    counts = {"prompts": 0, "self_correction": 0, "oracle": 0, "teacher": 0, "all_correct_skipped": 0, "no_teacher": 0}
    rows: list[dict[str, Any]] = []
    for pid, group in _group(samples).items():
        counts["prompts"] += 1
        rng = _rng(policy.seed, pid)
        right = [s for s in group if s.correct]
        wrong = [s for s in group if not s.correct]
        tiers = _rejected_tiers(wrong, policy)

        if not wrong:  # all correct: nothing to reject
            counts["all_correct_skipped"] += 1
        elif right and policy.chosen == "teacher":  # teacher-verified chosen vs a (preferred) wrong sample
            teacher = teacher_response(pid)
            if teacher is None or not teacher.strip():
                counts["no_teacher"] += 1
            else:
                w = rng.choice(tiers[0])
                rows.append(_row(w, teacher, w, "teacher"))
        elif right:  # self-correction: distinct (correct, wrong) combos, preferred rejects first
            budget = policy.pairs_per_prompt
            for tier in tiers:
                combos = [(c, w) for c in right for w in tier]
                for c, w in rng.sample(combos, min(budget, len(combos))):
                    rows.append(_row(c, c.text, w, "self_correction"))
                    budget -= 1
                if budget == 0:
                    break
        else:  # none correct: one oracle pair against a (preferred) wrong sample
            teacher = teacher_response(pid) if policy.oracle else None
            if teacher is None or not teacher.strip():
                counts["no_teacher"] += 1
            else:
                w = rng.choice(tiers[0])
                rows.append(_row(w, teacher, w, "oracle"))
    if policy.label_balance == "symmetric":
        kept = symmetric(rows, policy.seed)
        counts["dropped_by_balance"] = len(rows) - len(kept)
        rows = kept
    for r in rows:
        counts[r["kind"]] += 1
    return PairResult(rows=rows, counts=counts)
