"""The pairwise preference environment: open-ended prompts, rewarded by a judge tournament.

With `reward_model=DIR` the same prompts are rewarded by a learned Bradley–Terry model
instead (indirect RLAIF), so the two set-ups train on identical tasks.

This is direct RLAIF: there is no gold answer; the G replies to one prompt are judged
against each other by a pairwise judge, and each reply's reward is its result in that
tournament (`rewards.judges.Tournament`, a group reward added when the group is done).
A single episode on its own scores 0 (plus an optional per-reply reward such as a length
penalty): the reward is only defined relative to the rest of the group.

The default judge is the embedded Gemma 3 270M served locally with
`rewardgym serve-model --model gemma-3-270m --port 8001`, judged few-shot through the
completions API; point `judge=` at any OpenAI-compatible endpoint instead.

Environments with the same judge endpoint settings share one judge client
(`rewards.judges.shared`): a group's G environments and all the groups of a run ask
through one connection pool, so the judge's `max_concurrency` bounds the whole run. Each
environment releases its share in `close()`; the last one closes the client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import Split, TaskSource, resolve_tasks
from rewards.base import GroupReward, Reward
from rewards.judges import JudgeConfig, Schedule, Scoring, Tournament
from rewards.judges.shared import SHARED_JUDGES, JudgeLease, SharedJudges
from rewards.types import Sample, Score

LOCAL_JUDGE: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8001/v1",
    "model": "gemma-3-270m",
    "api": "completions",
}
SYSTEM_PROMPT = "Follow the instruction. Answer briefly and helpfully."


def preference_tasks(
    tasks: TaskSource | str = "bundled:writing_prompts", split: Split = "all", eval_fraction: float = 0.2
) -> TaskSource:
    """The environment's prompts for a split (the same ones a `PreferenceEnv` with these settings plays)."""
    return resolve_tasks(tasks).split(split, eval_fraction=eval_fraction)


class GroupOnly(Reward):
    """A reply's own reward when the group tournament decides everything: 0, said so in info."""

    name = "group_only"

    async def compute(self, sample: Sample) -> Score:
        return Score(value=0.0, info={"note": "scored relative to its group by the tournament"})


class PreferenceEnv(MultiTurnEnv):
    """Single-turn open-ended prompts whose group reward is a pairwise judge tournament."""

    def __init__(
        self,
        tasks: TaskSource | str = "bundled:writing_prompts",
        *,
        judge: Mapping[str, Any] | JudgeConfig | None = None,
        tournament: GroupReward | None = None,
        schedule: Schedule = "all_pairs",
        k: int = 4,
        scoring: Scoring = "win_rate",
        soft: bool = True,
        reward: Reward | None = None,
        reward_model: str | None = None,
        split: Split = "all",
        eval_fraction: float = 0.2,
        system_prompt: str | None = SYSTEM_PROMPT,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        render_mode: str | None = None,
        judges: SharedJudges = SHARED_JUDGES,
    ) -> None:
        """`judge`: JudgeConfig settings (default: the local Gemma judge, `LOCAL_JUDGE`);
        `tournament`: a ready group reward instead (then judge/schedule/... are unused, and
        the caller owns and closes it).

        `reward_model`: the directory of a trained preference model (indirect RLAIF): each
        reply is scored by it on its own, and there is no tournament and no judge.
        `judges`: where the judge client is leased from (shared by equal settings)."""
        self._judge_lease: JudgeLease | None = None
        if reward_model is not None:
            if tournament is not None or judge is not None or reward is not None:
                raise ValueError(
                    "reward_model replaces the judge: give either reward_model or judge/tournament/reward"
                )
            from rewards.preference_model import PreferenceModelReward

            reward = PreferenceModelReward(reward_model)
        config = None
        if reward_model is None and tournament is None:
            config = JudgeConfig.from_mapping(judge if judge is not None else LOCAL_JUDGE)
            self._judge_lease = judges.lease(config)
        try:
            if config is not None and self._judge_lease is not None:
                pairwise = config.pairwise(self._judge_lease.client)
                tournament = Tournament(pairwise, schedule=schedule, k=k, scoring=scoring, soft=soft)
            super().__init__(
                preference_tasks(tasks, split, eval_fraction),
                reward or GroupOnly(),
                system_prompt=system_prompt,
                max_turns=1,
                max_tokens=max_tokens,
                token_counter=token_counter,
                group_reward=tournament,
                render_mode=render_mode,
            )
        except BaseException:
            if self._judge_lease is not None:
                self._judge_lease.release()
            raise

    def close(self) -> None:
        """Release this environment's share of the judge client (the last share closes it)."""
        if self._judge_lease is not None:
            self._judge_lease.release()
            self._judge_lease = None
        super().close()
