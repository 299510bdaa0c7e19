"""`MultiTurnEnv`: a conversation as a gymnasium environment.

The contract, in the gymnasium way:

- observation: the conversation so far, a list of OpenAI-style message dicts;
- action: the assistant's reply, as text or as an assistant message (maybe with tool calls);
- `reset(seed=, options=)` starts a task: chosen by the seeded RNG, or given in `options`
  as `{"task": Task}`, `{"task_id": str}` or `{"task_index": int}`;
- `step(action)` appends the reply, lets the environment react (feedback, tool results),
  and returns `(observation, reward, terminated, truncated, info)`.

The reward arrives on the step that ends the episode; earlier steps return 0.0. The
episode *terminates* when the environment's own rules say so (answer accepted, attempts
used up) and is *truncated* when a budget runs out (`max_turns`, `max_tokens`). `info`
always has `task_id`, `turn`, `num_tokens` and `metrics`; once a score exists it also has
`reward_components`, `reward_error`, `passed` and `reward_info`.

Two attributes tell a policy how to talk to the environment: `reply_stops` (strings after
which a reply should end, kept in it: a tool call's closing tag) and `policy_tools` (tool
schemas to hand the policy natively, as the OpenAI `tools` field or a chat template's
tools; None when the prompt itself describes the tools). `local_reply_stops` are more
such strings for policies that sample tokens themselves (local engines), which write
native tool calls as text a chat server would otherwise have parsed.

`areset`/`astep` are the real implementations (rewards wait on worker processes, HTTP
judges, sandboxes); `reset`/`step` run them on a private event loop for plain scripts.

Subclasses override `react` (and optionally `opening` and `make_sample`).
"""

from __future__ import annotations

import asyncio
import copy
import math
import re
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import gymnasium

from envs.spaces import ConversationSpace, ReplySpace, is_message
from envs.tasks import Task, TaskSource
from rewards.base import GroupReward, Reward
from rewards.types import Message, Sample, Score

Action = str | Message
T = TypeVar("T")
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]")
RESET_OPTIONS = ("task", "task_id", "task_index")


def approximate_token_count(text: str) -> int:
    """Words and punctuation marks: a stand-in when no tokenizer and no policy count is given."""
    return len(_APPROX_TOKEN.findall(text))


@dataclass
class Episode:
    """The mutable state of the episode in progress."""

    task: Task
    messages: list[Message]
    turns: int = 0  # assistant replies so far
    num_tokens: int = 0  # assistant tokens so far
    last_score: Score | None = None
    reward_errors: int = 0
    done: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # scratch space for subclasses

    @property
    def last_reply(self) -> str:
        """Text of the latest assistant message ('' if it only made tool calls)."""
        for message in reversed(self.messages):
            if message["role"] == "assistant":
                return message.get("content") or ""
        return ""


@dataclass(frozen=True)
class Reaction:
    """What the environment does after an assistant reply."""

    messages: tuple[Message, ...] = ()  # what it says next (feedback, tool results)
    done: bool = False  # the episode is over by the environment's own rules
    score: Score | None = None  # this turn's score, if the environment computed one
    truncated: bool = False  # with done: it ended because a budget of the environment's ran out


class EpisodeNotRunning(RuntimeError):
    """step() without a reset(), or after the episode ended."""


