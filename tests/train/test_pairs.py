"""Tests for taosr.train.pairs: pass@k and DPO preference-pair building."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from taosr.train.pairs import PairPolicy, PairResult, Sample, build_pairs, pass_at_k, pass_at_k_curve

# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [(5, 1, 1, 0.2), (5, 1, 2, 0.4), (4, 2, 2, 1 - 1 / 6), (5, 0, 3, 0.0), (5, 5, 1, 1.0), (5, 3, 3, 1.0), (1000, 1, 1, 0.001)],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 1, 6), (5, 1, 0), (5, 6, 1), (5, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 1, 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_binomial_formula(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_curve():
    curve = pass_at_k_curve([0, 1, 5], n=5)
    assert list(curve) == [1, 2, 3, 4, 5]
    assert curve[1] == pytest.approx((0 + 0.2 + 1) / 3)
    assert curve[2] == pytest.approx((0 + 0.4 + 1) / 3)
    assert curve[5] == pytest.approx(2 / 3)
    assert all(curve[k] <= curve[k + 1] for k in range(1, 5))
    with pytest.raises(ValueError):
        pass_at_k_curve([], n=5)


# ---------------------------------------------------------------- build_pairs helpers


def mk(pid: str, idx: int, parsed: int | None, gold: int = 3) -> dict:
    return {
        "prompt_id": pid, "prompt": f"P[{pid}]", "sample_index": idx, "text": f"{pid}-{idx}",
        "parsed": parsed, "gold": gold, "correct": parsed == gold,
    }


TEACHER = {"b": "TEACHER-b"}


def teacher(pid: str) -> str | None:
    return TEACHER.get(pid)


def no_call(pid: str) -> str:
    raise AssertionError("teacher must not be called")


ZERO = {"prompts": 0, "self_correction": 0, "oracle": 0, "teacher": 0, "all_correct_skipped": 0, "no_teacher": 0}


def counts(**kw: int) -> dict[str, int]:
    return {**ZERO, **kw}


# ---------------------------------------------------------------- branches


def test_self_correction_single_pair():
    res = build_pairs([mk("a", 0, 3), mk("a", 1, 2)], no_call)
    assert isinstance(res, PairResult)
    assert res.rows == [{"prompt_id": "a", "prompt": "P[a]", "chosen": "a-0", "rejected": "a-1", "kind": "self_correction",
                         "chosen_level": 3, "rejected_level": 2}]
    assert res.counts == counts(prompts=1, self_correction=1)


def test_pairs_per_prompt_is_respected_with_distinct_combinations():
    samples = [mk("a", 0, 3), mk("a", 1, 3), mk("a", 2, 1), mk("a", 3, 2)]
    all_combos = {(c, r) for c in ("a-0", "a-1") for r in ("a-2", "a-3")}
    three = build_pairs(samples, no_call, PairPolicy(pairs_per_prompt=3))
    got = [(r["chosen"], r["rejected"]) for r in three.rows]
    assert len(got) == 3 and len(set(got)) == 3 and set(got) <= all_combos
    many = build_pairs(samples, no_call, PairPolicy(pairs_per_prompt=10))
    assert {(r["chosen"], r["rejected"]) for r in many.rows} == all_combos and len(many.rows) == 4
    assert many.counts == counts(prompts=1, self_correction=4)


def test_oracle_pair_uses_teacher_and_a_parseable_wrong_sample():
    res = build_pairs([mk("b", 0, None), mk("b", 1, 2)], teacher)
    assert res.rows == [{"prompt_id": "b", "prompt": "P[b]", "chosen": "TEACHER-b", "rejected": "b-1", "kind": "oracle",
                         "chosen_level": 3, "rejected_level": 2}]
    assert res.counts == counts(prompts=1, oracle=1)


def test_oracle_with_only_unparseable_wrong_samples():
    res = build_pairs([mk("b", 0, None)], teacher)
    assert [(r["chosen"], r["rejected"]) for r in res.rows] == [("TEACHER-b", "b-0")]


@pytest.mark.parametrize("answer", [None, "", "   "])
def test_no_teacher_response(answer):
    res = build_pairs([mk("d", 0, 1), mk("d", 1, None)], lambda pid: answer)
    assert res.rows == [] and res.counts == counts(prompts=1, no_teacher=1)


def test_oracle_disabled_never_calls_teacher():
    res = build_pairs([mk("b", 0, 1)], no_call, PairPolicy(oracle=False))
    assert res.rows == [] and res.counts == counts(prompts=1, no_teacher=1)


@pytest.mark.parametrize("chosen", ["sample", "teacher"])
def test_all_correct_gives_no_pair(chosen):
    res = build_pairs([mk("c", 0, 3), mk("c", 1, 3)], no_call, PairPolicy(chosen=chosen))
    assert res.rows == [] and res.counts == counts(prompts=1, all_correct_skipped=1)


def test_teacher_chosen_replaces_the_correct_sample():
    """chosen='teacher': a prompt with a right and a wrong sample pairs the teacher's text with the wrong one;
    a prompt without a teacher response gives no pair rather than falling back to an unchecked sample."""
    samples = [mk("a", 0, 3), mk("a", 1, 2), mk("z", 0, 3), mk("z", 1, 1)]
    res = build_pairs(samples, lambda pid: {"a": "T[a]"}.get(pid), PairPolicy(chosen="teacher"))
    assert [(r["prompt_id"], r["chosen"], r["rejected"], r["kind"]) for r in res.rows] == [("a", "T[a]", "a-1", "teacher")]
    assert res.counts == counts(prompts=2, teacher=1, no_teacher=1)


def test_mixed_prompts_exact_rows_and_counts():
    samples = [
        mk("a", 0, 3), mk("a", 1, 2),  # self-correction
        mk("b", 0, 1), mk("b", 1, None),  # oracle (teacher has b)
        mk("c", 0, 3),  # all correct
        mk("d", 0, 4),  # none correct, no teacher
    ]
    res = build_pairs(samples, teacher)
    assert [(r["prompt_id"], r["chosen"], r["rejected"], r["kind"]) for r in res.rows] == [
        ("a", "a-0", "a-1", "self_correction"),
        ("b", "TEACHER-b", "b-0", "oracle"),
    ]
    assert res.counts == counts(prompts=4, self_correction=1, oracle=1, all_correct_skipped=1, no_teacher=1)


def test_empty_input():
    assert build_pairs([], no_call).rows == [] and build_pairs([], no_call).counts == ZERO


# ---------------------------------------------------------------- rejected preference


PREF = [mk("x", 0, 3), mk("x", 1, None), mk("x", 2, None), mk("x", 3, 1)]


def test_prefer_parseable_rejected():
    for seed in range(20):
        res = build_pairs(PREF, no_call, PairPolicy(seed=seed))
        assert [r["rejected"] for r in res.rows] == ["x-3"]
    two = build_pairs(PREF, no_call, PairPolicy(pairs_per_prompt=2)).rows
    assert two[0]["rejected"] == "x-3" and two[1]["rejected"] in {"x-1", "x-2"}  # fill from unparseable


def test_without_preference_unparseable_samples_are_rejected_too():
    seen = {build_pairs(PREF, no_call, PairPolicy(seed=s, prefer_parseable_rejected=False)).rows[0]["rejected"]
            for s in range(60)}
    assert seen == {"x-1", "x-2", "x-3"}


# ---------------------------------------------------------------- determinism and inputs


BIG = [mk(p, i, v) for p in "pqrs" for i, v in enumerate([3, 3, 1, 2, None, 3, 4])]


def test_same_seed_same_pairs_and_input_order_does_not_matter():
    policy = PairPolicy(pairs_per_prompt=3, seed=7)
    first = build_pairs(BIG, no_call, policy)
    assert build_pairs(BIG, no_call, policy) == first
    rev = build_pairs(list(reversed(BIG)), no_call, policy)
    assert sorted(rev.rows, key=lambda r: r["prompt_id"]) == first.rows  # only prompt order follows the input
    assert build_pairs(BIG[:7], no_call, policy).rows == first.rows[:3]  # a prompt's choice ignores the others
    outcomes = {tuple(r["chosen"] + r["rejected"] for r in build_pairs(BIG, no_call, PairPolicy(seed=s)).rows)
                for s in range(10)}
    assert len(outcomes) > 1  # the seed matters


def test_sample_dataclass_input_equals_dict_input():
    assert build_pairs([Sample(**d) for d in BIG], no_call) == build_pairs(BIG, no_call)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="duplicate"):
        build_pairs([mk("a", 0, 3), mk("a", 0, 2)], no_call)
    with pytest.raises(ValueError, match="prompt text"):
        build_pairs([mk("a", 0, 3), {**mk("a", 1, 2), "prompt": "other"}], no_call)
    with pytest.raises(ValueError, match="missing"):
        build_pairs([{"prompt_id": "a"}], no_call)
    with pytest.raises(ValidationError):
        PairPolicy(pairs_per_prompt=0)
    with pytest.raises(ValidationError):
        PairPolicy(pair_per_prompt=2)  # typo: extra fields are forbidden


# ---------------------------------------------------------------- invariants


groups = st.lists(st.lists(st.sampled_from([None, 1, 2, 3, 4]), min_size=1, max_size=6), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(groups, st.integers(1, 5), st.booleans(), st.integers(0, 3))
def test_pair_invariants(parsed_lists, ppp, prefer, seed):
    samples = [mk(f"g{g}", i, v) for g, vs in enumerate(parsed_lists) for i, v in enumerate(vs)]
    by_text = {s["text"]: s for s in samples}
    res = build_pairs(samples, lambda pid: f"T-{pid}" if pid.endswith(("0", "2", "4")) else None,
                      PairPolicy(pairs_per_prompt=ppp, prefer_parseable_rejected=prefer, seed=seed))
    per_prompt: dict[str, list[tuple[str, str]]] = {}
    for r in res.rows:
        rej = by_text[r["rejected"]]
        assert not rej["correct"] and rej["prompt_id"] == r["prompt_id"]
        if r["kind"] == "self_correction":
            assert by_text[r["chosen"]]["correct"]
        else:
            assert r["chosen"] == f"T-{r['prompt_id']}"
        per_prompt.setdefault(r["prompt_id"], []).append((r["chosen"], r["rejected"]))
    for pairs in per_prompt.values():
        assert len(pairs) == len(set(pairs)) <= ppp
    c = res.counts
    assert c["prompts"] == len(parsed_lists)
    assert c["self_correction"] + c["oracle"] == len(res.rows)
    assert c["all_correct_skipped"] == sum(all(v == 3 for v in vs) for vs in parsed_lists)
    assert c["oracle"] + c["no_teacher"] == sum(all(v != 3 for v in vs) for vs in parsed_lists)


def test_symmetric_balance_leaves_every_level_chosen_as_often_as_rejected():
    """Label-only DPO on the natural pairs shifts the prior toward the level the model confuses least; with
    symmetric pairs each level's chosen count equals its rejected count, for every two levels."""
    from collections import Counter

    samples = []
    for i in range(30):  # gold 4 mistaken for 2: 30 prompts; gold 2 mistaken for 4: 10; gold 3 mistaken for 2: 5
        samples += [mk(f"x{i}", 0, 4, gold=4), mk(f"x{i}", 1, 2, gold=4)]
    for i in range(10):
        samples += [mk(f"y{i}", 0, 2, gold=2), mk(f"y{i}", 1, 4, gold=2)]
    for i in range(5):
        samples += [mk(f"z{i}", 0, 3, gold=3), mk(f"z{i}", 1, 2, gold=3)]
    natural = build_pairs(samples, no_call)
    assert Counter((r["chosen_level"], r["rejected_level"]) for r in natural.rows) == {(4, 2): 30, (2, 4): 10, (3, 2): 5}
    sym = build_pairs(samples, no_call, PairPolicy(label_balance="symmetric", seed=3))
    assert Counter((r["chosen_level"], r["rejected_level"]) for r in sym.rows) == {(4, 2): 10, (2, 4): 10}
    assert sym.counts["dropped_by_balance"] == 25 and sym.counts["self_correction"] == 20
    chosen = Counter(r["chosen_level"] for r in sym.rows)
    assert chosen == Counter(r["rejected_level"] for r in sym.rows)
    again = build_pairs(samples, no_call, PairPolicy(label_balance="symmetric", seed=3))
    assert again.rows == sym.rows  # deterministic
    assert {r["prompt_id"] for r in sym.rows} != {r["prompt_id"] for r in
                                                  build_pairs(samples, no_call, PairPolicy(label_balance="symmetric",
                                                                                           seed=4)).rows}
