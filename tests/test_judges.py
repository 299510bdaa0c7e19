"""Judges without a model: verdict parsing, Bradley–Terry, schedules, and faults of a judge
endpoint played by a scripted HTTP server (it says so: `scripted` in conftest.py) for
answers a real model server cannot be made to give on cue (500s, garbage, silence)."""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from envs.groups import EnvGroup
from envs.preference_env import PreferenceEnv
from rewards import Sample, make_reward
from rewards.judges import (
    JudgeCache,
    JudgeClient,
    JudgeConfig,
    JudgeExample,
    JudgeSampling,
    JudgeUnavailable,
    PairwiseJudge,
    PointwiseJudge,
    ReferenceJudge,
    SharedJudges,
    Tournament,
    UnparseableVerdict,
    bradley_terry,
    pairwise_prompt,
    pointwise_prompt,
    reference_prompt,
    schedule_matchups,
    with_examples,
)
from rewards.judges.verdicts import (
    expected_score,
    label_distribution,
    label_in_text,
    read_choice,
    score_in_text,
)
from rewards.preference_data import OrderRecord, PreferenceRecord
from trainer.rlaif import judge_agreement, judge_pairs

from conftest import AnsweringHTTPServer

# -- verdict parsing ---------------------------------------------------------------------


def test_label_distribution_sums_equivalent_tokens_and_renormalises() -> None:
    top = [{" The": -0.1}, {" A": math.log(0.3), "A": math.log(0.1), " B": math.log(0.2), "x": -1.0}]
    probabilities = label_distribution(top, ("A", "B"))
    assert probabilities is not None  # the first position has no label; the second has
    assert probabilities["A"] == pytest.approx(0.4 / 0.6)
    assert probabilities["B"] == pytest.approx(0.2 / 0.6)
    assert label_distribution([{" The": -0.1}], ("A", "B")) is None
    # " A" split into " " and "A": the blank first position is skipped, though it lists both letters.
    split = [{" ": -0.015, "A": -6.3, "B": -6.3}, {"A": -0.1, "B": -3.4}]
    assert label_distribution(split, ("A", "B"))["A"] > 0.95  # type: ignore[index]
    # A word first ("Response A"): the letters in its tail are noise, the next position decides.
    worded = [{"Response": -0.01, "B": -6.0, "A": -6.5}, {" A": -0.1, " B": -2.5}]
    assert label_distribution(worded, ("A", "B"))["A"] > 0.9  # type: ignore[index]


def test_label_in_text_needs_a_whole_word() -> None:
    assert label_in_text("Answer: a", ("A", "B")) is None
    assert label_in_text("Response B is better", ("A", "B", "tie")) == "B"
    assert label_in_text("**tie**", ("A", "B", "tie")) == "tie"
    assert label_in_text("Both are good", ("A", "B")) is None  # no standalone A or B
    assert label_in_text("", ("A", "B")) is None


def test_read_choice_prefers_logprobs_and_falls_back_to_text() -> None:
    soft = read_choice("B", [{" A": math.log(0.7), " B": math.log(0.3)}], ("A", "B"))
    assert soft is not None and soft.label == "A" and soft.source == "logprobs"
    hard = read_choice(" B.", [], ("A", "B"))
    assert hard is not None and hard.label == "B" and hard.probabilities is None
    assert read_choice("I cannot decide", [], ("A", "B")) is None


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("It's a tie", "tie"),
        ("Neither, it is a tie.", "tie"),
        ("Both are a bit weak; B", "B"),
        ("a", None),  # the article is not a verdict
        ("TIE", "tie"),  # words match in any case
        ("**A**", "A"),
    ],
)
def test_the_word_a_is_not_a_vote_for_a(reply: str, label: str | None) -> None:
    assert label_in_text(reply, ("A", "B", "tie")) == label