class MultiTurnEnv(gymnasium.Env[list[Message], Action]):
    """A multi-turn text environment over a task source, scored by a `Reward`.

    The base class plays a single-turn episode: one reply, then the reward. Subclasses
    make it multi-turn by overriding `react`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 1}
    reply_stops: tuple[str, ...] = ()
    local_reply_stops: tuple[str, ...] = ()
    policy_tools: list[dict[str, Any]] | None = None

    def __init__(
        self,
        tasks: TaskSource,
        reward: Reward,
        *,
        system_prompt: str | None = None,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        group_reward: GroupReward | None = None,
        render_mode: str | None = None,
    ) -> None:
        if len(tasks) == 0:
            raise ValueError(f"{type(self).__name__}: the task source {tasks!r} is empty")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.tasks = tasks
        self.reward = reward
        self.group_reward = group_reward
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.count_tokens = token_counter or approximate_token_count
        self.render_mode = render_mode
        self.observation_space = ConversationSpace()
        self.action_space = ReplySpace()
        self.episode: Episode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- hooks for subclasses ---------------------------------------------------------------

    def opening(self, task: Task) -> list[Message]:
        """The conversation the policy sees first (system prompt + the task's prompt)."""
        return task.messages(self.system_prompt)

    async def react(self, episode: Episode) -> Reaction:
        """Respond to the latest assistant reply. The default ends the episode (single turn)."""
        return Reaction(done=True)

    def make_sample(self, episode: Episode) -> Sample:
        """What the reward sees. `num_tokens` is all assistant tokens of the episode."""
        return Sample(
            messages=tuple(episode.messages),
            completion=episode.last_reply,
            reference=episode.task.answer,
            task_id=episode.task.id,
            info=episode.task.info,
            num_tokens=episode.num_tokens,
        )

    async def score(self, episode: Episode) -> Score:
        """Score the episode as it stands (subclasses call this from `react`)."""
        return await self.reward.score(self.make_sample(episode))

    # -- async API ---------------------------------------------------------------------------

    async def areset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        gymnasium.Env.reset(self, seed=seed)
        task = self._choose_task(options)
        self.episode = Episode(task=task, messages=self.opening(task))
        return self._observation(), {"task_id": task.id, "turn": 0, "num_tokens": 0}

    async def astep(
        self, action: Action, *, num_tokens: int | None = None
    ) -> tuple[list[Message], float, bool, bool, dict[str, Any]]:
        """One assistant reply. `num_tokens` is the policy's own token count for it, if known."""
        episode = self.episode
        if episode is None:
            raise EpisodeNotRunning("call reset() (or areset()) before step()")
        if episode.done:
            raise EpisodeNotRunning("this episode has ended; call reset() to start another")
        reply = self._as_reply(action)
        episode.messages.append(reply)
        episode.turns += 1
        text = reply.get("content") or ""
        episode.num_tokens += num_tokens if num_tokens is not None else self.count_tokens(text)

        reaction = await self.react(episode)
        if reaction.score is not None:
            self._record(episode, reaction.score)
        terminated = reaction.done and not reaction.truncated
        truncated = reaction.truncated or (not terminated and self._out_of_budget(episode))
        reward = 0.0
        if terminated or truncated:
            episode.done = True
            if reaction.score is None:
                self._record(episode, await self.score(episode))
            assert episode.last_score is not None
            reward = episode.last_score.value
        else:
            episode.messages.extend(dict(m) for m in reaction.messages)  # type: ignore[misc]
        return self._observation(), float(reward), terminated, truncated, self._info(episode)

    # -- sync API (gymnasium) --------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        return self._run_sync(self.areset(seed=seed, options=options), "reset", "areset")

    def step(
        self, action: Action, num_tokens: int | None = None
    ) -> tuple[list[Message], float, bool, bool, dict[str, Any]]:
        return self._run_sync(self.astep(action, num_tokens=num_tokens), "step", "astep")

    def render(self) -> str | None:
        if self.render_mode is None or self.episode is None:
            return None
        text = "\n\n".join(f"[{m['role']}] {m.get('content') or ''}".rstrip() for m in self.episode.messages)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        self._loop = None

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def tokens_left(self) -> int | None:
        """Assistant tokens left in this episode's budget (None: no budget)."""
        if self.max_tokens is None:
            return None
        used = self.episode.num_tokens if self.episode else 0
        return max(0, self.max_tokens - used)

    def _choose_task(self, options: Mapping[str, Any] | None) -> Task:
        options = options or {}
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; use one of {list(RESET_OPTIONS)}")
        given = [key for key in RESET_OPTIONS if options.get(key) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {list(RESET_OPTIONS)} in reset options, got {given}")
        if "task" in given:
            task = options["task"]
            if not isinstance(task, Task):
                raise TypeError(f"options['task'] must be a Task, got {type(task).__name__}")
            return task
        if "task_id" in given:
            return self.tasks.find(str(options["task_id"]))
        if "task_index" in given:
            return self.tasks[int(options["task_index"])]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    @staticmethod
    def _as_reply(action: Action) -> Message:
        if isinstance(action, str):
            return {"role": "assistant", "content": action}
        if is_message(action, roles=("assistant",)):
            return copy.deepcopy(action)
        raise TypeError(
            "an action is the assistant's reply: a string, or a message dict "
            '{"role": "assistant", "content": ..., "tool_calls": [...]}; '
            f"got {type(action).__name__}: {str(action)[:80]!r}"
        )

    def _out_of_budget(self, episode: Episode) -> bool:
        if self.max_turns is not None and episode.turns >= self.max_turns:
            return True
        return self.max_tokens is not None and episode.num_tokens >= self.max_tokens

    @staticmethod
    def _record(episode: Episode, score: Score) -> None:
        episode.last_score = score
        if score.error is not None:
            episode.reward_errors += 1

    def _observation(self) -> list[Message]:
        assert self.episode is not None
        return copy.deepcopy(self.episode.messages)

    @staticmethod
    def _info(episode: Episode) -> dict[str, Any]:
        info: dict[str, Any] = {
            "task_id": episode.task.id,
            "turn": episode.turns,
            "num_tokens": episode.num_tokens,
            "metrics": {
                "turns": episode.turns,
                "num_tokens": episode.num_tokens,
                "reward_errors": episode.reward_errors,
            },
        }
        score = episode.last_score
        if score is not None:
            info["reward_components"] = dict(score.components)
            info["reward_error"] = score.error
            info["passed"] = score.passed
            info["reward_info"] = copy.deepcopy(dict(score.info))
            info["score"] = None if math.isnan(score.value) else score.value
        return info

    def _run_sync(self, coro: Coroutine[Any, Any, T], name: str, async_name: str) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                f"{type(self).__name__}.{name}() was called inside a running asyncio event loop "
                f"(an async function, or Jupyter). Use `await env.unwrapped.{async_name}(...)` "
                "there; the synchronous API is for plain scripts."
            )
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
            weakref.finalize(self, self._loop.close)  # an env dropped without close()
        return self._loop.run_until_complete(coro)
