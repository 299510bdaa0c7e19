"""The pairwise judge: which of two responses to one prompt is better.

Judges favour a position (often the first). `compare` asks in both orders and averages,
so the bias cancels; whether the two orders agree is recorded (`consistent`), and a pair
whose orders disagree counts as a tie. With token logprobs the verdict is soft:
`p_a` = P(A) + ½·P(tie), renormalised over the answer labels.

As a `Reward`, the judge compares a sample's completion against the baseline response in
`sample.reference` and scores the probability that the completion is better.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from rewards.judges.asking import Judge, Unparseable, UnparseableVerdict
from rewards.judges.client import JudgeClient, JudgeReply, JudgeSampling, JudgeUnavailable
from rewards.judges.prompts import JudgePrompt, pair_query, pairwise_prompt, prompt_text
from rewards.judges.verdicts import read_choice
from rewards.types import Sample, Score

Verdict = Literal["A", "B", "tie"]
_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class OrderVerdict:
    """The judge's answer with the responses in one order, stated for the *original* A."""

    p_a: float  # probability the original A is better (ties count half)
    verdict: Verdict  # for the original A and B
    swapped: bool  # whether A was shown second
    source: str  # "logprobs", "text", or "neutral" (unparseable under the neutral policy)


@dataclass(frozen=True)
class PairVerdict:
    """The combined verdict on (A, B). On failure, `error` says why and the rest is None."""

    p_a: float | None = None
    verdict: Verdict | None = None
    consistent: bool | None = None  # both orders gave the same verdict (None: one order asked)
    orders: tuple[OrderVerdict, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PairwiseJudge(Judge):
    """A judge model comparing two responses, in both orders by default."""

    name = "judge_pairwise"

    def __init__(
        self,
        client: JudgeClient,
        *,
        prompt: JudgePrompt | None = None,
        ties: bool = True,
        both_positions: bool = True,
        chat: bool | None = None,
        sampling: JudgeSampling | None = None,
        on_unparseable: Unparseable = "resample",
        resamples: int = 2,
        name: str = "judge_pairwise",
    ) -> None:
        super().__init__(
            client,
            prompt or pairwise_prompt(ties=ties),
            chat=chat,
            sampling=sampling,
            on_unparseable=on_unparseable,
            resamples=resamples,
            name=name,
        )
        self.labels: tuple[str, ...] = ("A", "B", "tie") if ties else ("A", "B")
        self.both_positions = both_positions

    async def judge_order(self, prompt: str, a: str, b: str, *, swapped: bool) -> OrderVerdict:
        """One question, with B shown first when `swapped`. Raises on failure."""
        shown = (b, a) if swapped else (a, b)

        def read(reply: JudgeReply) -> tuple[float, Verdict, str] | None:
            choice = read_choice(reply.text, reply.top_logprobs_T, self.labels)
            if choice is None:
                return None
            label: Verdict = choice.label  # type: ignore[assignment]
            if choice.probabilities is not None:
                p_first = choice.probabilities["A"] + 0.5 * choice.probabilities.get("tie", 0.0)
            else:
                p_first = _OUTCOME[label]
            return p_first, label, choice.source

        read_verdict = await self.ask(pair_query(prompt, *shown), read)
        if read_verdict is None:
            return OrderVerdict(0.5, "tie", swapped, "neutral")
        p_first, label, source = read_verdict
        if swapped:
            p_first, label = 1.0 - p_first, {"A": "B", "B": "A", "tie": "tie"}[label]  # type: ignore[assignment]
        return OrderVerdict(p_first, label, swapped, source)

    async def compare(
        self,
        prompt: str,
        a: str,
        b: str,
        *,
        both_positions: bool | None = None,
        swap_first: bool = False,
        sequential: bool = False,
    ) -> PairVerdict:
        """The verdict on (a, b). Never raises for a judge failure: `PairVerdict.error` says why.

        `both_positions` overrides the judge's setting for this pair. With one order, A is
        shown first unless `swap_first` (tournaments alternate it so the bias averages out).
        The two orders are asked at once, or one after the other with `sequential`.
        """
        both = self.both_positions if both_positions is None else both_positions
        orders_to_ask = (False, True) if both else (swap_first,)
        asks = [self.judge_order(prompt, a, b, swapped=swapped) for swapped in orders_to_ask]
        if sequential:
            outcomes: list[OrderVerdict | BaseException] = []
            for ask in asks:
                try:
                    outcomes.append(await ask)
                except (JudgeUnavailable, UnparseableVerdict) as exc:
                    outcomes.append(exc)
                    break
            for ask in asks[len(outcomes) :]:
                ask.close()  # never started: nothing left running
        else:  # both orders finish (no stray question outlives this call) before any error is raised
            outcomes = list(await asyncio.gather(*asks, return_exceptions=True))
        for outcome in outcomes:
            if isinstance(outcome, JudgeUnavailable | UnparseableVerdict):
                self.client.stats.failed_pairs += 1
                return PairVerdict(error=str(outcome))
            if isinstance(outcome, BaseException):
                raise outcome
        orders = [o for o in outcomes if isinstance(o, OrderVerdict)]
        p_a = sum(o.p_a for o in orders) / len(orders)
        if len(orders) == 1:
            return PairVerdict(p_a, orders[0].verdict, None, tuple(orders))
        consistent = orders[0].verdict == orders[1].verdict
        verdict: Verdict = orders[0].verdict if consistent else "tie"
        return PairVerdict(p_a, verdict, consistent, tuple(orders))

    async def compute(self, sample: Sample) -> Score:
        """P(completion beats the baseline response in `sample.reference`)."""
        if not isinstance(sample.reference, str) or not sample.reference:
            raise ValueError("the pairwise judge needs a baseline response (a string) in sample.reference")
        result = await self.compare(prompt_text(sample), sample.completion, sample.reference)
        if result.error is not None or result.p_a is None:
            return Score.failure(f"{self.name}: {result.error}")
        return Score(
            value=result.p_a,
            components={"win": _OUTCOME[result.verdict or "tie"]},
            passed=result.verdict == "A",
            info={"verdict": result.verdict, "consistent": result.consistent},
        )
