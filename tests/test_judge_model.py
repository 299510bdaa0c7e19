"""Judges against a real OpenAI-compatible server on loopback backed by a real tiny model.

A random tiny model has no opinion, so the module first teaches one: a few supervised steps
on the exact prompts the judges render until, for every ordered pair of three responses to
one prompt, the model answers " A" or " B" by a fixed ranking, confidently (zero-shot text
prompts, no ties); and, for a few more questions, the same through a few-shot text prompt and
through the chat API's rendering, a score digit for a pointwise judge, and yes/no for a
reference judge. Saved with `save_pretrained` and served by `rewardgym serve-model`, it is
then questioned only over HTTP (top logprobs asked for): pairwise verdicts in both
positions, few-shot and chat judging, pointwise and reference scores, tournaments, and a
tournament hosted by `rewardgym serve`.
The untaught model (conftest's `model_server`) checks the failure accounting: its replies
are mostly noise, and every verdict must be a real one or a counted error.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rewards import RewardClient, Sample  # noqa: E402
from rewards.judges import (  # noqa: E402
    JudgeClient,
    JudgeExample,
    JudgeSampling,
    PairwiseJudge,
    PointwiseJudge,
    ReferenceJudge,
    Tournament,
    pairwise_prompt,
    pointwise_prompt,
    reference_prompt,
    with_examples,
)
from rewards.judges.prompts import pair_query, reference_query, single_query  # noqa: E402
from rewards.judges.verdicts import read_choice  # noqa: E402
from trainer.engines.chat_format import render_plain  # noqa: E402

from conftest import build_tiny_model, free_port, served  # noqa: E402

PROMPT = "Name a fruit that is yellow."
RANKED = ("A banana.", "A lemon, maybe.", "I like cars a lot.")  # best first
JUDGE_PROMPT = pairwise_prompt(few_shot=False, ties=False)  # short prompts: quick to teach
# The group as a policy would produce it: not in rank order, so a ranking is not a coincidence.
GROUP = (RANKED[1], RANKED[2], RANKED[0])
TAUGHT_ORDER = [2, 0, 1]  # group indices, best first


# A one-shot prompt (a short example keeps teaching quick), the score and yes/no questions.
FEW_SHOT_PROMPT = with_examples(JUDGE_PROMPT, [JudgeExample(pair_query("Hi?", "Hi!", "No."), "A")])
SCORE_PROMPT = pointwise_prompt(few_shot=False)
REFERENCE_PROMPT = reference_prompt(few_shot=False)
SCORES = {RANKED[0]: "9", RANKED[2]: "1"}
REFERENCE = ("What colour is a banana?", "yellow", {"Yellow.": "yes", "Blue.": "no"})


def teaching_rows() -> list[tuple[str, str]]:
    """(prompt text as the server sees it, answer) for everything the judge is taught.

    Every ordered pair zero-shot; the best-vs-worst pair (both orders) also one-shot and as
    the chat API renders it (plain transcript, as `serve-model` renders chat for a model
    without a chat template); a score digit for the best and the worst response; yes/no."""
    rows = []
    for i, j in itertools.permutations(range(len(RANKED)), 2):
        query = pair_query(PROMPT, RANKED[i], RANKED[j])
        answer = " A" if i < j else " B"
        rows.append((JUDGE_PROMPT.text(query), answer))
        if {i, j} == {0, 2}:
            rows.append((FEW_SHOT_PROMPT.text(query), answer))
            rows.append((render_plain(JUDGE_PROMPT.messages(query)), answer))
    for response, score in SCORES.items():
        rows.append((SCORE_PROMPT.text(single_query(PROMPT, response)), f" {score}"))
    question, gold, answers = REFERENCE
    for response, answer in answers.items():
        rows.append((REFERENCE_PROMPT.text(reference_query(question, response, gold)), f" {answer}"))
    return rows


def teach_judge(model_dir: Path, out_dir: Path, *, confidence: float = 0.9) -> Path:
    """Supervised steps until every answer token (" A"/" B", a digit, yes/no, then the newline
    the judge stops at) gets probability > `confidence`: a confident judge, so soft verdicts
    are far from ½. One torch thread: on a shared CPU that is several times faster here."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    rows = []
    for question, answer in teaching_rows():
        # As the server tokenizes a prompt (with BOS); " A" is two tokens here.
        rows.append(
            (tokenizer(question).input_ids, tokenizer(answer + "\n", add_special_tokens=False).input_ids)
        )
    width = max(len(q) + len(a) for q, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for r, (question, answer) in enumerate(rows):
        end = len(question) + len(answer)
        ids[r, :end] = torch.tensor(question + answer)
        labels[r, len(question) : end] = torch.tensor(answer)
        mask[r, :end] = 1
    targets = labels[:, 1:]
    answered = targets != -100
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(400):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            probs = out.logits[:, :-1].softmax(-1)[answered].gather(1, targets[answered][:, None])
            if probs.min().item() > confidence:
                break
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    assert probs.min().item() > confidence, "the tiny model did not learn to judge the pairs"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The taught judge behind `rewardgym serve-model`; yields its /v1 base URL."""
    base = build_tiny_model(tmp_path_factory.mktemp("tiny-judge-base"))
    taught = teach_judge(base, tmp_path_factory.mktemp("tiny-judge"))
    argv = ["serve-model", "--model", str(taught), "--served-name", "judge", "--device", "cpu"]
    with served([*argv, "--max-tokens", "8"], free_port()) as url:
        yield f"{url}/v1"


def taught_judge(url: str, top_logprobs: int = 10) -> PairwiseJudge:
    client = JudgeClient.from_endpoint(url, "judge", api="completions")
    return PairwiseJudge(
        client, prompt=JUDGE_PROMPT, ties=False, sampling=JudgeSampling(top_logprobs=top_logprobs)
    )


def group_samples(completions: tuple[str, ...] = GROUP) -> list[Sample]:
    return [Sample.from_completion(c, prompt=PROMPT, task_id="yellow-fruit") for c in completions]


def ranking(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: -values[i])


# -- the taught judge --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("top_logprobs", [10, 0], ids=["logprobs", "text"])
def test_pairwise_verdicts_follow_the_taught_ranking_in_both_positions(
    judge_url: str, top_logprobs: int
) -> None:
    """Soft verdicts come from the answer token's probabilities; without logprobs, from the text."""
    judge = taught_judge(judge_url, top_logprobs)

    async def run() -> list[tuple[int, int, Any]]:
        try:
            pairs = list(itertools.permutations(range(len(RANKED)), 2))
            verdicts = await asyncio.gather(*(judge.compare(PROMPT, RANKED[i], RANKED[j]) for i, j in pairs))
            return [(i, j, v) for (i, j), v in zip(pairs, verdicts, strict=True)]
        finally:
            await judge.client.close()

    for i, j, verdict in asyncio.run(run()):
        a_is_better = i < j
        assert verdict.ok and verdict.consistent is True, (i, j, verdict)
        assert verdict.verdict == ("A" if a_is_better else "B"), (i, j, verdict)
        assert (verdict.p_a > 0.5) == a_is_better, (i, j, verdict)
        assert [o.swapped for o in verdict.orders] == [False, True]
        if top_logprobs:
            assert {o.source for o in verdict.orders} == {"logprobs"}, verdict
            assert 0.0 < verdict.p_a < 1.0  # a probability, not a hard 0/1
            assert abs(verdict.p_a - 0.5) > 0.3  # and a confident one: the judge was taught to be
        else:
            assert {o.source for o in verdict.orders} == {"text"}, verdict
            assert verdict.p_a == (1.0 if a_is_better else 0.0)
    assert judge.client.counters() == {
        "calls": 12,
        "cache_hits": 0,
        "failures": 0,
        "unparseable": 0,
        "failed_pairs": 0,
        "retries": 0,
    }


@pytest.mark.slow
def test_tournaments_rank_the_group_as_taught(judge_url: str) -> None:
    samples = group_samples()

    async def run() -> dict[str, list[Any]]:
        judge = taught_judge(judge_url)
        try:
            return {
                name: await Tournament(judge, schedule="all_pairs", scoring=scoring, soft=soft).score_group(
                    samples
                )
                for name, scoring, soft in [
                    ("soft", "win_rate", True),
                    ("hard", "win_rate", False),
                    ("bt", "bradley_terry", True),
                ]
            }
        finally:
            await judge.client.close()

    scores = asyncio.run(run())
    for name, got in scores.items():
        assert all(s.error is None for s in got), (name, got)
        values = [s.value for s in got]
        assert ranking(values) == TAUGHT_ORDER, (name, values)
        metrics = got[0].info["group_metrics"]
        assert metrics["position_consistency"] == 1.0 and metrics["tie_rate"] == 0.0, (name, metrics)
        assert metrics["orders_judged"] == 6 and metrics["matchups"] == 3, (name, metrics)
        assert metrics["failed_matchups"] == 0
    soft = [s.value for s in scores["soft"]]
    assert sum(soft) == pytest.approx(len(GROUP) / 2)  # all pairs: each pair hands out one win
    assert [s.value for s in scores["hard"]] == [0.5, 0.0, 1.0]  # beat one / none / both
    strengths = [s.value for s in scores["bt"]]
    assert sum(strengths) == pytest.approx(0.0, abs=1e-9)  # Bradley–Terry strengths have mean 0
    assert [s.components["win_rate"] for s in scores["bt"]] == pytest.approx(soft)


@pytest.mark.slow
def test_a_tournament_hosted_by_the_reward_server_ranks_as_taught(judge_url: str, tmp_path: Path) -> None:
    """`rewardgym serve` hosts the registered `tournament` reward against the judge endpoint."""
    config = tmp_path / "server.toml"
    config.write_text(
        "[[rewards]]\n"
        'name = "rlaif"\n'
        'reward = "tournament"\n'
        f'params = {{ scoring = "win_rate", judge = {{ base_url = "{judge_url}", model = "judge", '
        'api = "completions", few_shot = false, ties = false } }\n'
    )
    reversed_group = tuple(reversed(GROUP))  # a second group in the same request, scored on its own

    async def run(url: str) -> list[list[Any]]:
        async with RewardClient(url) as client:
            listed = {r["name"] for r in await client.list_rewards()}
            assert "rlaif" in listed
            return await client.score_group("rlaif", [group_samples(), group_samples(reversed_group)])

    with served(["serve", "--config", str(config)], free_port()) as url:
        first, second = asyncio.run(run(url))
    for got, expected in [(first, TAUGHT_ORDER), (second, [len(GROUP) - 1 - i for i in TAUGHT_ORDER])]:
        assert all(s.error is None for s in got), got
        values = [s.value for s in got]
        assert ranking(values) == expected, values
        assert sum(values) == pytest.approx(len(GROUP) / 2)
        metrics = got[0].info["group_metrics"]
        assert metrics["position_consistency"] == 1.0 and metrics["orders_judged"] == 6, metrics


@pytest.mark.slow
@pytest.mark.parametrize("route", ["few_shot", "chat"])
def test_few_shot_and_chat_judges_follow_the_taught_ranking(judge_url: str, route: str) -> None:
    """A one-shot text prompt through the completions API (the base-model set-up), and the
    chat API (messages, which the server renders): both orders of the taught pair, read from
    the answer token's probabilities."""
    if route == "chat":
        client = JudgeClient.from_endpoint(judge_url, "judge", api="chat")
        judge = PairwiseJudge(client, prompt=JUDGE_PROMPT, ties=False)
        assert judge.chat  # messages to /chat/completions
    else:
        client = JudgeClient.from_endpoint(judge_url, "judge", api="completions")
        judge = PairwiseJudge(client, prompt=FEW_SHOT_PROMPT, ties=False)
        assert not judge.chat and "Response A: Hi!" in FEW_SHOT_PROMPT.text("q")

    async def run() -> list[Any]:
        try:
            return [
                await judge.compare(PROMPT, RANKED[0], RANKED[2]),
                await judge.compare(PROMPT, RANKED[2], RANKED[0]),
            ]
        finally:
            await client.close()

    better_first, worse_first = asyncio.run(run())
    assert better_first.verdict == "A" and better_first.consistent is True, better_first
    assert worse_first.verdict == "B" and worse_first.consistent is True, worse_first
    assert better_first.p_a > 0.8 and worse_first.p_a < 0.2
    assert {o.source for v in (better_first, worse_first) for o in v.orders} == {"logprobs"}
    assert client.counters()["calls"] == 4 and client.counters()["unparseable"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("top_logprobs", [10, 0], ids=["logprobs", "text"])
def test_pointwise_and_reference_judges_score_as_taught(judge_url: str, top_logprobs: int) -> None:
    """A score digit (the expected score under the digit probabilities, or the digit in the
    text) scaled to [0, 1]; P(yes) that a reply matches the gold answer."""
    client = JudgeClient.from_endpoint(judge_url, "judge", api="completions")
    sampling = JudgeSampling(top_logprobs=top_logprobs)
    pointwise = PointwiseJudge(client, prompt=SCORE_PROMPT, sampling=sampling)
    reference = ReferenceJudge(client, prompt=REFERENCE_PROMPT, sampling=sampling)
    question, gold, answers = REFERENCE
    scored = [Sample.from_completion(response, prompt=PROMPT) for response in SCORES]
    checked = [Sample.from_completion(response, gold, prompt=question) for response in answers]

    async def run() -> tuple[list[Any], list[Any]]:
        try:
            return await pointwise.score_batch(scored), await reference.score_batch(checked)
        finally:
            await client.close()

    (best, worst), (same, different) = asyncio.run(run())
    assert all(s.error is None for s in (best, worst, same, different)), (best, worst, same, different)
    assert best.value > 0.8 and worst.value < 0.2, (best, worst)  # taught 9 and 1 on 1..9
    assert same.passed and same.value > 0.5 and not different.passed and different.value < 0.5
    if top_logprobs:
        assert best.info["source"] == worst.info["source"] == "logprobs"
        assert 0.0 < worst.value < best.value < 1.0  # an expected score, not just the argmax
    else:
        assert (best.value, worst.value) == (1.0, 0.0) and best.info["source"] == "text"
        assert (same.value, different.value) == (1.0, 0.0)
    assert client.counters()["unparseable"] == 0


# -- an untaught judge -------------------------------------------------------------------


class CountingEngine:
    """Wraps a judge client's engine: counts the questions that reach the server, the replies a
    verdict can be read from, and the questions still in flight."""

    def __init__(self, client: JudgeClient, labels: tuple[str, ...]) -> None:
        self.original = client.engine.complete
        self.labels = labels
        self.asked = 0
        self.readable = 0
        self.in_flight = 0
        client.engine.complete = self.complete  # type: ignore[method-assign]

    async def complete(self, prompt: str, params: Any) -> Any:
        self.asked += 1
        self.in_flight += 1
        try:
            generation = await self.original(prompt, params)
        finally:
            self.in_flight -= 1
        if read_choice(generation.text, generation.top_logprobs_T, self.labels) is not None:
            self.readable += 1
        return generation


UNTAUGHT_GROUP = (
    "A banana.",
    "A lemon, maybe.",
    "I like cars a lot.",
    "Corn is yellow.",
    "Yellow.",
)


@pytest.mark.slow
@pytest.mark.parametrize("top_logprobs", [10, 0], ids=["logprobs", "text"])
def test_an_untaught_judge_scores_or_counts_every_failure(model_server: str, top_logprobs: int) -> None:
    """Noise in, but never a made-up score out: each completion gets a finite win rate in [0, 1]
    or an error (NaN); each question the server saw is in the client's counters; a failed
    matchup is counted; and nothing is still being asked once the tournament has returned."""
    client = JudgeClient.from_endpoint(model_server, "tiny", api="completions")
    labels = ("A", "B", "tie")
    counting = CountingEngine(client, labels)
    judge = PairwiseJudge(
        client, prompt=pairwise_prompt(few_shot=False), sampling=JudgeSampling(top_logprobs=top_logprobs)
    )
    samples = [Sample.from_completion(c, prompt=PROMPT, task_id="noise") for c in UNTAUGHT_GROUP]

    async def run() -> tuple[list[Any], int]:
        try:
            scores = await Tournament(judge, schedule="all_pairs").score_group(samples)
            return scores, counting.in_flight
        finally:
            await client.close()

    scores, in_flight_after = asyncio.run(run())
    size = len(UNTAUGHT_GROUP)
    metrics = scores[0].info["group_metrics"]
    assert len(scores) == size and metrics["matchups"] == size * (size - 1) / 2
    for score in scores:
        if score.error is None:
            assert math.isfinite(score.value) and 0.0 <= score.value <= 1.0, score
        else:
            assert math.isnan(score.value) and "no judged matchup" in score.error, score
            assert metrics["failed_matchups"] >= size - 1  # all of its matchups failed
    stats = client.counters()
    assert in_flight_after == 0, "a question was still being asked after the tournament returned"
    assert stats["calls"] == counting.asked  # no cache: every question reached the server
    assert stats["unparseable"] == counting.asked - counting.readable
    assert stats["failures"] == 0 and stats["retries"] == 0  # the server answered every time
    # Each order is asked once, plus at most 2 resamples when unparseable.
    assert 2 * metrics["matchups"] <= stats["calls"] <= 3 * 2 * metrics["matchups"]
    if metrics["failed_matchups"]:
        assert stats["unparseable"] >= 3  # a failed order took its three unreadable replies


@pytest.mark.slow
def test_an_untaught_judge_with_neutral_policy_keeps_the_win_rate_sum(model_server: str) -> None:
    """With unparseable replies read as ties, no matchup fails, so all-pairs win rates
    still hand out exactly one win per pair: they sum to G/2."""
    client = JudgeClient.from_endpoint(model_server, "tiny", api="completions")
    judge = PairwiseJudge(
        client,
        prompt=pairwise_prompt(few_shot=False),
        sampling=JudgeSampling(top_logprobs=0),
        on_unparseable="neutral",
    )
    samples = [Sample.from_completion(c, prompt=PROMPT, task_id="noise") for c in UNTAUGHT_GROUP]

    async def run() -> list[Any]:
        try:
            return await Tournament(judge, schedule="all_pairs").score_group(samples)
        finally:
            await client.close()

    scores = asyncio.run(run())
    assert all(s.error is None and 0.0 <= s.value <= 1.0 for s in scores), scores
    assert sum(s.value for s in scores) == pytest.approx(len(UNTAUGHT_GROUP) / 2)
    stats = client.counters()
    size = len(UNTAUGHT_GROUP)
    assert stats["calls"] == size * (size - 1)  # neutral: no resamples
    assert scores[0].info["group_metrics"]["failed_matchups"] == 0
