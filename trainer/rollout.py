"""Playing one episode: an environment and an engine taking turns until the episode ends.

A failure of the policy (server down) or of the environment ends that episode with an
error recorded on it; it never propagates to the other episodes of a run.

For training, pass a `TokenLog`: the engine then continues the episode's own token
sequence (`generate_ids`), and the log records every token with a loss mask (only sampled
tokens are trained on) and the engine's sampling logprobs, so nothing is re-tokenized.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import Task
from rewards.types import Message
from trainer.engines.base import Engine, Generation, LocalEngine, SamplingParams, ToolSchemas
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
    reply has mask 1 and its sampling logprobs. Spans are `[begin, end)` token positions.
    `env_spans`: one per insertion of the environment's tokens between two replies, from
    the end of the reply's turn through the opening of the next assistant turn, so its
    `end` is where the model resumes (the ARPO trainer branches there). `tool_spans`: one
    per tool result, in order, covering the tokens of that `tool` message's content (a
    token straddling the content's edge counts as inside); a reply with two calls gives
    two. Where the chat format shows a result other than verbatim or trimmed (that result
    and the later ones of that insertion), or the tokenizer gives no character offsets (a
    slow tokenizer), a result's span is its whole insertion instead.
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
        text = self.renderer.continuation_text(history, new, reply.token_ids, tools=self.tools)
        chars = _result_chars(self.renderer, history, new, reply, self.tools, text)
        ids, spans = _token_spans(self.renderer.tokenizer, text, chars)
        self._extend(ids, sampled=False)
        self.env_spans.append((begin, len(self.token_ids)))
        self.tool_spans.extend((begin + first, begin + last) for first, last in spans)

    def _extend(self, ids: list[int], *, sampled: bool, logprobs: tuple[float, ...] = ()) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([sampled] * len(ids))
        self.sampler_logprobs.extend(logprobs or [0.0] * len(ids))


def _result_chars(
    renderer: ChatRenderer,
    history: list[Message],
    new: list[Message],
    reply: Generation,
    tools: ToolSchemas | None,
    text: str,
) -> list[tuple[int, int] | None]:
    """Where each tool message's content sits in `text` (the rendered continuation), as
    character spans; None for one the format rendered other than verbatim or trimmed.

    The continuation is rendered again with a marker in place of each result: the text
    around the markers is the same as around the results, so each result is found right
    where its marker was, never by searching for its words elsewhere."""
    markers: list[str] = []
    marked: list[Message] = []
    for message in new:
        if message["role"] == "tool":
            markers.append(f"@@rewardgym-tool-result-{len(markers)}@@")
            marked.append({**message, "content": markers[-1]})  # type: ignore[typeddict-item]
        else:
            marked.append(message)
    if not markers:
        return []
    contents = [message.get("content") or "" for message in new if message["role"] == "tool"]
    rendered = renderer.continuation_text(history, marked, reply.token_ids, tools=tools)
    pieces = re.split("(" + "|".join(re.escape(m) for m in markers) + ")", rendered)
    if pieces[1::2] != markers:  # a marker was escaped or dropped by the template
        return [None] * len(markers)
    spans: list[tuple[int, int] | None] = []
    at = len(pieces[0])
    for index, content in enumerate(contents):
        after = pieces[2 * index + 2]  # the format's text up to the next result (or the end)
        shown = next((c for c in (content, content.strip()) if text.startswith(c + after, at)), None)
        if shown is None:
            return [*spans, *[None] * (len(contents) - index)]
        spans.append((at, at + len(shown)))
        at += len(shown) + len(after)
    return spans


def _token_spans(
    tokenizer: Any, text: str, chars: list[tuple[int, int] | None]
) -> tuple[list[int], list[tuple[int, int]]]:
    """`text`'s token ids, and for each character span the tokens overlapping it (all of
    them where a span is unknown or the tokenizer gives no offsets)."""
    if not chars:
        return list(tokenizer(text, add_special_tokens=False).input_ids), []
    if not getattr(tokenizer, "is_fast", False):
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
        return ids, [(0, len(ids))] * len(chars)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoding.input_ids), list(encoding.offset_mapping)
    spans = []
    for span in chars:
        if span is None:
            spans.append((0, len(ids)))
            continue
        start, end = span
        inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
        if inside:
            spans.append((inside[0], inside[-1] + 1))
        else:  # an empty result: an empty span where it sits
            at = next((i for i, (a, _) in enumerate(offsets) if a >= start), len(ids))
            spans.append((at, at))
    return ids, spans


def _contained(exc: BaseException) -> bool:
    """Whether a failure stays inside its episode: any Exception, SystemExit, and a
    CancelledError the code raised itself; not KeyboardInterrupt, nor the cancellation of
    this episode's own task (the run is being stopped)."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return isinstance(exc, (Exception, SystemExit))


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
    The environment's `reply_stops` end each reply after a tool call's closing tag (with a
    local engine, its `local_reply_stops` too), and its `policy_tools` go to the engine as
    native tool schemas.
    """
    stops = env.reply_stops + (env.local_reply_stops if isinstance(engine, LocalEngine) else ())
    if stops:
        params = replace(params, stop_after=tuple(dict.fromkeys(params.stop_after + stops)))
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
    except BaseException as exc:
        if not _contained(exc):
            raise
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
        except BaseException as exc:
            if not _contained(exc):
                raise
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
