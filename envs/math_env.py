"""The math environment: a problem, a verifiable answer, and optionally a few retries.

Single-turn (`max_attempts=1`): one reply, scored by math equivalence of its final answer.
Multi-turn: a wrong answer gets feedback ("That is not right, try again") until the model
is right or has used `max_attempts` replies; a reply the verifier fails on (timeout, crash)
ends the episode with that error, a NaN reward. For base models, `few_shot` puts worked
examples in front of the problem so that the model learns the answer format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envs.core import Episode, MultiTurnEnv, Reaction
from envs.tasks import Split, Task, TaskSource, bundled_tasks, resolve_tasks
from rewards.base import Reward
from rewards.compose import WeightedSum
from rewards.extract import DEFAULT_FORMATS, AnswerFormat, check_formats
from rewards.math_equivalence import MathEquivalence
from rewards.rules import FormatReward
from rewards.types import Message

SYSTEM_PROMPT = "Solve the math problem. Show brief working, then give the final answer as \\boxed{answer}."
FEEDBACK = "That is not right. Check your working and try again. Give the final answer as \\boxed{answer}."


def math_reward(
    formats: Sequence[AnswerFormat] = DEFAULT_FORMATS,
    format_weight: float = 0.0,
    timeout_s: float | None = None,
) -> Reward:
    """Math equivalence of the final answer, plus a `\\boxed{}` format term (0 weight: reported only)."""
    return WeightedSum(
        [
            (MathEquivalence(formats=formats, timeout_s=timeout_s), 1.0),
            (FormatReward("boxed"), format_weight),
        ],
        name="math_env",
    )


class MathEnv(MultiTurnEnv):
    """Math problems with verifiable answers, single- or multi-turn."""

    def __init__(
        self,
        tasks: TaskSource | str = "bundled:math_basic",
        *,
        split: Split = "all",
        eval_fraction: float = 0.2,
        max_attempts: int = 1,
        feedback: str = FEEDBACK,
        few_shot: int = 0,
        system_prompt: str | None = SYSTEM_PROMPT,
        answer_formats: Sequence[AnswerFormat] = DEFAULT_FORMATS,
        format_weight: float = 0.0,
        verifier_timeout_s: float | None = None,
        reward: Reward | None = None,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        answer_formats = check_formats(answer_formats)  # an unknown format fails here, not on every item
        examples = bundled_tasks("math_fewshot")
        if not 0 <= few_shot <= len(examples):
            raise ValueError(f"few_shot must be between 0 and {len(examples)}, got {few_shot}")
        super().__init__(
            resolve_tasks(tasks).split(split, eval_fraction=eval_fraction),
            reward or math_reward(answer_formats, format_weight, verifier_timeout_s),
            system_prompt=system_prompt,
            max_turns=max_turns,
            max_tokens=max_tokens,
            token_counter=token_counter,
            render_mode=render_mode,
        )
        self.max_attempts = max_attempts
        self.feedback = feedback
        self.examples: list[Message] = []
        for example in examples[:few_shot]:
            self.examples += [
                {"role": "user", "content": str(example.prompt)},
                {"role": "assistant", "content": example.info["solution"]},
            ]

    def opening(self, task: Task) -> list[Message]:
        messages = task.messages(self.system_prompt)
        at = 1 if messages and messages[0]["role"] == "system" else 0
        return messages[:at] + [dict(m) for m in self.examples] + messages[at:]  # type: ignore[misc]

    async def react(self, episode: Episode) -> Reaction:
        score = await self.score(episode)
        # A verifier failure (a timeout on a hostile answer) ends the episode as an error item:
        # telling the model "not right" would score the reply as wrong without knowing.
        if score.error is not None or score.passed or episode.turns >= self.max_attempts:
            return Reaction(done=True, score=score)
        return Reaction(messages=({"role": "user", "content": self.feedback},), score=score)
