"""The reward protocol: errors stay on their item, composition, the name registry."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from rewards import (
    FunctionReward,
    GroupReward,
    Reward,
    Sample,
    Score,
    UnknownRewardError,
    WeightedSum,
    describe_reward,
    make_reward,
    register_reward,
    reward_function,
    reward_names,
)

from conftest import run_with_plugin


def run(coro):
    return asyncio.run(coro)


class Exploding(Reward):
    name = "exploding"

    async def compute(self, sample: Sample) -> Score:
        if "boom" in sample.completion:
            raise RuntimeError("kaboom")
        return Score(value=1.0, passed=True)


def test_a_raising_reward_marks_only_that_item_and_the_batch_goes_on() -> None:
    samples = [Sample.from_completion(text) for text in ["fine", "boom", "also fine"]]
    scores = run(Exploding().score_batch(samples))
    assert [s.ok for s in scores] == [True, False, True]
    assert scores[1].error == "exploding: RuntimeError: kaboom"
    assert math.isnan(scores[1].value)  # an error is never a silent 0
    assert scores[0].value == scores[2].value == 1.0


def test_compute_returning_the_wrong_type_is_an_error_item() -> None:
    class Sloppy(Reward):
        name = "sloppy"

        async def compute(self, sample: Sample) -> Score:
            return 1.0  # type: ignore[return-value]

    score = run(Sloppy().score(Sample.from_completion("x")))
    assert score.error == "sloppy: compute() returned float, expected Score"


@pytest.mark.parametrize(
    ("result", "value", "passed"),
    [(True, 1.0, True), (False, 0.0, False), (0.25, 0.25, None), (3, 3.0, None)],
)
def test_function_reward_converts_plain_results(result: object, value: float, passed: bool | None) -> None:
    score = run(FunctionReward(lambda s: result, name="f").score(Sample.from_completion("x")))
    assert (score.value, score.passed, score.error) == (value, passed, None)


def test_function_reward_accepts_async_functions_and_rejects_nan_and_strings() -> None:
    @reward_function("length")
    async def length(sample: Sample) -> float:
        await asyncio.sleep(0)
        return float(len(sample.completion))

    assert run(length.score(Sample.from_completion("abcd"))).value == 4.0
    assert length.name == "length"
    nan = run(FunctionReward(lambda s: math.nan, name="nan").score(Sample.from_completion("x")))
    assert nan.error == "nan: ValueError: the function returned NaN"
    text = run(FunctionReward(lambda s: "1", name="text").score(Sample.from_completion("x")))
    assert text.error == "text: TypeError: expected float, bool or Score, got str"


class RankByLength(GroupReward):
    """Longest completion gets 1, shortest 0 (a stand-in for a tournament)."""

    name = "rank"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        order = sorted(range(len(samples)), key=lambda i: len(samples[i].completion))
        ranks = {index: rank for rank, index in enumerate(order)}
        return [Score(value=ranks[i] / (len(samples) - 1)) for i in range(len(samples))]


def test_group_reward_scores_all_samples_together() -> None:
    samples = [Sample.from_completion(t) for t in ["ccc", "a", "bb"]]
    assert [s.value for s in run(RankByLength().score_group(samples))] == [1.0, 0.0, 0.5]


def test_group_reward_failures_mark_every_item() -> None:
    class Broken(GroupReward):
        name = "broken"

        async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
            raise ConnectionError("judge down")

    class Short(GroupReward):
        name = "short"

        async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
            return [Score(value=1.0)]

    samples = [Sample.from_completion(t) for t in ["a", "b"]]
    assert [s.error for s in run(Broken().score_group(samples))] == [
        "broken: ConnectionError: judge down"
    ] * 2
    assert [s.error for s in run(Short().score_group(samples))] == [
        "short: returned 1 scores for 2 samples"
    ] * 2


def constant(value: float, name: str, passed: bool | None = None) -> Reward:
    return FunctionReward(lambda s: Score(value=value, passed=passed, components={"part": value}), name=name)


def test_weighted_sum_adds_weighted_values_and_reports_every_term() -> None:
    total = WeightedSum([(constant(1.0, "a", passed=True), 0.5), (constant(0.4, "b"), 2.0)])
    score = run(total.score(Sample.from_completion("x")))
    assert score.value == pytest.approx(0.5 * 1.0 + 2.0 * 0.4)
    assert score.components == {"a": 1.0, "a/part": 1.0, "b": 0.4, "b/part": 0.4}
    assert score.passed is True  # from the only term that gives a verdict


def test_weighted_sum_fails_when_a_weighted_term_fails_but_not_for_a_diagnostic() -> None:
    failing = FunctionReward(lambda s: 1 / 0, name="bad")
    weighted = run(
        WeightedSum([(constant(1.0, "a"), 1.0), (failing, 1.0)]).score(Sample.from_completion("x"))
    )
    assert math.isnan(weighted.value)
    assert weighted.error == "bad: ZeroDivisionError: division by zero"
    assert weighted.components["a"] == 1.0  # the healthy term is still reported
    diagnostic = run(
        WeightedSum([(constant(1.0, "a"), 1.0), (failing, 0.0)]).score(Sample.from_completion("x"))
    )
    assert diagnostic.value == 1.0 and diagnostic.error is None
    assert diagnostic.info["diagnostic_errors"] == ["bad: ZeroDivisionError: division by zero"]


def test_weighted_sum_rejects_duplicate_names_and_bad_weights() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        WeightedSum([(constant(1, "a"), 1.0), (constant(2, "a"), 1.0)])
    with pytest.raises(ValueError, match="must be finite"):
        WeightedSum([(constant(1, "a"), math.inf)])
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])


def test_registry_builds_rewards_by_name_with_their_parameters() -> None:
    assert {"math", "exact_match", "regex", "format", "json_schema", "soft_overlong"} <= set(reward_names())
    reward = make_reward("regex", pattern=r"\d+")
    assert run(reward.score(Sample.from_completion("abc 42"))).value == 1.0
    assert describe_reward("soft_overlong")["parameters"]["max_length"] is None  # required


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(UnknownRewardError, match=r"unknown reward 'exact_mach'\. Did you mean 'exact_match'"):
        make_reward("exact_mach")
    with pytest.raises(ValueError, match=r"reward 'regex'.*It accepts: pattern"):
        make_reward("regex", patern="x")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("regex", lambda: constant(1, "other"))


def test_reward_plugins_load_from_entry_points_and_broken_ones_only_warn(tmp_path: Path) -> None:
    """A separately installed package adds a reward by name."""
    source = """
        from rewards import FunctionReward, register_reward

        def register():
            length = lambda s: len(s.completion)
            register_reward("acme_len", lambda: FunctionReward(length, name="acme_len"))

        def broken():
            raise RuntimeError("plugin bug")
        """
    script = """
        import asyncio, warnings
        warnings.simplefilter("always")
        from rewards import make_reward, Sample
        r = make_reward("acme_len")
        print(asyncio.run(r.score(Sample.from_completion("abcde"))).value)
        """
    entries = {"acme": "acme_rewards:register", "bad": "acme_rewards:broken"}
    out = run_with_plugin(tmp_path, "acme_rewards", source, "rewardgym.rewards", entries, script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5.0"
    assert "reward plugin 'bad' (acme_rewards:broken) failed to load: plugin bug" in out.stderr
