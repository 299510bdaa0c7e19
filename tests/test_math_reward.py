"""Math equivalence through the real math-verify worker pool, including answers that hang SymPy."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from rewards import MathEquivalence, MathVerifier, Sample, Score


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(num_workers=2, timeout_s=3.0)
    yield v
    v.close()


def score(reward: MathEquivalence, completion: str, gold: object) -> Score:
    return asyncio.run(reward.score(Sample.from_completion(completion, gold)))


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"so the answer is \boxed{42}", "42"),
        (r"\boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{\frac{2}{4}}", "0.5"),
        (r"\boxed{(x+1)^2}", "x^2+2x+1"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}"),
        ("Answer: 1,000", "1000"),
        (r"\boxed{-61}", -61),  # a non-string gold answer
        (r"\boxed{x = 5}", "5"),
    ],
)
def test_equivalent_answers_pass(verifier: MathVerifier, completion: str, gold: object) -> None:
    result = score(MathEquivalence(verifier=verifier), completion, gold)
    assert (result.value, result.passed, result.error) == (1.0, True, None)


@pytest.mark.parametrize(
    ("completion", "gold"), [(r"\boxed{71}", "72"), ("Answer: 2/3", "0.66"), (r"\boxed{x+1}", "x-1")]
)
def test_wrong_answers_fail(verifier: MathVerifier, completion: str, gold: str) -> None:
    result = score(MathEquivalence(verifier=verifier), completion, gold)
    assert (result.value, result.passed, result.error) == (0.0, False, None)


def test_missing_empty_and_huge_answers_score_zero_with_a_reason(verifier: MathVerifier) -> None:
    reward = MathEquivalence(verifier=verifier)
    for completion in ["", "I do not know", r"\boxed{}"]:
        result = score(reward, completion, "3")
        assert (result.value, result.error, result.info["reason"]) == (0.0, None, "no answer found")
    huge = score(reward, r"\boxed{" + "9" * 5000 + "}", "3")
    assert huge.value == 0.0 and huge.info["reason"] == "answer is 5000 characters, over the 1000 limit"


def test_an_answer_that_hangs_sympy_is_an_error_item_within_the_deadline(verifier: MathVerifier) -> None:
    """`9^{9^{9^{9^{9}}}}` makes math_verify.verify run forever; the worker is killed at 3 s."""
    reward = MathEquivalence(verifier=verifier)
    start = time.monotonic()
    result = score(reward, r"\boxed{9^{9^{9^{9^{9}}}}}", "1")
    assert time.monotonic() - start < 10
    assert math.isnan(result.value)
    assert result.error == "math: WorkerTimeout: no answer within 3 s; the worker was killed"
    assert score(reward, r"\boxed{4}", "4").passed is True  # the verifier carries on


def test_a_batch_with_adversarial_items_scores_every_other_item(verifier: MathVerifier) -> None:
    reward = MathEquivalence(verifier=verifier)
    nested = "(" * 3000 + "1" + ")" * 3000  # 15 s of parsing without a deadline
    completions = [
        r"\boxed{2}",
        r"\boxed{9^{9^{9^{9^{9}}}}}",
        r"\boxed{3}",
        r"\boxed{" + nested[:999] + "}",
        r"\boxed{5}",
    ]
    samples = [
        Sample.from_completion(c, gold)
        for c, gold in zip(completions, ["2", "1", "3", "1", "6"], strict=True)
    ]
    scores = asyncio.run(reward.score_batch(samples))
    assert [s.value for s in (scores[0], scores[2], scores[4])] == [1.0, 1.0, 0.0]
    assert scores[1].error is not None and "WorkerTimeout" in scores[1].error
    assert scores[3].error is None or "Worker" in scores[3].error  # a verdict or a clean kill, never a hang


def test_an_unparseable_gold_answer_is_the_tasks_fault_and_an_error(verifier: MathVerifier) -> None:
    result = score(MathEquivalence(verifier=verifier), r"\boxed{1}", "}{")
    assert result.error == "math: WorkerError: ValueError: math-verify could not parse the gold answer '}{'"
    missing = score(MathEquivalence(verifier=verifier), r"\boxed{1}", None)
    assert missing.error == "math: ValueError: this sample has no reference answer"


def test_megabyte_replies_are_scored_at_once(verifier: MathVerifier) -> None:
    """Extraction runs in the caller's process, outside the worker deadline: it must be linear
    (a reply of 56 KB of `\\boxed{` used to take 15 s)."""
    reward = MathEquivalence(verifier=verifier)
    start = time.monotonic()
    unclosed = score(reward, "\\boxed{" * 150_000, "3")
    nested = score(reward, "\\boxed{" * 75_000 + "7" + "}" * 75_000, "7")
    huge = score(reward, "\\boxed{" + "9" * 1_000_000 + "}", "3")
    assert time.monotonic() - start < 5.0  # one real verifier call included
    assert (unclosed.value, unclosed.info["reason"]) == (0.0, "no answer found")
    assert (nested.value, nested.info["answer"]) == (1.0, "7")  # the innermost box, opened last
    assert huge.value == 0.0 and huge.info["reason"] == "answer is 1000000 characters, over the 1000 limit"


def test_unknown_or_missing_answer_formats_fail_at_construction(verifier: MathVerifier) -> None:
    with pytest.raises(ValueError, match="unknown answer format 'xml'; use one of boxed, answer_line"):
        MathEquivalence(formats=("xml",), verifier=verifier)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs at least one answer format"):
        MathEquivalence(formats=(), verifier=verifier)


def test_the_shared_verifier_is_one_pool_per_process() -> None:
    assert MathVerifier.shared() is MathVerifier.shared()
    assert MathEquivalence().verifier is MathEquivalence().verifier
    with pytest.raises(ValueError, match="not both"):
        MathEquivalence(timeout_s=1.0, verifier=MathVerifier.shared())
