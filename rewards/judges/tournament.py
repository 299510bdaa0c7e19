"""Tournaments: the G completions of one prompt judged against each other, as a group reward.

This is the reward of direct RLAIF. Schedules (how many judge questions for G completions):
- "all_pairs": every pair, judged in both positions: G²−G questions.
- "one_way": every pair once, which response is shown first alternating: (G²−G)/2.
- "chunks": the group is shuffled into chunks of k (a lone leftover joins the last chunk);
  all pairs within a chunk, both positions.
- "random": each completion meets k random opponents (pairs deduplicated), both positions.

Scoring: "win_rate" (a win 1, a tie ½; with `soft`, the judge's probability instead of the
hard verdict) or "bradley_terry" (strengths θ with mean 0, which also weigh whom one beat).
All matchups are issued at once (the judge client bounds concurrency); `concurrent=False`
awaits every question one by one, as the anchors do, for comparison. Identical completions tie
without asking. A matchup the judge fails is left out and counted; a completion left with
no judged matchup gets an error, never a made-up score.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rewards.base import GroupReward
from rewards.judges.bradley_terry import bradley_terry
from rewards.judges.pairwise import PairVerdict, PairwiseJudge
from rewards.judges.prompts import prompt_text
from rewards.types import Sample, Score

Schedule = Literal["all_pairs", "one_way", "chunks", "random"]
Scoring = Literal["win_rate", "bradley_terry"]
SCHEDULES: tuple[str, ...] = ("all_pairs", "one_way", "chunks", "random")
SCORINGS: tuple[str, ...] = ("win_rate", "bradley_terry")
_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class Matchup:
    """Completions `a` and `b` (group indices) meet; `both_positions` or one order."""

    a: int
    b: int
    both_positions: bool = True
    swap_first: bool = False  # with one order: show b first


def schedule_matchups(size: int, schedule: Schedule, k: int, rng: random.Random) -> list[Matchup]:
    """The matchups of one group of `size` completions."""
    pairs = [(a, b) for a in range(size) for b in range(a + 1, size)]
    if schedule == "all_pairs":
        return [Matchup(a, b) for a, b in pairs]
    if schedule == "one_way":
        return [Matchup(a, b, both_positions=False, swap_first=n % 2 == 1) for n, (a, b) in enumerate(pairs)]
    if schedule == "chunks":
        order = list(range(size))
        rng.shuffle(order)
        chunks = [order[start : start + k] for start in range(0, size, k)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:  # a lone completion would meet no one
            lone = chunks.pop()
            chunks[-1] += lone
        return [
            Matchup(*sorted((x, y))) for chunk in chunks for i, x in enumerate(chunk) for y in chunk[i + 1 :]
        ]
    if schedule == "random":
        chosen: set[tuple[int, int]] = set()
        for a in range(size):
            others = [b for b in range(size) if b != a]
            for b in rng.sample(others, min(k, len(others))):
                chosen.add((min(a, b), max(a, b)))
        return [Matchup(a, b) for a, b in sorted(chosen)]
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


class Tournament(GroupReward):
    """A group reward from pairwise judge verdicts among the G completions of one prompt."""

    name = "tournament"

    def __init__(
        self,
        judge: PairwiseJudge,
        *,
        schedule: Schedule = "all_pairs",
        k: int = 4,
        scoring: Scoring = "win_rate",
        soft: bool = True,
        concurrent: bool = True,
        seed: int = 0,
        bt_prior: float = 0.1,
        name: str = "tournament",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        if k < 1 or (schedule == "chunks" and k < 2):
            raise ValueError(f"k must be at least 1 (2 for chunks), got {k}")
        self.judge = judge
        self.schedule: Schedule = schedule
        self.k = k
        self.scoring: Scoring = scoring
        self.soft = soft
        self.concurrent = concurrent
        self.seed = seed
        self.bt_prior = bt_prior
        self.name = name

    def matchups(self, samples: Sequence[Sample]) -> list[Matchup]:
        """This group's schedule; random parts are seeded by `seed` and the group's content."""
        key = "\x00".join([samples[0].task_id, *(s.completion for s in samples)])
        rng = random.Random(self.seed * 2**32 + zlib.crc32(key.encode()))
        return schedule_matchups(len(samples), self.schedule, self.k, rng)

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        if len(samples) < 2:
            raise ValueError(f"a tournament needs at least 2 completions, got {len(samples)}")
        prompt = prompt_text(samples[0])
        completions = [s.completion for s in samples]
        matchups = self.matchups(samples)

        async def play(m: Matchup) -> PairVerdict:
            if completions[m.a] == completions[m.b]:
                return PairVerdict(0.5, "tie", True if m.both_positions else None)
            return await self.judge.compare(
                prompt,
                completions[m.a],
                completions[m.b],
                both_positions=m.both_positions,
                swap_first=m.swap_first,
                sequential=not self.concurrent,
            )

        if self.concurrent:
            verdicts = list(await asyncio.gather(*(play(m) for m in matchups)))
        else:
            verdicts = [await play(m) for m in matchups]
        return self._scores(len(samples), matchups, verdicts)

    def _scores(self, size: int, matchups: Sequence[Matchup], verdicts: Sequence[PairVerdict]) -> list[Score]:
        outcomes: list[tuple[int, int, float]] = []  # (a, b, how much a won)
        wins_G: list[list[float]] = [[] for _ in range(size)]
        errors: list[str] = []
        for m, v in zip(matchups, verdicts, strict=True):
            if v.error is not None or v.p_a is None or v.verdict is None:
                errors.append(v.error or "no verdict")
                continue
            y = v.p_a if self.soft else _OUTCOME[v.verdict]
            outcomes.append((m.a, m.b, y))
            wins_G[m.a].append(y)
            wins_G[m.b].append(1.0 - y)
        judged = [v for v in verdicts if v.error is None]
        both = [v for v in judged if v.consistent is not None]
        metrics = {
            "matchups": float(len(matchups)),
            "failed_matchups": float(len(errors)),
            # position orders behind the judged matchups; every call, resamples included, is in
            # the judge client's counters
            "orders_judged": float(sum(len(v.orders) for v in verdicts)),
            "tie_rate": sum(v.verdict == "tie" for v in judged) / len(judged) if judged else float("nan"),
            "position_consistency": sum(bool(v.consistent) for v in both) / len(both)
            if both
            else float("nan"),
        }
        strengths_G = (
            bradley_terry(size, outcomes, prior=self.bt_prior) if self.scoring == "bradley_terry" else None
        )
        scores = []
        for i, wins in enumerate(wins_G):
            if not wins:
                why = errors[0] if errors else "no matchup was scheduled for it"
                error = f"{self.name}: no judged matchup for completion {i}: {why}"
                scores.append(Score.failure(error, group_metrics=metrics))
                continue
            win_rate = sum(wins) / len(wins)
            components = {"win_rate": win_rate, "matches": float(len(wins))}
            value = win_rate
            if strengths_G is not None:
                value = float(strengths_G[i])
                components["bt_strength"] = value
            scores.append(Score(value=value, components=components, info={"group_metrics": metrics}))
        return scores
