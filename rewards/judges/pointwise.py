"""Pointwise judges: one response at a time, scored by a rubric or against a gold answer.

`PointwiseJudge` asks for a score in [low, high] and scales it to [0, 1]; with token
logprobs and single-digit scores the value is the expected score under the judge's
distribution, not just its argmax. `ReferenceJudge` asks whether the response agrees with
the task's reference answer; with logprobs its value is P(yes).
"""

from __future__ import annotations

from rewards.base import Reward
from rewards.judges.asking import Unparseable, ask_for_verdict, check_policy
from rewards.judges.client import JudgeClient, JudgeReply, JudgeSampling
from rewards.judges.prompts import (
    DEFAULT_CONSTITUTION,
    JudgePrompt,
    pointwise_prompt,
    prompt_text,
    reference_prompt,
    reference_query,
    single_query,
)
from rewards.judges.verdicts import expected_score, read_choice, score_in_text
from rewards.types import Sample, Score


def _chat_default(client: JudgeClient, chat: bool | None) -> bool:
    return chat if chat is not None else getattr(client.engine, "api", "chat") == "chat"


class PointwiseJudge(Reward):
    """A score from `low` to `high` by a rubric (or constitution), reported in [0, 1]."""

    name = "judge_pointwise"

    def __init__(
        self,
        client: JudgeClient,
        *,
        rubric: str | None = None,
        low: int = 1,
        high: int = 9,
        prompt: JudgePrompt | None = None,
        few_shot: bool = True,
        chat: bool | None = None,
        sampling: JudgeSampling | None = None,
        on_unparseable: Unparseable = "resample",
        resamples: int = 2,
        name: str = "judge_pointwise",
    ) -> None:
        if low >= high:
            raise ValueError(f"the score range needs low < high, got {low}..{high}")
        check_policy(on_unparseable, resamples)
        self.client = client
        self.low, self.high = low, high
        self.prompt = prompt or pointwise_prompt(rubric or DEFAULT_CONSTITUTION, low, high, few_shot=few_shot)
        self.chat = _chat_default(client, chat)
        self.sampling = sampling or JudgeSampling()
        self.on_unparseable: Unparseable = on_unparseable
        self.resamples = resamples
        self.name = name

    def _read(self, reply: JudgeReply) -> tuple[float, str] | None:
        expected = expected_score(reply.top_logprobs_T, self.low, self.high)
        if expected is not None:
            return expected[0], "logprobs"
        value = score_in_text(reply.text, self.low, self.high)
        return None if value is None else (value, "text")

    async def compute(self, sample: Sample) -> Score:
        question = self.prompt.render(single_query(prompt_text(sample), sample.completion), chat=self.chat)
        verdict = await ask_for_verdict(
            self.client,
            question,
            self.sampling,
            self._read,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )
        raw, source = verdict if verdict is not None else ((self.low + self.high) / 2, "neutral")
        return Score(
            value=(raw - self.low) / (self.high - self.low),
            components={"judge_score": raw},
            info={"source": source},
        )


class ReferenceJudge(Reward):
    """Does the completion give the same answer as `sample.reference`? Value = P(yes)."""

    name = "judge_reference"

    def __init__(
        self,
        client: JudgeClient,
        *,
        prompt: JudgePrompt | None = None,
        few_shot: bool = True,
        chat: bool | None = None,
        sampling: JudgeSampling | None = None,
        on_unparseable: Unparseable = "resample",
        resamples: int = 2,
        name: str = "judge_reference",
    ) -> None:
        check_policy(on_unparseable, resamples)
        self.client = client
        self.prompt = prompt or reference_prompt(few_shot=few_shot)
        self.chat = _chat_default(client, chat)
        self.sampling = sampling or JudgeSampling()
        self.on_unparseable: Unparseable = on_unparseable
        self.resamples = resamples
        self.name = name

    def _read(self, reply: JudgeReply) -> tuple[float, str] | None:
        choice = read_choice(reply.text, reply.top_logprobs_T, ("yes", "no"))
        if choice is None:
            return None
        if choice.probabilities is not None:
            return choice.probabilities["yes"], choice.source
        return (1.0 if choice.label == "yes" else 0.0), choice.source

    async def compute(self, sample: Sample) -> Score:
        if sample.reference is None:
            raise ValueError("the reference judge needs the gold answer in sample.reference")
        query = reference_query(prompt_text(sample), sample.completion, str(sample.reference))
        verdict = await ask_for_verdict(
            self.client,
            self.prompt.render(query, chat=self.chat),
            self.sampling,
            self._read,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )
        p_yes, source = verdict if verdict is not None else (0.5, "neutral")
        return Score(value=p_yes, passed=p_yes > 0.5, components={"p_yes": p_yes}, info={"source": source})
