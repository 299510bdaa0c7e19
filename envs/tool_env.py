"""The tool-calling environment: the model calls tools until it answers without one.

Each reply is read for tool calls (`ToolCallParser`: native `tool_calls`, `<tool_call>`
JSON, `<python>`-style tags). Calls run in order through the `Toolbox`, and each result
comes back as one `tool` message; the model then continues. The episode ends when a reply
makes no tool call (that reply is the final answer, scored by the answer verifier), when
a reply asks for more calls than the tool budget has left (truncated), at the turn or
token budget (truncated), or on a tool error of a kind listed in `end_on_errors`.

Every failed call (unreadable, unknown tool, bad arguments, raised, timed out) is told to
the model in its tool message and counted in `info["metrics"]`; none ends the episode
unless asked to. For text formats the environment stops the policy's reply right after
a call's closing tag (`reply_stops`), so the model cannot invent the tool's answer. With
native tools a chat server parses the calls and stops by itself, but a local engine
renders the schemas through the chat template and the model writes its calls as text
(`<tool_call>...</tool_call>`): the same closing tags are offered as `local_reply_stops`,
which the rollout applies only to engines that sample tokens themselves.

A failure of a tool's machinery (`ToolInfrastructureError`: the sandbox broke) is not a
tool message: it propagates, and the rollout records the episode as an environment error.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from envs.core import Episode, MultiTurnEnv, Reaction
from envs.tasks import Split, Task, TaskSource
from envs.tool_tasks import resolve_tool_tasks
from envs.tools.builtin import resolve_tools
from envs.tools.parsing import ToolCall, ToolCallParser
from envs.tools.shaping import TOOL_USE_KEY, ToolUseShaping
from envs.tools.tool import TOOL_ERROR_KINDS, Tool, ToolErrorKind, ToolResult, ToolState
from envs.tools.toolbox import Toolbox
from rewards.base import Reward
from rewards.compose import WeightedSum
from rewards.extract import DEFAULT_FORMATS
from rewards.judges import JudgeConfig
from rewards.judges.shared import SHARED_JUDGES, JudgeLease, SharedJudges
from rewards.math_equivalence import MathEquivalence
from rewards.rules import ExactMatch
from rewards.types import Message, Sample
from sandbox import Sandbox

PromptStyle = Literal["json", "tags", "native"]
AnswerCheck = Literal["math", "exact", "judge"]
ANSWER_INSTRUCTION = (
    "When you know the answer, reply without a tool call and give the final answer as \\boxed{answer}."
)
JSON_PROMPT = """You can call tools. The tools, as JSON schemas:
{tools}

To call a tool, write
<tool_call>{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}</tool_call>
The result comes back in the next message. You may make up to {budget} tool calls. {answer}"""
TAGS_PROMPT = """You can use tools by writing a tag; the result comes back in the next message.
{tags}
You may make up to {budget} tool calls. {answer}"""
NATIVE_PROMPT = "Use the tools you are given when they help (up to {budget} calls). {answer}"
# One worked exchange with the python tool, for base models that cannot follow the prompt alone.
DEMO_QUESTION = "What is 123456 * 654321? Give the final answer as \\boxed{answer}."
DEMO_CODE = "print(123456 * 654321)"
DEMO_RESULT = "80779853376\n"
DEMO_ANSWER = "The product is \\boxed{80779853376}."


@dataclass
class ToolUse:
    """The tool side of one episode: counts for metrics and shaping, and each tool's state."""

    states: dict[str, ToolState]
    calls: int = 0  # calls that ran (successfully or not)
    succeeded: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by ToolErrorKind
    truncated_outputs: int = 0
    seconds: float = 0.0

    def record(self, result: ToolResult, *, ran: bool = True) -> None:
        self.calls += ran
        if result.error is not None:
            self.errors[result.error] += 1
        else:
            self.succeeded += 1
        self.truncated_outputs += result.truncated
        self.seconds += result.seconds

    def metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {
            "tool_calls": self.calls,
            "tool_errors": sum(self.errors.values()),
            "tool_truncated": self.truncated_outputs,
            "tool_seconds": round(self.seconds, 4),
        }
        metrics.update({f"tool_errors_{kind}": self.errors[kind] for kind in TOOL_ERROR_KINDS})
        return metrics


