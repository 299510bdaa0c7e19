"""Rule verifiers and answer extraction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from rewards import (
    ExactMatch,
    FormatReward,
    JsonSchemaReward,
    RegexMatch,
    Sample,
    Score,
    SoftOverlongPenalty,
    extract_answer,
    extract_answer_line,
    extract_boxed,
    extract_code,
    extract_tag,
    normalize_text,
)


def score(reward, completion: str, reference=None, **fields) -> Score:
    return asyncio.run(reward.score(Sample.from_completion(completion, reference, **fields)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}} and later \boxed{\frac{3}{4}}", r"\frac{3}{4}"),  # the last one
        (r"\boxed{ {a}_{b} }", "{a}_{b}"),  # nested braces, trimmed
        (r"\fbox{7}", "7"),
        (r"\boxed{unclosed", None),
        (r"\boxed{a} then \boxed{unclosed", "a"),  # the last box that closes
        (r"\boxed{\boxed{1}}", "1"),  # the box opened last
        (r"} { \boxed {x}", "x"),  # stray braces outside do not count
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 42", "42"),
        ("working...\nFinal answer: $x = 3$.\n", "x = 3"),
        ("**Answer:** 12 apples", "12 apples"),
        ("answer: 1\nmore\nANSWER: 2", "2"),
        ("The answer is: 17.", "17"),
        ("Answer:   \n", None),
        ("nothing", None),
    ],
)
def test_extract_answer_line(text: str, expected: str | None) -> None:
    assert extract_answer_line(text) == expected


def test_extract_tag_and_format_preference() -> None:
    text = r"<answer> 5 </answer> then <answer>6</answer> and \boxed{7}"
    assert extract_tag(text) == "6"
    assert extract_tag("<answer>1<answer>2</answer> <answer>3") == "1<answer>2"  # first closing tag ends it
    assert extract_answer(text, ("answer_tag", "boxed")) == "6"
    assert extract_answer(text, ("boxed", "answer_tag")) == "7"
    with pytest.raises(ValueError, match="unknown answer format"):
        extract_answer(text, ("latex",))  # type: ignore[arg-type]


def test_unknown_answer_formats_fail_at_construction() -> None:
    with pytest.raises(
        ValueError, match="unknown answer format 'xml'; use one of boxed, answer_line, answer_tag"
    ):
        ExactMatch(formats=("boxed", "xml"))  # type: ignore[arg-type]
    assert ExactMatch(formats="answer_tag").formats == ("answer_tag",)  # type: ignore[arg-type]


MB = 1_000_000
PATHOLOGICAL: list[tuple[str, Callable[[str], object], str]] = [
    ("unclosed boxes", extract_boxed, "\\boxed{" * (MB // 7)),
    ("nested boxes", extract_boxed, "\\boxed{" * (MB // 14) + "}" * (MB // 14)),
    ("spaces after 'answer'", extract_answer_line, "answer" + " " * MB),
    ("spaces after 'final'", extract_answer_line, "Final" + " " * MB + "answer"),
    ("unclosed answer tags", extract_tag, "<answer>" * (MB // 8)),
    ("unclosed fences", extract_code, "```" * (MB // 3)),
    (
        "think then many answers",
        lambda t: score(FormatReward("think_answer"), t),
        "<think>" + "</think><answer>" * (MB // 16),
    ),
    ("fence then newlines", lambda t: score(JsonSchemaReward(SCHEMA), t), "```json" + "\n" * MB),
]


@pytest.mark.parametrize(("shape", "extract", "text"), PATHOLOGICAL, ids=[p[0] for p in PATHOLOGICAL])
def test_pathological_replies_of_a_megabyte_are_scanned_in_linear_time(
    shape: str, extract: Callable[[str], object], text: str
) -> None:
    """Extraction runs in the caller's process, outside any worker deadline: each of these took
    seconds at 20 KB and minutes at 200 KB with the old backtracking or rescanning code."""
    start = time.perf_counter()
    extract(text)
    assert time.perf_counter() - start < 2.0, shape


def test_think_answer_format_edge_cases() -> None:
    check = FormatReward("think_answer")
    assert score(check, "  <think>a</think>  \n <answer>b</answer>\n").passed is True
    assert score(check, "<think></think><answer></answer>").passed is True
    assert score(check, "<think>a</think> x <answer>b</answer>").passed is False  # text between
    assert score(check, "<think>a</think><answer>b</answer> trailing").passed is False


def test_exact_match_normalises_and_accepts_several_references() -> None:
    assert normalize_text("  The Eiffel-Tower!! ") == "eiffeltower"
    assert score(ExactMatch(), "the Eiffel Tower.", "Eiffel Tower").passed is True
    assert score(ExactMatch(normalize=False), "the Eiffel Tower.", "Eiffel Tower").passed is False
    assert score(ExactMatch(), "Paris", ["Lyon", "paris"]).value == 1.0
    extracted = score(ExactMatch(formats=("answer_tag",)), "I think <answer>Paris</answer>", "paris")
    assert extracted.passed is True and extracted.info["answer"] == "Paris"
    assert score(ExactMatch(formats=("answer_tag",)), "Paris", "paris").value == 0.0  # no tag, no answer


def test_exact_match_without_reference_is_an_error_item() -> None:
    assert (
        score(ExactMatch(), "Paris").error
        == "exact_match: ValueError: this sample has no reference answer to compare with"
    )


def test_regex_match_search_fullmatch_and_bad_pattern() -> None:
    assert score(RegexMatch(r"\d{3}"), "code 123 ok").value == 1.0
    assert score(RegexMatch(r"\d{3}", fullmatch=True), "code 123 ok").value == 0.0
    assert score(RegexMatch(r"hello", ignore_case=True), "HELLO").passed is True
    with pytest.raises(ValueError, match="invalid regex"):
        RegexMatch("(unclosed")


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("boxed", r"so \boxed{3}", r"so \boxed{}"),
        ("answer_tag", "<answer>3</answer>", "<answer>3"),
        ("think_answer", "<think>hm</think>\n<answer>3</answer>", "<answer>3</answer><think>hm</think>"),
    ],
)
def test_format_reward(fmt: str, good: str, bad: str) -> None:
    assert score(FormatReward(fmt), good).value == 1.0
    assert score(FormatReward(fmt), bad).value == 0.0


def test_format_reward_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        FormatReward("xml")


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_json_schema_reward() -> None:
    reward = JsonSchemaReward(SCHEMA)
    valid = score(reward, '{"name": "Ada", "age": 36}')
    assert (valid.value, valid.components) == (1.0, {"valid_json": 1.0, "valid_schema": 1.0})
    fenced = score(reward, 'Here:\n```json\n{"name": "Ada", "age": 36}\n```\n')
    assert fenced.passed is True
    wrong = score(reward, '{"name": "Ada", "age": -1}')
    assert wrong.components == {"valid_json": 1.0, "valid_schema": 0.0}
    assert "-1 is less than the minimum of 0" in wrong.info["reason"]
    broken = score(reward, '{"name": "Ada",')
    assert broken.components["valid_json"] == 0.0 and broken.info["reason"].startswith("not JSON")


def test_json_schema_reward_rejects_an_invalid_schema() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchemaReward({"type": "no-such-type"})


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [(0, 0.0), (80, 0.0), (90, -0.5), (100, -1.0), (150, -1.0), (85, -0.25)],
)
def test_soft_overlong_penalty_hand_computed(tokens: int, expected: float) -> None:
    """L=100, C=20: zero up to 80 tokens, then linear to -1 at 100."""
    assert score(
        SoftOverlongPenalty(max_length=100, cache_length=20), "x", num_tokens=tokens
    ).value == pytest.approx(expected)


def test_soft_overlong_penalty_needs_a_token_count_and_valid_lengths() -> None:
    missing = score(SoftOverlongPenalty(100, 20), "x")
    assert (
        missing.error
        == "overlong: ValueError: needs the completion's token count (Sample.num_tokens is None)"
    )
    with pytest.raises(ValueError, match="cache_length"):
        SoftOverlongPenalty(max_length=10, cache_length=20)