def test_a_lowercase_a_token_adds_nothing_to_a() -> None:
    top = [{" A": math.log(0.3), " a": math.log(0.3), " B": math.log(0.3)}]
    probabilities = label_distribution(top, ("A", "B"))
    assert probabilities is not None and probabilities["A"] == pytest.approx(0.5)
    assert label_distribution([{" a": math.log(0.6), " B": math.log(0.3)}], ("A", "B")) is None
    assert label_distribution([{" Yes": math.log(0.6), "no": math.log(0.2)}], ("yes", "no")) == {
        "yes": pytest.approx(0.75),
        "no": pytest.approx(0.25),
    }


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("On a scale of 1 to 9, I give 7", 7),  # the scale's bounds are not the score
        ("I give it a 6 out of 9", 6),  # nor is a denominator
        ("Score: 7/10", 7),
        ("7/9", 7),
        (" 8", 8),
        ("7. It makes 2 small mistakes", 7),  # the reply leads with its answer
        ("It makes 2 small mistakes. Rating: 4", 4),  # an answer word wins
        ("42 then 8.5", 8.5),  # out of range numbers are skipped
        ("Between 1 and 9: 3", 3),
        ("none", None),
        ("1 to 9", None),  # only the scale
    ],
)
def test_score_in_text_reads_the_score_not_the_scale(reply: str, score: float | None) -> None:
    assert score_in_text(reply, 1, 9) == score


def test_scores_from_text_and_from_digit_probabilities() -> None:
    mean, probabilities = expected_score([{" 3": math.log(0.5), "5": math.log(0.5), "x": -0.1}], 1, 9)  # type: ignore[misc]
    assert mean == pytest.approx(4.0) and set(probabilities) == {str(s) for s in range(1, 10)}
    assert expected_score([{"1": -0.1}], 1, 10) is None  # "10" is not one token: text only


# -- Bradley–Terry and schedules ---------------------------------------------------------


def test_bradley_terry_recovers_a_known_win_probability() -> None:
    theta = bradley_terry(2, [(0, 1, 0.75)] * 50, prior=1e-3)
    assert theta.sum() == pytest.approx(0.0)
    assert 1 / (1 + math.exp(-(theta[0] - theta[1]))) == pytest.approx(0.75, abs=1e-3)


def test_bradley_terry_weighs_whom_one_beat_and_stays_finite() -> None:
    # 0 beats 1 beats 2; 3 only beat 2. Win rates of 1 and 3 are equal, strengths are not...
    outcomes = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (3, 2, 1.0), (0, 3, 1.0)]
    theta = bradley_terry(4, outcomes)
    assert theta[0] > max(theta[1], theta[3]) and min(theta[1], theta[3]) > theta[2]
    assert all(math.isfinite(t) for t in theta)  # an unbeaten player stays finite
    assert list(bradley_terry(3, [(0, 1, 0.5), (1, 2, 0.5)])) == pytest.approx([0, 0, 0])


@pytest.mark.parametrize(
    ("schedule", "k", "questions"),
    [("all_pairs", 0, 8 * 8 - 8), ("one_way", 0, (8 * 8 - 8) // 2), ("chunks", 4, 2 * 6 * 2)],
)
def test_schedules_ask_the_documented_number_of_questions(schedule: str, k: int, questions: int) -> None:
    matchups = schedule_matchups(8, schedule, k, random.Random(0))  # type: ignore[arg-type]
    assert sum(2 if m.both_positions else 1 for m in matchups) == questions
    assert all(m.a < m.b for m in matchups)


def test_random_and_chunk_schedules_give_everyone_a_match() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        for matchups in (schedule_matchups(5, "random", 2, rng), schedule_matchups(5, "chunks", 2, rng)):
            met = {m.a for m in matchups} | {m.b for m in matchups}
            assert met == set(range(5))
        random_matchups = schedule_matchups(5, "random", 2, rng)
        assert all(sum(i in (m.a, m.b) for m in random_matchups) >= 2 for i in range(5))


def test_one_way_alternates_which_response_is_shown_first() -> None:
    matchups = schedule_matchups(4, "one_way", 0, random.Random(0))
    assert [m.swap_first for m in matchups] == [False, True, False, True, False, True]


# -- a scripted judge endpoint: faults ---------------------------------------------------


def chat_reply(text: str, top: dict[str, float] | None = None) -> dict:
    logprobs = None
    if top is not None:
        entries = [{"token": t, "logprob": lp, "bytes": []} for t, lp in top.items()]
        logprobs = {"content": [{"token": text, "logprob": max(top.values()), "top_logprobs": entries}]}
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs}],
        "usage": {"completion_tokens": 1},
    }


