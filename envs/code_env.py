"""The code environment: write a program, have it tested in the sandbox, fix what failed.

Each reply's code (its last ```python block) runs against the task's tests, one sandbox run
per reply. If some fail and attempts are left, the environment answers with the failing
tests and why (wrong output, exception, timeout), and the model tries again, up to
`max_attempts` replies. The episode's reward is the *final* attempt's score: an episode
that ends on broken code scores as broken, whatever came before, so the policy is rewarded
for ending right, not for having once been right. A sandbox failure ends the episode with
an error score (NaN), never with feedback about the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envs.code_tasks import resolve_code_tasks
from envs.core import Episode, MultiTurnEnv, Reaction
from envs.tasks import Split, Task, TaskSource, bundled_tasks
from rewards.base import Reward
from rewards.code_tests import CodeTestsReward, CodeTestSuite
from rewards.types import Message
from sandbox import Sandbox

SYSTEM_PROMPT = "You are an expert programmer. Answer with your code in a single ```python code block."
STDIO_PROMPT = (
    "{problem}\n\nWrite a complete Python program that reads the input from standard input and "
    "prints the answer to standard output. Give the program in a ```python code block."
)
FUNCTION_PROMPT = (
    "Complete the following Python function.\n\n```python\n{problem}```\n\n"
    "Give the complete function, including its signature and any imports it needs, "
    "in a ```python code block."
)
ASSERTS_PROMPT = "{problem}\n\nGive your Python code in a ```python code block."
PROMPTS = {"stdio": STDIO_PROMPT, "function": FUNCTION_PROMPT, "asserts": ASSERTS_PROMPT}
FEEDBACK_HEADER = "Your code failed {failed} of {total} tests:"
FEEDBACK_FOOTER = "Fix the code and give the complete corrected program in a ```python code block."
GENERIC_FEEDBACK = f"Your code did not pass the tests. {FEEDBACK_FOOTER}"
REASON_CHARS = 300


def feedback_message(results: list[dict[str, Any]], max_failures: int = 3) -> str:
    """The failing tests and why, grouped when they failed the same way."""
    failures = [r for r in results if not r["passed"]]
    by_reason: dict[str, list[str]] = {}
    for failure in failures:
        by_reason.setdefault(failure["reason"], []).append(failure["name"])
    lines = [FEEDBACK_HEADER.format(failed=len(failures), total=len(results))]
    for reason, names in list(by_reason.items())[:max_failures]:
        shown = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."
        label = ", ".join(names[:3]) + (" and others" if len(names) > 3 else "")
        lines.append(f"- {label}: {shown}")
    if len(by_reason) > max_failures:
        lines.append("- (more failures not shown)")
    lines.append(FEEDBACK_FOOTER)
    return "\n".join(lines)


class CodeEnv(MultiTurnEnv):
    """Programming problems checked by tests in the sandbox, with retries on failure."""

    def __init__(
        self,
        tasks: TaskSource | str = "bundled:code_basic",
        *,
        split: Split = "all",
        eval_fraction: float = 0.2,
        max_attempts: int = 3,
        few_shot: int = 0,
        system_prompt: str | None = SYSTEM_PROMPT,
        sandbox: Sandbox | None = None,
        timeout_s: float = 6.0,
        memory_mb: int = 512,
        all_pass_weight: float = 1.0,
        pass_fraction_weight: float = 0.0,
        feedback_failures: int = 3,
        reward: Reward | None = None,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        examples = bundled_tasks("code_fewshot")
        per_kind = min(sum(1 for e in examples if e.info["kind"] == kind) for kind in PROMPTS)
        if not 0 <= few_shot <= per_kind:
            raise ValueError(f"few_shot must be between 0 and {per_kind}, got {few_shot}")
        super().__init__(
            resolve_code_tasks(tasks).split(split, eval_fraction=eval_fraction),
            reward
            or CodeTestsReward(
                sandbox=sandbox,
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                all_pass_weight=all_pass_weight,
                pass_fraction_weight=pass_fraction_weight,
            ),
            system_prompt=system_prompt,
            max_turns=max_turns,
            max_tokens=max_tokens,
            token_counter=token_counter,
            render_mode=render_mode,
        )
        self.max_attempts = max_attempts
        self.feedback_failures = feedback_failures
        self.examples: dict[str, list[Message]] = {kind: [] for kind in PROMPTS}
        for kind in PROMPTS:
            for example in [e for e in examples if e.info["kind"] == kind][:few_shot]:
                self.examples[kind] += [
                    {"role": "user", "content": PROMPTS[kind].format(problem=example.prompt)},
                    {"role": "assistant", "content": example.info["reply"]},
                ]

    def opening(self, task: Task) -> list[Message]:
        if not isinstance(task.prompt, str):
            return task.messages(self.system_prompt)  # ready-made messages are used as given
        kind = task.answer.kind if isinstance(task.answer, CodeTestSuite) else "asserts"
        messages = Task(task.id, PROMPTS[kind].format(problem=task.prompt)).messages(self.system_prompt)
        at = 1 if messages[0]["role"] == "system" else 0
        return messages[:at] + [dict(m) for m in self.examples[kind]] + messages[at:]  # type: ignore[misc]

    async def react(self, episode: Episode) -> Reaction:
        score = await self.score(episode)
        if score.error is not None or score.passed or episode.turns >= self.max_attempts:
            return Reaction(done=True, score=score)
        results = score.info.get("tests")
        feedback = feedback_message(results, self.feedback_failures) if results else GENERIC_FEEDBACK
        return Reaction(messages=({"role": "user", "content": feedback},), score=score)

    @staticmethod
    def _info(episode: Episode) -> dict[str, Any]:
        info = MultiTurnEnv._info(episode)
        score = episode.last_score
        if score is not None and "num_tests" in score.info:
            info["metrics"]["tests_passed"] = score.info["passed_tests"]
            info["metrics"]["tests_total"] = score.info["num_tests"]
        info["metrics"]["attempts"] = episode.turns
        return info
