"""Rewards: one protocol for every source of reward, rule verifiers, and their registry."""

from rewards.base import FunctionReward, GroupReward, Reward, reward_function
from rewards.client import RemoteRewardError, RewardClient, RewardServerError, RewardServerUnavailable
from rewards.code_tests import (
    AssertTest,
    CodeTestHarness,
    CodeTestReport,
    CodeTestResult,
    CodeTestsReward,
    CodeTestSuite,
    HarnessError,
    IOTest,
)
from rewards.compose import WeightedSum
from rewards.extract import extract_answer, extract_answer_line, extract_boxed, extract_code, extract_tag
from rewards.judges import judge_pairwise, judge_pointwise, judge_reference, tournament
from rewards.math_equivalence import MathEquivalence, MathVerifier, verify_answer
from rewards.registry import (
    UnknownRewardError,
    describe_reward,
    load_reward_plugins,
    make_reward,
    register_reward,
    reward_names,
)
from rewards.remote import RemoteGroupReward, RemoteReward, remote_reward
from rewards.rules import (
    ExactMatch,
    FormatReward,
    JsonSchemaReward,
    RegexMatch,
    SoftOverlongPenalty,
    normalize_text,
    soft_overlong_penalty,
)
from rewards.types import Message, Sample, Score, ToolCall, message
from rewards.worker_pool import WorkerCrashed, WorkerError, WorkerPool, WorkerTimeout

for _name, _factory in {
    "math": MathEquivalence,
    "exact_match": ExactMatch,
    "regex": RegexMatch,
    "format": FormatReward,
    "json_schema": JsonSchemaReward,
    "soft_overlong": SoftOverlongPenalty,
    "code_tests": CodeTestsReward,
    "remote": remote_reward,
    "judge_pairwise": judge_pairwise,
    "judge_pointwise": judge_pointwise,
    "judge_reference": judge_reference,
    "tournament": tournament,
}.items():
    register_reward(_name, _factory)


def preference_model_reward(path: str, batch_size: int = 32, device: str | None = None) -> Reward:
    """A Bradley–Terry reward model trained on judge preferences (indirect RLAIF).

    Imports torch only when built (rewards.preference_model), so `rewards` stays importable without it.
    """
    from rewards.preference_model import PreferenceModelReward

    return PreferenceModelReward(path, batch_size=batch_size, device=device)


register_reward("preference_model", preference_model_reward)
load_reward_plugins()

__all__ = [
    "AssertTest",
    "CodeTestHarness",
    "CodeTestReport",
    "CodeTestResult",
    "CodeTestSuite",
    "CodeTestsReward",
    "ExactMatch",
    "FormatReward",
    "FunctionReward",
    "GroupReward",
    "HarnessError",
    "IOTest",
    "JsonSchemaReward",
    "MathEquivalence",
    "MathVerifier",
    "Message",
    "RegexMatch",
    "RemoteGroupReward",
    "RemoteReward",
    "RemoteRewardError",
    "Reward",
    "RewardClient",
    "RewardServerError",
    "RewardServerUnavailable",
    "Sample",
    "Score",
    "SoftOverlongPenalty",
    "ToolCall",
    "UnknownRewardError",
    "WeightedSum",
    "WorkerCrashed",
    "WorkerError",
    "WorkerPool",
    "WorkerTimeout",
    "describe_reward",
    "extract_answer",
    "extract_answer_line",
    "extract_boxed",
    "extract_code",
    "extract_tag",
    "load_reward_plugins",
    "make_reward",
    "message",
    "normalize_text",
    "register_reward",
    "reward_function",
    "reward_names",
    "soft_overlong_penalty",
    "verify_answer",
]