def scripted_client(url: str, **settings: object) -> JudgeClient:
    config = {"base_url": f"{url}/v1", "model": "scripted", "max_attempts": 3, "max_concurrency": 1}
    config.update(settings)
    return JudgeConfig.from_mapping(config).client()


def run(coro):
    return asyncio.run(coro)


def test_pairwise_judge_cancels_position_bias_with_soft_verdicts(scripted) -> None:
    """The scripted judge always prefers the first position a bit: asked in both orders, the
    combined probability is 0.5 + the true preference, and the verdict is flagged inconsistent."""
    scripted.reply(200, chat_reply("A", {"A": math.log(0.8), "B": math.log(0.2)}))  # x shown first
    scripted.reply(200, chat_reply("A", {"A": math.log(0.6), "B": math.log(0.4)}))  # y shown first
    judge = PairwiseJudge(scripted_client(scripted.url), ties=False)
    verdict = run(judge.compare("Say hi.", "x-response", "y-response"))
    assert verdict.ok and verdict.p_a == pytest.approx((0.8 + 0.4) / 2)
    assert verdict.consistent is False and verdict.verdict == "tie"
    first, second = (m["content"] for m in (b["messages"][-1] for b in scripted.bodies))
    assert first.index("x-response") < first.index("y-response")
    assert second.index("y-response") < second.index("x-response")
    assert scripted.bodies[0]["logprobs"] is True and scripted.bodies[0]["top_logprobs"] == 10


def test_judge_retries_500s_and_garbage_then_answers(scripted) -> None:
    scripted.reply(500, {"error": "overloaded"})
    scripted.reply(200, b"<html>proxy error</html>")
    scripted.reply(200, chat_reply("B"))
    client = scripted_client(scripted.url)
    judge = PairwiseJudge(client, both_positions=False)
    verdict = run(judge.compare("q", "a", "b"))
    assert verdict.ok and verdict.verdict == "B" and verdict.p_a == 0.0  # text only: a hard verdict
    assert client.counters()["retries"] == 2 and client.counters()["failures"] == 0


def test_a_judge_that_keeps_failing_gives_per_item_errors_and_the_batch_goes_on(scripted) -> None:
    for _ in range(3):
        scripted.reply(503, {"error": "down"})
    scripted.reply(200, chat_reply("7"))
    client = scripted_client(scripted.url)
    judge = PointwiseJudge(client)
    samples = [Sample.from_completion("first", prompt="q"), Sample.from_completion("second", prompt="q")]
    first, second = run(judge.score_batch(samples))
    assert first.error and "503" in first.error and math.isnan(first.value)
    assert second.ok and second.value == pytest.approx((7 - 1) / 8)
    assert client.counters()["failures"] == 1 and client.counters()["retries"] == 2


