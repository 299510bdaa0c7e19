"""Pointwise judges: one response at a time, scored by a rubric or against a gold answer.

`PointwiseJudge` asks for a score in [low, high] and scales it to [0, 1]; with token
logprobs and single-digit scores the value is the expected score under the judge's
distribution, not just its argmax. `ReferenceJudge` asks whether the response agrees with
the task's reference answer; with logprobs its value is P(yes).
"""

from __future__ import annotations

from rewards.judges.asking import Judge, Unparseable
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


class PointwiseJudge(Judge):
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
        super().__init__(
            client,
            prompt or pointwise_prompt(rubric or DEFAULT_CONSTITUTION, low, high, few_shot=few_shot),
            chat=chat,
            sampling=sampling,
            on_unparseable=on_unparseable,
            resamples=resamples,
            name=name,
        )
        self.low, self.high = low, high

    def _read(self, reply: JudgeReply) -> tuple[float, str] | None:
        expected = expected_score(reply.top_logprobs_T, self.low, self.high)
        if expected is not None:
            return expected[0], "logprobs"
        value = score_in_text(reply.text, self.low, self.high)
        return None if value is None else (value, "text")

    async def compute(self, sample: Sample) -> Score:
        verdict = await self.ask(single_query(prompt_text(sample), sample.completion), self._read)
        raw, source = verdict if verdict is not None else ((self.low + self.high) / 2, "neutral")
        return Score(
            value=(raw - self.low) / (self.high - self.low),
            components={"judge_score": raw},
            info={"source": source},
        )


class ReferenceJudge(Judge):
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
        super().__init__(
            client,
            prompt or reference_prompt(few_shot=few_shot),
            chat=chat,
            sampling=sampling,
            on_unparseable=on_unparseable,
            resamples=resamples,
            name=name,
        )

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
        verdict = await self.ask(query, self._read)
        p_yes, source = verdict if verdict is not None else (0.5, "neutral")
        return Score(value=p_yes, passed=p_yes > 0.5, components={"p_yes": p_yes}, info={"source": source})