def answer_reward(
    answer: AnswerCheck | Reward,
    tool_bonus: float = 0.0,
    tool_error_penalty: float = 0.0,
    *,
    judge: Mapping[str, Any] | JudgeConfig | None = None,
) -> Reward:
    """The final-answer verifier, plus tool-use shaping when either weight is set.

    `answer="judge"` asks the judge described by `judge` (`JudgeConfig` settings: base_url,
    model, api, ...) whether the final reply gives the task's reference answer; the value
    is the judge's P(yes) (`rewards.judges.ReferenceJudge`)."""
    if judge is not None and answer != "judge":
        raise ValueError(f"judge settings are only used with answer='judge', not answer={answer!r}")
    if isinstance(answer, Reward):
        verifier = answer
    elif answer == "math":
        verifier = MathEquivalence(formats=DEFAULT_FORMATS)
    elif answer == "exact":
        verifier = ExactMatch(formats=DEFAULT_FORMATS)
    elif answer == "judge":
        if judge is None:
            raise ValueError(
                "answer='judge' needs judge settings, e.g. judge={'base_url': 'http://127.0.0.1:8001/v1', "
                "'model': 'gemma-3-270m', 'api': 'completions'}"
            )
        verifier = JudgeConfig.from_mapping(judge, where="ToolEnv judge").reference()
    else:
        raise ValueError(f"answer must be 'math', 'exact', 'judge' or a Reward, got {answer!r}")
    if not (tool_bonus or tool_error_penalty):
        return WeightedSum([(verifier, 1.0)], name="tool_env")  # names the verifier's component
    return WeightedSum(
        [(verifier, 1.0), (ToolUseShaping(tool_bonus, tool_error_penalty), 1.0)], name="tool_env"
    )