def test_an_unreachable_judge_is_an_error_after_retries() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = scripted_client(f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(JudgeUnavailable, match="gave up after 2 attempts"):
        run(client.ask("question", JudgeSampling()))
    assert client.stats.failures == 1


def test_a_judge_that_never_answers_times_out_into_an_error() -> None:
    """A real listening socket that accepts connections and never replies."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        client = scripted_client(f"http://127.0.0.1:{silent.getsockname()[1]}", max_attempts=2, timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(JudgeUnavailable, match="ReadTimeout"):
            run(client.ask("question", JudgeSampling()))
        assert time.monotonic() - started < 15 and client.stats.failures == 1


def test_unparseable_verdicts_follow_the_stated_policy(scripted) -> None:
    for _ in range(3):
        scripted.reply(200, chat_reply("I would rather not say."))
    client = scripted_client(scripted.url)
    judge = PairwiseJudge(client, both_positions=False, on_unparseable="resample", resamples=2)
    verdict = run(judge.compare("q", "a", "b"))
    assert verdict.error and "no verdict could be read from 3 judge replies" in verdict.error
    assert client.stats.unparseable == 3
    resampled = [b for b in scripted.bodies[1:]]
    assert [(b["temperature"], b["seed"]) for b in resampled] == [(1.0, 1), (1.0, 2)]

    scripted.reply(200, chat_reply("no idea"))
    neutral = PairwiseJudge(client, both_positions=False, on_unparseable="neutral")
    verdict = run(neutral.compare("q", "a", "b"))
    assert verdict.ok and verdict.p_a == 0.5 and verdict.orders[0].source == "neutral"

    scripted.reply(200, chat_reply("hmm"))
    with pytest.raises(UnparseableVerdict):
        run(ReferenceJudge(client, on_unparseable="error").compute(Sample.from_completion("x", "y")))
    assert client.stats.unparseable == 5


def test_tournament_counts_failed_matchups_and_errors_only_the_unjudged(scripted) -> None:
    """G=3, one way: 3 questions. The judge answers two and fails the third for good: the
    completions that still have a judged matchup are scored, the failure is counted."""
    scripted.reply(200, chat_reply("A", {"A": 0.0}))  # (0, 1): 0 wins
    scripted.reply(200, chat_reply("B", {"B": 0.0}))  # (0, 2), shown swapped: B is 0, 0 wins
    for _ in range(3):
        scripted.reply(500, {"error": "boom"})  # (1, 2): fails after 3 attempts
    client = scripted_client(scripted.url, ties=False)
    tournament = Tournament(
        JudgeConfig.from_mapping({"base_url": "http://x/v1", "model": "m"}).pairwise(client)
    )
    tournament.schedule = "one_way"
    samples = [Sample.from_completion(text, prompt="q") for text in ("zero", "one", "two")]
    scores = run(tournament.score_group(samples))
    assert [s.ok for s in scores] == [True, True, True]
    metrics = scores[0].info["group_metrics"]
    assert metrics["failed_matchups"] == 1 and metrics["matchups"] == 3
    assert scores[0].value == pytest.approx(1.0)
    assert scores[1].components["matches"] == 1


def test_identical_completions_tie_without_asking(scripted) -> None:
    client = scripted_client(scripted.url)
    tournament = Tournament(PairwiseJudge(client))
    scores = run(tournament.score_group([Sample.from_completion("same", prompt="q")] * 3))
    assert [s.value for s in scores] == [0.5, 0.5, 0.5] and scripted.requests == []


def test_the_cache_answers_a_repeated_question_without_a_request(scripted, tmp_path) -> None:
    scripted.reply(200, chat_reply("B", {"A": math.log(0.25), "B": math.log(0.75)}))
    first = scripted_client(scripted.url, cache_dir=str(tmp_path))
    judge = PairwiseJudge(first, both_positions=False)
    assert run(judge.compare("q", "a", "b")).p_a == pytest.approx(0.25)
    second = scripted_client(scripted.url, cache_dir=str(tmp_path))  # a new run, same cache dir
    assert run(PairwiseJudge(second, both_positions=False).compare("q", "a", "b")).p_a == pytest.approx(0.25)
    assert len(scripted.requests) == 1 and second.stats.cache_hits == 1
    assert len(JudgeCache(tmp_path)) == 1


def test_judge_settings_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown judge settings \['modle'\]"):
        JudgeConfig.from_mapping({"base_url": "http://h/v1", "modle": "x"})
    with pytest.raises(ValueError, match=r"missing judge settings \['model'\]"):
        JudgeConfig.from_mapping({"base_url": "http://h/v1"})
    with pytest.raises(ValueError, match="on_unparseable must be one of"):
        JudgeConfig.from_mapping({"base_url": "http://h/v1", "model": "m", "on_unparseable": "zero"})
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_reward("tournament", judge={"base_url": "http://h/v1", "model": "m"}, schedule="swiss")
    assert isinstance(
        make_reward("judge_pointwise", judge={"base_url": "http://h/v1", "model": "m"}), PointwiseJudge
    )


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("top_logprobs", 21, "top_logprobs must be from 0 to 20, got 21"),
        ("top_logprobs", -1, "top_logprobs must be from 0 to 20"),
        ("max_concurrency", 0, "max_concurrency must be 1 or more, got 0"),
        ("max_concurrency", 2.5, "max_concurrency must be a whole number"),
        ("timeout_s", 0, "timeout_s must be a number > 0, got 0"),
        ("timeout_s", float("nan"), "timeout_s must be a number > 0"),
        ("max_attempts", 0, "max_attempts must be 1 or more, got 0"),
        ("max_tokens", 0, "max_tokens must be 1 or more"),
        ("temperature", -0.5, "temperature must be a number >= 0"),
        ("seed", "7", "seed must be a whole number"),
        ("resamples", True, "resamples must be a whole number"),
    ],
)
def test_numeric_judge_settings_are_checked_with_clear_errors(
    setting: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"judge {message}")):
        JudgeConfig.from_mapping({"base_url": "http://h/v1", "model": "m", setting: value})


def test_max_attempts_below_one_never_reaches_the_engine() -> None:
    with pytest.raises(ValueError, match="max_attempts must be a whole number, 1 or more, got 0"):
        JudgeClient.from_endpoint("http://h/v1", "m", max_attempts=0)


def test_sampling_settings_reach_the_request(scripted) -> None:
    scripted.reply(200, chat_reply("A"))
    client = scripted_client(scripted.url, temperature=0.7, max_tokens=32, seed=5, top_logprobs=3)
    config = JudgeConfig.from_mapping(
        {
            "base_url": "http://h/v1",
            "model": "m",
            "temperature": 0.7,
            "max_tokens": 32,
            "seed": 5,
            "top_logprobs": 3,
        }
    )
    assert run(
        PairwiseJudge(client, both_positions=False, sampling=config.sampling).compare("q", "a", "b")
    ).ok
    body = scripted.bodies[0]
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_logprobs"]) == (0.7, 32, 5, 3)


# -- few-shot prompts --------------------------------------------------------------------


def test_few_shot_prompts_render_examples_before_the_question() -> None:
    base = pairwise_prompt(few_shot=False, ties=False)
    shots = [JudgeExample("Q1", "A"), JudgeExample("Q2", "B")]
    prompt = with_examples(base, shots)
    assert prompt.instructions == base.instructions and base.examples == ()
    assert prompt.text("Q3") == (
        f"{base.instructions}\n\nQ1\nBetter response: A\n\nQ2\nBetter response: B\n\nQ3\nBetter response:"
    )
    assert prompt.messages("Q3") == [
        {"role": "system", "content": base.instructions},
        {"role": "user", "content": "Q1\nBetter response:"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Q2\nBetter response:"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "Q3\nBetter response:"},
    ]
    assert prompt.render("Q3", chat=False) == prompt.text("Q3")
    # The built-in shots: pairwise answers are labels, pointwise ones digits in range, reference yes/no.
    assert {ex.answer for ex in pairwise_prompt().examples} <= {"A", "B", "tie"}
    assert all(1 <= int(ex.answer) <= 9 for ex in pointwise_prompt().examples)
    assert pointwise_prompt(low=0, high=100).examples == ()  # the shots are on the 1-9 scale
    assert {ex.answer for ex in reference_prompt().examples} == {"yes", "no"}


# -- a judge that answers by a rule --------------------------------------------------------


class RuleJudgeServer(AnsweringHTTPServer):
    """A real OpenAI-compatible chat endpoint on loopback that answers every question by a rule
    (`prefer(response_a, response_b)` -> "A" or "B"), after `delay_s`, or with `status` (a
    fault). Scripted, not a model: it exists to make concurrency measurable (it records the
    peak number of questions in flight) and to give two judges with known, different tastes."""

    def __init__(self, prefer: Callable[[str, str], str], *, delay_s: float = 0.0, status: int = 200) -> None:
        def answer(body: Any) -> tuple[int, Any]:
            question = body["messages"][-1]["content"]
            a, b = re.search(r"Response A: (.*)\n\nResponse B: (.*)\n", question, re.S).groups()
            return status, chat_reply(prefer(a, b))

        super().__init__(answer, delay_s=delay_s)


def longer(a: str, b: str) -> str:
    return "A" if len(a) >= len(b) else "B"


def group(*completions: str) -> list[Sample]:
    return [Sample.from_completion(c, prompt="Say something.", task_id="t") for c in completions]


@pytest.mark.parametrize(
    ("max_concurrency", "concurrent", "peak", "delay_s"),
    [(16, True, 12, 0.5), (3, True, 3, 0.2), (16, False, 1, 0.05)],
    ids=["all-at-once", "capped", "one-by-one"],
)
def test_tournament_concurrency_is_what_was_asked_for(
    max_concurrency: int, concurrent: bool, peak: int, delay_s: float
) -> None:
    """G = 4, all pairs: 12 questions. Issued together they are all in flight at once, unless
    the client's max_concurrency caps them; concurrent=False asks one at a time. (The judge's
    delay is long enough for every question issued together to arrive before one finishes.)"""
    with RuleJudgeServer(longer, delay_s=delay_s) as server:
        client = JudgeConfig(
            base_url=server.url, model="rule", max_concurrency=max_concurrency, max_attempts=1
        ).client()
        tournament = Tournament(PairwiseJudge(client, ties=False), concurrent=concurrent)
        scores = run(tournament.score_group(group("x", "xx", "xxx", "xxxx")))
        run(client.close())
    assert [s.value for s in scores] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert server.requests == 12 and server.peak == peak


def test_a_group_of_preference_envs_shares_one_judge_client_and_closes_it() -> None:
    """Four environments, one judge client (one connection pool, one concurrency bound); the
    group's tournament works through it, and closing the group closes it."""
    with RuleJudgeServer(longer) as server:
        settings = {"base_url": server.url, "model": "rule", "ties": False}
        config = JudgeConfig.from_mapping(settings)
        pool = SharedJudges()
        members = EnvGroup(lambda: PreferenceEnv(judge=settings, split="train", judges=pool), 4)
        clients = {id(env.group_reward.judge.client) for env in members.envs}
        assert len(clients) == 1 and pool.holders(config) == 4
        client = members.envs[0].group_reward.judge.client
        for env, reply in zip(members.envs, ("x", "xx", "xxx", "xxxx"), strict=True):
            env.reset(seed=0)
            env.step(reply)
        result = run(members.finish())
        assert [s.value for s in result.group_scores_G] == [0.0, 1 / 3, 2 / 3, 1.0] and server.requests == 12
        assert not client.closed
        members.close()
    assert client.closed and client.engine.client.is_closed and pool.holders(config) == 0
    again = PreferenceEnv(judge=settings, split="train", judges=pool)  # a new lease: a new client
    assert again.group_reward.judge.client is not client
    again.close()
    with pytest.raises(ValueError, match="schedule must be one of"):  # a bad setting leaks no lease
        PreferenceEnv(judge=settings, schedule="swiss", judges=pool)  # type: ignore[arg-type]
    assert pool.holders(config) == 0


