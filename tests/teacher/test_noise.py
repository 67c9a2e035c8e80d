"""The noisy rule teacher: errs at the configured rate on the affected query types, never touches gold."""

from collections import Counter

import pytest

from taosr.data.synth import SynthConfig, generate
from taosr.labels import conclusion_of
from taosr.teacher.noise import HARD_QUERY_TYPES, NoisyRuleTeacher, TeacherNoiseConfig, make_teacher
from taosr.teacher.reasoning import RuleTeacher


@pytest.fixture(scope="module")
def pairs():
    return generate(SynthConfig(n_queries=900, seed=11))["train"]


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_label_differs_from_gold_on_about_rate_of_affected_pairs(pairs, rate):
    teacher = NoisyRuleTeacher(TeacherNoiseConfig(error_rate=rate))
    gold_before = [r.label for r in pairs]
    affected = [r for r in pairs if r.query_type in HARD_QUERY_TYPES]
    wrong = sum(teacher.reason(r).level != r.label for r in affected)
    assert abs(wrong / len(affected) - rate) < 0.05
    others = [r for r in pairs if r.query_type not in HARD_QUERY_TYPES]
    assert all(teacher.reason(r) == RuleTeacher().reason(r) for r in others)  # unaffected types stay exact
    assert [r.label for r in pairs] == gold_before  # gold is never touched


def test_error_kinds_look_like_llm_errors(pairs):
    teacher = NoisyRuleTeacher(TeacherNoiseConfig(error_rate=1.0))
    exact = RuleTeacher()
    kinds = Counter()
    for r in pairs:
        if r.query_type not in HARD_QUERY_TYPES:
            continue
        out, right = teacher.reason(r), exact.reason(r)
        kinds[out.error] += 1
        assert out.level != r.label
        if out.error == "contradiction":  # sound reasoning (it concludes gold), another label
            assert out.text == right.text and conclusion_of(out.text) == r.label
        else:  # the reasoning follows the error to the wrong label
            assert conclusion_of(out.text) == out.level and out.text != right.text
        if out.error == "hallucinated":  # the item step states an attribute the item does not have
            item_step = lambda t: t.split(". ")[1]
            assert item_step(out.text) != item_step(right.text)
    assert set(kinds) == {"misapplied", "hallucinated", "contradiction"}


def test_seeded_per_pair_and_per_type_rates(pairs):
    cfg = TeacherNoiseConfig(error_rate=0.0, rates={"negation": 1.0})
    a, b = NoisyRuleTeacher(cfg), NoisyRuleTeacher(cfg)
    for r in pairs[:200]:
        assert a.reason(r) == b.reason(r)
        assert (a.reason(r).level != r.label) == (r.query_type == "negation")
    assert isinstance(make_teacher(TeacherNoiseConfig()), RuleTeacher)


def test_sft_disagreement_policy(pairs, tiny_tokenizer):
    from taosr.prompts import PromptConfig
    from taosr.train.sft import build_dataset

    teacher = NoisyRuleTeacher(TeacherNoiseConfig(error_rate=0.3))
    recs = [r for r in pairs if r.query_type in HARD_QUERY_TYPES][:200]
    wrong = sum(teacher.reason(r).level != r.label for r in recs)
    assert wrong > 20
    ds, rej, counts = build_dataset(recs, tiny_tokenizer, teacher, "think_first", PromptConfig(), "drop")
    assert len(rej) == wrong and len(ds) == len(recs) - wrong and counts["teacher_disagrees"] == wrong
    keep, rej, counts = build_dataset(recs, tiny_tokenizer, teacher, "answer_first", PromptConfig(), "keep")
    gold, rej2, counts2 = build_dataset(recs, tiny_tokenizer, teacher, "answer_first", PromptConfig(), "gold")
    assert not rej and not rej2 and counts["kept_teacher_label"] == wrong and counts2["gold_label_put"] == wrong
    differ = sum(a != b for a, b in zip(keep["input_ids"], gold["input_ids"]))
    assert differ == wrong  # exactly the disagreeing pairs carry the teacher's label under "keep"