class ToolEnv(MultiTurnEnv):
    """Tasks solved with tools (python, calculator, search, or your own functions).

    `answer`: "math", "exact", "judge" (with `judge` settings; environments with equal
    endpoint settings share one judge client from `judges`, released in `close()`) or a
    `Reward`.
    `tool_timeout_s` / `tool_max_output_chars`: limits of the built-in tools named in
    `tools` (None: each tool's default); a `Tool` you pass keeps its own."""

    def __init__(
        self,
        tasks: TaskSource | str = "tool_math",
        *,
        tools: Sequence[str | Tool | Callable[..., Any]] = ("python", "calculator"),
        prompt_style: PromptStyle = "json",
        answer: AnswerCheck | Reward = "math",
        judge: Mapping[str, Any] | JudgeConfig | None = None,
        max_tool_calls: int = 6,
        max_turns: int | None = 8,
        end_on_errors: Sequence[ToolErrorKind] = (),
        tool_bonus: float = 0.0,
        tool_error_penalty: float = 0.0,
        system_prompt: str | None = None,
        few_shot: int = 0,
        split: Split = "all",
        eval_fraction: float = 0.1,
        sandbox: Sandbox | None = None,
        python_stateful: bool = True,
        corpus: str = "islands",
        tool_timeout_s: float | None = None,
        tool_max_output_chars: int | None = None,
        reward: Reward | None = None,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        render_mode: str | None = None,
        judges: SharedJudges = SHARED_JUDGES,
    ) -> None:
        if max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0, got {max_tool_calls}")
        if prompt_style not in ("json", "tags", "native"):
            raise ValueError(f"prompt_style must be 'json', 'tags' or 'native', got {prompt_style!r}")
        unknown = [kind for kind in end_on_errors if kind not in TOOL_ERROR_KINDS]
        if unknown:
            raise ValueError(f"unknown tool error kind(s) {unknown}; the kinds are {list(TOOL_ERROR_KINDS)}")
        self.toolbox = Toolbox(
            resolve_tools(
                tools,
                sandbox=sandbox,
                python_stateful=python_stateful,
                corpus=corpus,
                timeout_s=tool_timeout_s,
                max_output_chars=tool_max_output_chars,
            )
        )
        self.parser = ToolCallParser(tags=self.toolbox.tag_tools())
        if few_shot not in (0, 1):
            raise ValueError(f"few_shot must be 0 or 1 (one worked python exchange), got {few_shot}")
        if few_shot and "python" not in self.toolbox.tools:
            raise ValueError("the few-shot demonstration uses the python tool; add 'python' to tools")
        self.prompt_style = prompt_style
        self.few_shot = few_shot
        self.max_tool_calls = max_tool_calls
        self.end_on_errors = frozenset(end_on_errors)
        task_source = resolve_tool_tasks(tasks).split(split, eval_fraction=eval_fraction)
        self._judge_lease: JudgeLease | None = None
        if reward is None and answer == "judge" and judge is not None:  # one client per endpoint
            config = JudgeConfig.from_mapping(judge, where="ToolEnv judge")
            self._judge_lease = judges.lease(config)
            answer, judge = config.reference(self._judge_lease.client), None
        try:
            super().__init__(
                task_source,
                reward or answer_reward(answer, tool_bonus, tool_error_penalty, judge=judge),
                system_prompt=system_prompt if system_prompt is not None else self.tools_prompt(),
                max_turns=max_turns,
                max_tokens=max_tokens,
                token_counter=token_counter,
                render_mode=render_mode,
            )
        except BaseException:
            if self._judge_lease is not None:
                self._judge_lease.release()
            raise
        if prompt_style == "native":
            self.policy_tools = self.toolbox.schemas
            self.local_reply_stops = self.parser.closing_tags  # a chat server parses calls itself
        else:
            self.reply_stops = self.parser.closing_tags

    def close(self) -> None:
        """Release this environment's share of the judge client (the last share closes it)."""
        if self._judge_lease is not None:
            self._judge_lease.release()
            self._judge_lease = None
        super().close()

    def tools_prompt(self) -> str:
        """The system prompt that teaches the model the tools and how to call them.

        The tags style needs every tool to have a tag form (one text argument); with any
        other tool in the box it describes all of them as JSON schemas instead."""
        budget = self.max_tool_calls
        if self.prompt_style == "native":
            return NATIVE_PROMPT.format(budget=budget, answer=ANSWER_INSTRUCTION)
        if self.prompt_style == "tags" and set(self.parser.tags) == set(self.toolbox.names):
            tags = "\n".join(
                f"<{name}>{tag.argument}</{name}>: {self.toolbox.tools[name].description}"
                for name, tag in self.parser.tags.items()
            )
            return TAGS_PROMPT.format(tags=tags, budget=budget, answer=ANSWER_INSTRUCTION)
        return JSON_PROMPT.format(tools=self.toolbox.describe(), budget=budget, answer=ANSWER_INSTRUCTION)

    def opening(self, task: Task) -> list[Message]:
        messages = task.messages(self.system_prompt)
        if not self.few_shot:
            return messages
        at = 1 if messages and messages[0]["role"] == "system" else 0
        return messages[:at] + self.demonstration() + messages[at:]

    def demonstration(self) -> list[Message]:
        """The worked python exchange, in this environment's call format."""
        arguments = {"code": DEMO_CODE}
        if self.prompt_style == "native":
            function = {"name": "python", "arguments": json.dumps(arguments)}
            call = {"id": "demo_0", "type": "function", "function": function}
            reply: Message = {"role": "assistant", "content": None, "tool_calls": [call]}  # type: ignore[list-item]
        elif self.prompt_style == "tags":
            reply = {"role": "assistant", "content": f"<python>{DEMO_CODE}</python>"}
        else:
            call_json = json.dumps({"name": "python", "arguments": arguments})
            reply = {"role": "assistant", "content": f"<tool_call>{call_json}</tool_call>"}
        result: Message = {"role": "tool", "tool_call_id": "demo_0", "name": "python", "content": DEMO_RESULT}
        return [
            {"role": "user", "content": DEMO_QUESTION},
            reply,
            result,
            {"role": "assistant", "content": DEMO_ANSWER},
        ]

    async def areset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        observation, info = await super().areset(seed=seed, options=options)
        assert self.episode is not None
        self.episode.state["tool_use"] = ToolUse(self.toolbox.new_states())
        return observation, info

    async def react(self, episode: Episode) -> Reaction:
        use: ToolUse = episode.state["tool_use"]
        calls = self.parser.parse(episode.messages[-1], call_prefix=f"call_{episode.turns}")
        if not calls:
            return Reaction(done=True)  # the final answer
        if self._out_of_budget(episode):
            return Reaction(done=True, truncated=True)  # no turn left to read the results
        results: list[Message] = []
        for call in calls:
            if use.calls >= self.max_tool_calls:
                use.record(ToolResult("Error: the tool budget is used up", "budget"), ran=False)
                return Reaction(done=True, truncated=True)
            result = await self.toolbox.run(call, use.states)
            use.record(result)
            results.append(tool_message(call, result))
            if result.error in self.end_on_errors:
                return Reaction(done=True)
        return Reaction(messages=tuple(results))

    def make_sample(self, episode: Episode) -> Sample:
        sample = super().make_sample(episode)
        use: ToolUse = episode.state["tool_use"]
        counts = {"calls": use.calls, "succeeded": use.succeeded, "errors": sum(use.errors.values())}
        return dataclasses.replace(sample, info={**sample.info, TOOL_USE_KEY: counts})

    @staticmethod
    def _info(episode: Episode) -> dict[str, Any]:
        info = MultiTurnEnv._info(episode)
        use: ToolUse | None = episode.state.get("tool_use")
        if use is not None:
            info["metrics"].update(use.metrics())
        return info


def tool_message(call: ToolCall, result: ToolResult) -> Message:
    """The `tool` message answering `call`."""
    message: Message = {"role": "tool", "tool_call_id": call.id, "content": result.content}
    if call.name:
        message["name"] = call.name
    return message
