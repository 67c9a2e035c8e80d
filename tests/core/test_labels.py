"""Property tests for the label vocabulary (`to_level`) and the one response parser (`parse_response`)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from taosr.labels import (
    _ALIASES,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    LABEL_TOKENS,
    LEVEL_NAMES,
    LEVELS,
    SPECIAL_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    format_answer,
    parse_response,
    to_level,
)

settings.register_profile("taosr", max_examples=150, deadline=None)
settings.load_profile("taosr")

OPENSEARCH = {100: 4, 10: 3, 0: 1}  # OpenSearch ESCI ratings that to_level also accepts


def _is_label(s: str) -> bool:
    """Independent oracle: is `s` a spelling to_level should accept?"""
    key = s.strip().lower()
    if key in _ALIASES:
        return True
    try:
        f = float(key)
    except ValueError:
        return False
    return f.is_integer() and int(f) in (*LEVELS, *OPENSEARCH)


# ---------------------------------------------------------------- to_level


def test_known_spellings():
    assert [to_level(x) for x in ("E", "S", "C", "I")] == [4, 3, 2, 1]
    assert [to_level(x) for x in ("Exact", "Substitute", "Complement", "Irrelevant")] == [4, 3, 2, 1]
    assert [to_level(x) for x in ("Excellent", "Related", "Mismatch", "irrelevant")] == [4, 3, 2, 1]
    assert to_level("Partial") == 3 and to_level("4.0") == 4 and to_level(" 2 ") == 2
    assert [to_level(x) for x in ("100.000", "10.000", "0.000")] == [4, 3, 1]


@given(st.sampled_from(sorted(_ALIASES)), st.sampled_from(["lower", "upper", "title"]),
       st.text(" \t\n", max_size=3), st.text(" \t\n", max_size=3))
def test_every_alias_round_trips(alias, case, left, right):
    level = to_level(left + getattr(alias, case)() + right)
    assert level == _ALIASES[alias] and level in LEVELS


@given(st.sampled_from(LEVELS))
def test_level_names_tokens_and_ints_round_trip(level):
    assert to_level(level) == level
    assert to_level(float(level)) == level
    assert to_level(str(level)) == level
    assert to_level(LEVEL_NAMES[level]) == level
    assert to_level(LABEL_TOKENS[level]) == level
    assert parse_response(format_answer(level)).level == level


@given(st.text(max_size=30))
def test_junk_strings_raise_value_error(s):
    assume(not _is_label(s))
    with pytest.raises(ValueError, match="not a relevance label"):
        to_level(s)


@given(st.integers())
def test_ints_outside_1_4_raise(n):
    assume(n not in LEVELS and n not in OPENSEARCH)  # 0/10/100 are OpenSearch ratings, accepted on purpose
    with pytest.raises(ValueError):
        to_level(n)
    with pytest.raises(ValueError):
        to_level(str(n))


@pytest.mark.parametrize("bad", [True, False, None, 2.5, float("nan"), float("inf"), [4], {"label": 4}, b"4"])
def test_non_labels_raise_value_error(bad):
    with pytest.raises(ValueError):
        to_level(bad)


# ---------------------------------------------------------------- parse_response

# Free text that cannot open/close a think or answer block (so it cannot change the structure).
free_text = st.text(st.characters(codec="utf-8"), max_size=60).filter(
    lambda s: not any(t in s for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)))
answer_content = st.sampled_from(LEVELS).flatmap(
    lambda lvl: st.tuples(st.just(lvl), st.sampled_from([LABEL_TOKENS[lvl], LEVEL_NAMES[lvl], str(lvl)])))


@given(st.sampled_from(LEVELS))
def test_well_formed_answer_parses(level):
    parsed = parse_response(f"{ANSWER_OPEN}{LABEL_TOKENS[level]}{ANSWER_CLOSE}")
    assert parsed.ok and parsed.level == level and parsed.error is None


@given(answer_content, free_text, free_text, free_text, st.booleans())
def test_answer_inside_reasoning_text_parses(lvl_content, reasoning, before, after, with_think):
    level, content = lvl_content
    think = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}" if with_think else reasoning
    parsed = parse_response(f"{before}{think}{before}{ANSWER_OPEN} {content} {ANSWER_CLOSE}{after}")
    assert parsed.ok and parsed.level == level


@given(st.sampled_from(LEVELS), st.sampled_from(LEVELS), free_text)
def test_two_answer_blocks_are_not_ok(a, b, between):
    parsed = parse_response(format_answer(a) + between + format_answer(b))
    assert not parsed.ok and parsed.level is None and "2 answer blocks" in parsed.error


@given(st.sampled_from(LEVELS), free_text)
def test_missing_tags_are_not_ok(level, text):
    for response in (f"{text}{LABEL_TOKENS[level]}", f"{ANSWER_OPEN}{LABEL_TOKENS[level]}{text}",
                     f"{text}{LABEL_TOKENS[level]}{ANSWER_CLOSE}", f"{text}{LEVEL_NAMES[level]}"):
        parsed = parse_response(response)
        assert not parsed.ok and parsed.error


@given(st.sampled_from(LEVELS), free_text, free_text)
def test_label_only_inside_think_is_not_ok(level, r1, r2):
    for inner in (LABEL_TOKENS[level], format_answer(level)):
        parsed = parse_response(f"{THINK_OPEN}{r1}{inner}{r2}{THINK_CLOSE}{r2}")
        assert not parsed.ok and parsed.level is None
    assert not parse_response(f"{THINK_OPEN}{r1}{format_answer(level)}").ok  # unterminated reasoning


@given(st.sampled_from(LEVELS), st.sampled_from(LEVELS), free_text)
def test_answer_outside_think_wins_over_label_inside(inside, outside, reasoning):
    response = f"{THINK_OPEN}{reasoning}{format_answer(inside)}{LABEL_TOKENS[inside]}{THINK_CLOSE}" + format_answer(outside)
    assert parse_response(response).level == outside


@given(free_text)
def test_answer_with_junk_content_is_not_ok(junk):
    assume(not _is_label(junk))
    parsed = parse_response(f"{ANSWER_OPEN}{junk}{ANSWER_CLOSE}")
    assert not parsed.ok and "not a label" in parsed.error


@given(st.lists(st.one_of(st.sampled_from(SPECIAL_TOKENS), st.text(max_size=20)), max_size=12).map("".join))
def test_random_text_never_raises(text):
    parsed = parse_response(text)
    assert parsed.ok == (parsed.level in LEVELS) and (parsed.ok or parsed.error)
