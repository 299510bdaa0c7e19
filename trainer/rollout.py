"""Playing one episode: an environment and an engine taking turns until the episode ends.

A failure of the policy (server down) or of the environment ends that episode with an
error recorded on it; it never propagates to the other episodes of a run.

For training, pass a `TokenLog`: the engine then continues the episode's own token
sequence (`generate_ids`), and the log records every token with a loss mask (only sampled
tokens are trained on) and the engine's sampling logprobs, so nothing is re-tokenized.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import Task
from rewards.types import Message
from trainer.engines.base import Engine, Generation, SamplingParams, ToolSchemas
from trainer.engines.chat_format import ChatRenderer


@dataclass(frozen=True)
class EpisodeResult:
    """One finished (or failed) episode, as the evaluator records it."""

    env_name: str
    task_id: str
    sample_index: int
    messages: tuple[Message, ...]
    reward: float  # the episode's return; NaN when the reward or the episode failed
    components: Mapping[str, float]
    passed: bool | None
    reward_error: str | None
    error: str | None  # the policy or the environment failed ("policy: ...", "env: ...")
    turns: int
    num_tokens: int
    terminated: bool
    truncated: bool
    finish_reasons: tuple[str, ...]
    seconds: float
    generations: tuple[Generation, ...] = field(default=(), repr=False)
    env_seconds: float = 0.0  # inside the environment (its reward included)
    prompt_messages: int = 0  # how many of `messages` the environment opened with
    metrics: Mapping[str, float] = field(default_factory=dict)  # the environment's own (tool calls, ...)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record for per-sample output (generations' token ids left out)."""
        return {
            "env": self.env_name,
            "task_id": self.task_id,
            "sample": self.sample_index,
            "reward": None if math.isnan(self.reward) else self.reward,
            "passed": self.passed,
            "components": {k: (None if math.isnan(v) else v) for k, v in self.components.items()},
            "reward_error": self.reward_error,
            "error": self.error,
            "turns": self.turns,
            "num_tokens": self.num_tokens,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "finish_reasons": list(self.finish_reasons),
            "seconds": round(self.seconds, 3),
            "metrics": dict(self.metrics),
            "messages": list(self.messages),
        }


class TokenLog:
    """The token sequence of one episode, built from the engine's own ids.

    Prompt and environment tokens (feedback, tool results) have loss mask 0; each sampled
    reply has mask 1 and its sampling logprobs. `env_spans` mark where the environment's
    tokens were inserted, as `[begin, end)` token positions; `tool_spans` are those that
    carry tool results. Each span runs through the opening of the next assistant turn, so
    `end` is where the model resumes (the ARPO trainer branches there).
    """

    def __init__(self, renderer: ChatRenderer, tools: ToolSchemas | None = None) -> None:
        self.renderer = renderer
        self.tools = tools  # schemas the chat template renders into the prompt
        self.token_ids: list[int] = []
        self.loss_mask: list[bool] = []
        self.sampler_logprobs: list[float] = []
        self.env_spans: list[tuple[int, int]] = []
        self.tool_spans: list[tuple[int, int]] = []
        self.prompt_length = 0

    def start(self, messages: list[Message]) -> None:
        self._extend(self.renderer.prompt_ids(messages, tools=self.tools), sampled=False)
        self.prompt_length = len(self.token_ids)

    def add_reply(self, generation: Generation) -> None:
        if generation.logprobs_T and len(generation.logprobs_T) != len(generation.token_ids):
            raise ValueError("the engine returned a different number of logprobs than tokens")
        self._extend(list(generation.token_ids), sampled=True, logprobs=generation.logprobs_T)

    def add_environment(self, history: list[Message], new: list[Message], reply: Generation) -> None:
        begin = len(self.token_ids)
        ids = self.renderer.continuation_ids(history, new, reply.token_ids, tools=self.tools)
        self._extend(ids, sampled=False)
        self.env_spans.append((begin, len(self.token_ids)))
        if any(message["role"] == "tool" for message in new):
            self.tool_spans.append((begin, len(self.token_ids)))

    def _extend(self, ids: list[int], *, sampled: bool, logprobs: tuple[float, ...] = ()) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([sampled] * len(ids))
        self.sampler_logprobs.extend(logprobs or [0.0] * len(ids))


async def play_episode(
    env: MultiTurnEnv,
    engine: Engine,
    params: SamplingParams,
    *,
    task: Task,
    env_name: str,
    seed: int | None = None,
    sample_index: int = 0,
    tokens: TokenLog | None = None,
) -> EpisodeResult:
    """Run `task` in `env` with replies from `engine` until the episode ends or fails.

    With `tokens`, every turn continues the token sequence it records (see `TokenLog`).
    The environment's `reply_stops` end each reply after a tool call's closing tag, and its
    `policy_tools` go to the engine as native tool schemas.
    """
    if env.reply_stops:
        params = replace(params, stop_after=tuple(dict.fromkeys(params.stop_after + env.reply_stops)))
    start = time.monotonic()
    generations: list[Generation] = []
    total = env_seconds = 0.0
    terminated = truncated = False
    info: dict[str, Any] = {}
    error: str | None = None
    messages: list[Message] = []
    prompt_messages = 0
    try:
        messages, info = await env.areset(seed=seed, options={"task": task})
        prompt_messages = len(messages)
        if tokens is not None:
            tokens.start(messages)
    except Exception as exc:
        error = f"env: {type(exc).__name__}: {exc}"
    while error is None and not (terminated or truncated):
        budget = env.tokens_left
        turn_params = (
            params if budget is None else replace(params, max_tokens=max(1, min(params.max_tokens, budget)))
        )
        if turn_params.seed is not None:  # each turn its own draw, still reproducible
            turn_params = replace(turn_params, seed=turn_params.seed + 7919 * len(generations))
        try:
            if tokens is None:
                generation = await engine.generate(messages, turn_params, tools=env.policy_tools)
            else:
                generation = await engine.generate_ids(tokens.token_ids, turn_params)
                tokens.add_reply(generation)
        except Exception as exc:
            error = f"policy: {type(exc).__name__}: {exc}"
            break
        generations.append(generation)
        history_length = len(messages)
        step_start = time.monotonic()
        try:
            messages, reward, terminated, truncated, info = await env.astep(
                _action(generation), num_tokens=generation.num_tokens
            )
            if tokens is not None and not (terminated or truncated):
                history = messages[: history_length + 1]
                tokens.add_environment(history, messages[history_length + 1 :], generation)
        except Exception as exc:
            error = f"env: {type(exc).__name__}: {exc}"
            break
        finally:
            env_seconds += time.monotonic() - step_start
        total += reward
    return EpisodeResult(
        env_name=env_name,
        task_id=task.id,
        sample_index=sample_index,
        messages=tuple(messages),
        reward=math.nan if error else total,
        components=dict(info.get("reward_components", {})),
        passed=None if error else info.get("passed"),
        reward_error=info.get("reward_error"),
        error=error,
        turns=len(generations),
        num_tokens=sum(g.num_tokens for g in generations),
        terminated=terminated,
        truncated=truncated,
        finish_reasons=tuple(g.finish_reason for g in generations),
        seconds=time.monotonic() - start,
        generations=tuple(generations),
        env_seconds=env_seconds,
        prompt_messages=prompt_messages,
        metrics=dict(info.get("metrics", {})),
    )


def _action(generation: Generation) -> str | Message:
    """The reply as the environment takes it: text, or a message when a server parsed tool calls."""
    text = generation.text.strip()
    if not generation.tool_calls:
        return text
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [dict(c) for c in generation.tool_calls],
    }
