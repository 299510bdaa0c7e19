"""Judge-LLM rewards: a judge client, pointwise, reference and pairwise judges, tournaments.

The registered factories below take the judge as a table of `JudgeConfig` settings, so a
`rewardgym serve` config can host them:

    [[rewards]]
    name = "tournament"
    params = { judge = { base_url = "http://127.0.0.1:8001/v1", model = "gemma", api = "completions" } }
"""

from collections.abc import Mapping
from typing import Any

from rewards.judges.asking import (
    UNPARSEABLE_POLICIES,
    Judge,
    Unparseable,
    UnparseableVerdict,
    ask_for_verdict,
)
from rewards.judges.bradley_terry import bradley_terry
from rewards.judges.cache import JudgeCache
from rewards.judges.client import JudgeClient, JudgeReply, JudgeSampling, JudgeStats, JudgeUnavailable
from rewards.judges.config import JudgeConfig
from rewards.judges.pairwise import OrderVerdict, PairVerdict, PairwiseJudge
from rewards.judges.pointwise import PointwiseJudge, ReferenceJudge
from rewards.judges.prompts import (
    DEFAULT_CONSTITUTION,
    JudgeExample,
    JudgePrompt,
    pairwise_prompt,
    pointwise_prompt,
    reference_prompt,
    with_examples,
)
from rewards.judges.shared import SHARED_JUDGES, JudgeLease, SharedJudges, close_client
from rewards.judges.tournament import (
    SCHEDULES,
    SCORINGS,
    Matchup,
    Schedule,
    Scoring,
    Tournament,
    schedule_matchups,
)


def judge_pairwise(judge: Mapping[str, Any]) -> PairwiseJudge:
    """P(completion beats the baseline response in the sample's reference), both positions."""
    return JudgeConfig.from_mapping(judge).pairwise()


def judge_pointwise(judge: Mapping[str, Any], low: int = 1, high: int = 9) -> PointwiseJudge:
    """A judge's score from low to high by the judge's constitution or rubric, scaled to [0, 1]."""
    return JudgeConfig.from_mapping(judge).pointwise(low=low, high=high)


def judge_reference(judge: Mapping[str, Any]) -> ReferenceJudge:
    """P(the completion gives the same answer as the sample's reference), by a judge."""
    return JudgeConfig.from_mapping(judge).reference()


def tournament(
    judge: Mapping[str, Any],
    schedule: Schedule = "all_pairs",
    k: int = 4,
    scoring: Scoring = "win_rate",
    soft: bool = True,
) -> Tournament:
    """Group reward: the group's completions judged pairwise; win rate or Bradley–Terry strength."""
    return Tournament(
        JudgeConfig.from_mapping(judge).pairwise(), schedule=schedule, k=k, scoring=scoring, soft=soft
    )


__all__ = [
    "DEFAULT_CONSTITUTION",
    "SCHEDULES",
    "SCORINGS",
    "SHARED_JUDGES",
    "UNPARSEABLE_POLICIES",
    "Judge",
    "JudgeCache",
    "JudgeClient",
    "JudgeConfig",
    "JudgeExample",
    "JudgeLease",
    "JudgePrompt",
    "JudgeReply",
    "JudgeSampling",
    "JudgeStats",
    "JudgeUnavailable",
    "Matchup",
    "OrderVerdict",
    "PairVerdict",
    "PairwiseJudge",
    "PointwiseJudge",
    "ReferenceJudge",
    "Schedule",
    "Scoring",
    "SharedJudges",
    "Tournament",
    "Unparseable",
    "UnparseableVerdict",
    "ask_for_verdict",
    "bradley_terry",
    "close_client",
    "judge_pairwise",
    "judge_pointwise",
    "judge_reference",
    "pairwise_prompt",
    "pointwise_prompt",
    "reference_prompt",
    "schedule_matchups",
    "tournament",
    "with_examples",
]
