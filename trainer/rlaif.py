"""RLAIF around a policy engine: collect judge preferences, and judge two policies head to head.

Indirect RLAIF starts here: `collect_preferences` samples pairs of replies from a policy
and asks a pairwise judge which is better, writing one `PreferenceRecord` per pair (JSONL)
for `rewards.preference_model.train_preference_model`. `head_to_head` is the evaluation
side: two policies' replies to the same prompts, judged pairwise, as win rates, and
`judge_agreement` re-judges a sample of the preference pairs with another judge (the
evaluation judge) to say how far the two judges agree.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from envs.tasks import Task
from rewards.judges import PairVerdict, PairwiseJudge
from rewards.preference_data import OrderRecord, PreferenceRecord, write_preferences
from rewards.types import Message, last_user_text
from trainer.engines.base import Engine, SamplingParams


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def task_prompt(task: Task) -> str:
    """The instruction text of a task (its last user message when the prompt is a conversation)."""
    return task.prompt if isinstance(task.prompt, str) else last_user_text(task.prompt)


async def sample_replies(
    engine: Engine,
    tasks: Sequence[Task],
    params: SamplingParams,
    *,
    per_task: int = 1,
    system_prompt: str | None = None,
    seed: int = 0,
    progress: bool = True,
    label: str = "sampling",
) -> list[list[str]]:
    """`per_task` replies for every task, seeded (task i, reply j gets seed + per_task·i + j)."""

    async def one(i: int, j: int, messages: list[Message]) -> str:
        generation = await engine.generate(messages, replace(params, seed=seed + per_task * i + j))
        bar.advance(job)
        return generation.text

    with _progress(progress) as bar:
        job = bar.add_task(label, total=len(tasks) * per_task)
        replies = await asyncio.gather(
            *(
                one(i, j, task.messages(system_prompt))
                for i, task in enumerate(tasks)
                for j in range(per_task)
            )
        )
    return [list(replies[i * per_task : (i + 1) * per_task]) for i in range(len(tasks))]


def _clamp(p: float) -> float:
    return min(1.0, max(0.0, p))  # float rounding


def _record(task: Task, a: str, b: str, verdict: PairVerdict, judge: str) -> PreferenceRecord:
    """The pair's verdict with each position order's probability and how it was read, so a
    stand-in verdict (unreadable, taken as a tie under the "neutral" policy) is told apart."""
    return PreferenceRecord(
        prompt=task_prompt(task),
        response_a=a,
        response_b=b,
        p_a=None if verdict.p_a is None else _clamp(verdict.p_a),
        verdict=verdict.verdict,
        consistent=verdict.consistent,
        judge=judge,
        error=verdict.error,
        task_id=task.id,
        orders=tuple(OrderRecord(_clamp(o.p_a), o.source, o.swapped) for o in verdict.orders),
    )


async def judge_pairs(
    judge: PairwiseJudge,
    prompts: Sequence[str],
    replies_a: Sequence[str],
    replies_b: Sequence[str],
    *,
    progress: bool = True,
    label: str = "judging",
) -> list[PairVerdict]:
    """The judge's verdict on each (a, b) pair, all issued at once; identical replies tie unasked."""

    async def one(prompt: str, a: str, b: str) -> PairVerdict:
        verdict = PairVerdict(0.5, "tie", True) if a == b else await judge.compare(prompt, a, b)
        bar.advance(job)
        return verdict

    with _progress(progress) as bar:
        job = bar.add_task(label, total=len(prompts))
        pairs = zip(prompts, replies_a, replies_b, strict=True)
        return list(await asyncio.gather(*(one(*pair) for pair in pairs)))