def test_an_eval_judge_rejudges_preference_pairs_and_reports_agreement() -> None:
    """Two judge endpoints with different tastes: the training judge prefers the longer reply,
    the evaluation judge the reply that says "please". Their agreement is known in advance."""
    pairs = [
        ("please help", "no"),  # both prefer A
        ("ok", "please"),  # both prefer B
        ("a longer reply", "please"),  # training A, evaluation B
        ("sure", "a much longer reply"),  # no "please": both prefer the longer B
    ]

    def polite(a: str, b: str) -> str:
        if ("please" in a) != ("please" in b):
            return "A" if "please" in a else "B"
        return longer(a, b)

    async def label_and_rejudge(train_url: str, eval_url: str) -> tuple[list, object]:
        train_client = JudgeConfig(base_url=train_url, model="longer", ties=False).client()
        eval_client = JudgeConfig(base_url=eval_url, model="polite", ties=False).client()
        try:
            verdicts = await judge_pairs(
                PairwiseJudge(train_client, ties=False),
                ["q"] * len(pairs),
                [a for a, _ in pairs],
                [b for _, b in pairs],
                progress=False,
            )
            records = [
                PreferenceRecord("q", a, b, v.p_a, v.verdict, v.consistent, judge="longer")
                for (a, b), v in zip(pairs, verdicts, strict=True)
            ]
            stand_in = PreferenceRecord(
                "q", "x", "y", 0.5, "tie", None, orders=(OrderRecord(0.5, "neutral", False),)
            )
            agreement = await judge_agreement(
                PairwiseJudge(eval_client, ties=False), [*records, stand_in], progress=False
            )
            return records, agreement
        finally:
            await train_client.close()
            await eval_client.close()

    with RuleJudgeServer(longer) as train, RuleJudgeServer(polite) as evaluation:
        records, agreement = run(label_and_rejudge(train.url, evaluation.url))
        assert evaluation.requests == 2 * len(pairs)  # the stand-in label is not re-judged
    assert [r.verdict for r in records] == ["A", "B", "A", "B"]
    assert agreement.pairs == 4 and agreement.failed == 0
    assert agreement.agreement == 0.75 and agreement.decisive_agreement == 0.75
    assert agreement.decisive_pairs == 4 and agreement.mean_abs_p_diff == 0.25