async def collect_preferences(
    engine: Engine,
    judge: PairwiseJudge,
    tasks: Sequence[Task],
    params: SamplingParams,
    *,
    pairs_per_task: int = 1,
    system_prompt: str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> list[PreferenceRecord]:
    """Sample 2·`pairs_per_task` replies per task and have the judge label each pair.

    A failed verdict is kept as a record with `error` set (training skips it, the count is
    reported), so the file says how many verdicts failed. Written to `out` when given.
    """
    replies = await sample_replies(
        engine,
        tasks,
        params,
        per_task=2 * pairs_per_task,
        system_prompt=system_prompt,
        seed=seed,
        progress=progress,
        label="sampling policy replies",
    )
    pairs = [
        (task, r[2 * p], r[2 * p + 1])
        for task, r in zip(tasks, replies, strict=True)
        for p in range(pairs_per_task)
    ]
    verdicts = await judge_pairs(
        judge,
        [task_prompt(task) for task, _, _ in pairs],
        [a for _, a, _ in pairs],
        [b for _, _, b in pairs],
        progress=progress,
        label="judging pairs",
    )
    judge_name = judge.client.model
    records = [_record(task, a, b, v, judge_name) for (task, a, b), v in zip(pairs, verdicts, strict=True)]
    if out is not None:
        write_preferences(out, records)
    return records


@dataclass(frozen=True)
class HeadToHead:
    """Policy X against policy Y on the same prompts, by a pairwise judge."""

    wins: int  # X's reply judged better
    losses: int
    ties: int
    failed: int  # verdicts the judge could not give (after retries and resamples)
    mean_p_x: float  # mean judge probability that X's reply is better (judged pairs)
    position_consistency: float  # share of pairs where both position orders agreed
    verdicts: tuple[PairVerdict, ...]

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float:
        """Wins plus half the ties, over judged pairs (NaN if none)."""
        return (self.wins + 0.5 * self.ties) / self.judged if self.judged else math.nan


def tally(verdicts: Sequence[PairVerdict]) -> HeadToHead:
    judged = [v for v in verdicts if v.ok]
    both = [v for v in judged if v.consistent is not None]
    return HeadToHead(
        wins=sum(v.verdict == "A" for v in judged),
        losses=sum(v.verdict == "B" for v in judged),
        ties=sum(v.verdict == "tie" for v in judged),
        failed=len(verdicts) - len(judged),
        mean_p_x=sum(v.p_a or 0.0 for v in judged) / len(judged) if judged else math.nan,
        position_consistency=sum(bool(v.consistent) for v in both) / len(both) if both else math.nan,
        verdicts=tuple(verdicts),
    )


async def head_to_head(
    judge: PairwiseJudge,
    prompts: Sequence[str],
    replies_x: Sequence[str],
    replies_y: Sequence[str],
    *,
    progress: bool = True,
    label: str = "head to head",
) -> HeadToHead:
    """X's replies against Y's, prompt by prompt, judged in both positions."""
    return tally(await judge_pairs(judge, prompts, replies_x, replies_y, progress=progress, label=label))


@dataclass(frozen=True)
class JudgeAgreement:
    """A second judge's verdicts on pairs the first judge labelled, compared with its labels."""

    pairs: int  # pairs re-judged (a sample of the first judge's usable labels)
    failed: int  # of those, verdicts the second judge could not give
    agreement: float  # same winner (A, B or tie), over pairs both judged; NaN if none
    decisive_pairs: int  # pairs where both judges picked a side (no tie)
    decisive_agreement: float  # same side, over decisive pairs; NaN if none
    mean_abs_p_diff: float  # mean |P_first(A) − P_second(A)|, over pairs both judged

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


async def judge_agreement(
    judge: PairwiseJudge,
    records: Sequence[PreferenceRecord],
    *,
    sample: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> JudgeAgreement:
    """Re-judge up to `sample` of `records` (a seeded sample of those with a usable, non-stand-in
    label) with `judge`, and compare its verdicts with the records'."""
    usable = [r for r in records if r.ok and not r.stand_in]
    chosen = random.Random(seed).sample(usable, min(sample, len(usable)))
    verdicts = await judge_pairs(
        judge,
        [r.prompt for r in chosen],
        [r.response_a for r in chosen],
        [r.response_b for r in chosen],
        progress=progress,
        label="re-judging pairs",
    )
    both = [(r, v) for r, v in zip(chosen, verdicts, strict=True) if v.ok and v.p_a is not None]
    decisive = [(r, v) for r, v in both if r.winner != "tie" and v.verdict != "tie"]
    return JudgeAgreement(
        pairs=len(chosen),
        failed=len(chosen) - len(both),
        agreement=sum(r.winner == v.verdict for r, v in both) / len(both) if both else math.nan,
        decisive_pairs=len(decisive),
        decisive_agreement=sum(r.winner == v.verdict for r, v in decisive) / len(decisive)
        if decisive
        else math.nan,
        mean_abs_p_diff=sum(abs((r.p_a or 0.0) - (v.p_a or 0.0)) for r, v in both) / len(both)
        if both
        else math.nan,
    )
