"""The judge client: one place where judges talk to a model.

A judge asks a model short questions ("which response is better?", "score 1-10") and
reads the answer, and where the endpoint gives them, the token probabilities behind it.
The client adds what every judge needs around an engine: bounded concurrency, an on-disk
cache, counters, and a typed failure (`JudgeUnavailable`) once the engine's retries are
spent, so a judge can mark that one verdict failed and go on.

Any engine works: `JudgeClient.from_endpoint` speaks OpenAI-compatible HTTP (vLLM serve,
`rewardgym serve-model`, hosted APIs) with retries, backoff and timeouts; an in-process
`TransformersEngine` also works, with no server at all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewards.judges.cache import JudgeCache, cache_key
from rewards.types import Message

if TYPE_CHECKING:
    from trainer.engines.base import Engine, Generation


class JudgeUnavailable(RuntimeError):
    """The judge could not answer (endpoint down, timing out, erroring) after all retries."""


@dataclass(frozen=True)
class JudgeSampling:
    """How a judge samples. Verdicts are greedy by default: the same question, the same answer."""

    max_tokens: int = 8
    temperature: float = 0.0
    top_logprobs: int = 10  # ask for token probabilities; 0 = the verdict's text only
    stop: tuple[str, ...] = ("\n",)
    seed: int | None = None

    def cacheable(self) -> bool:
        return self.temperature == 0 or self.seed is not None


@dataclass(frozen=True)
class JudgeReply:
    """What the judge model said, and the top token logprobs at each position, if given."""

    text: str
    top_logprobs_T: tuple[Mapping[str, float], ...] = ()
    cached: bool = False


@dataclass
class JudgeStats:
    """Counters for reports and metrics (mutable: one per client, updated as calls finish)."""

    calls: int = 0  # questions asked (cache hits included)
    cache_hits: int = 0
    failures: int = 0  # questions that got no answer after all retries
    unparseable: int = 0  # answers no verdict could be read from (counted by the judges)
    failed_pairs: int = 0  # pairwise verdicts that failed (a tournament's failed matchups), all told

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class JudgeClient:
    """Asks `engine` questions as raw text (completions, for base models) or chat messages.

    `model` names the judge in caches and reports. `max_concurrency` bounds questions in
    flight from this client; `timeout_s` bounds one question including the engine's
    retries (None: only the engine's own timeouts apply).

    HTTP connections belong to the event loop that opened them. With `engine_factory`
    (as `from_endpoint` sets), a client asked from a new loop after its old loop closed
    (a synchronous caller's `asyncio.run`, one after another) gets a fresh engine instead
    of dead connections. One client is not meant to serve two live loops at once.
    """

    engine: Engine
    model: str
    max_concurrency: int = 16
    cache: JudgeCache | None = None
    timeout_s: float | None = None
    stats: JudgeStats = field(default_factory=JudgeStats)
    engine_factory: Callable[[], Engine] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int):
            raise ValueError(f"max_concurrency must be a whole number, got {self.max_concurrency!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (or None), got {self.timeout_s}")
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._retired_retries = 0  # HTTP retries of engines replaced after their loop closed
        self.closed = False

    @classmethod
    def from_endpoint(
        cls,
        base_url: str,
        model: str,
        *,
        api: str = "chat",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        max_concurrency: int = 16,
        cache_dir: str | Path | None = None,
    ) -> JudgeClient:
        """A judge behind an OpenAI-compatible endpoint, e.g. `http://127.0.0.1:8000/v1`.

        `api="completions"` suits base models judged with few-shot text prompts; "chat" suits
        instruction-tuned judges. Each HTTP attempt times out after `timeout_s`; failed
        attempts (connection errors, 429, 5xx, garbage bodies) are retried with backoff, up to
        `max_attempts` attempts in all.
        """
        from trainer.engines.openai_engine import OpenAIEngine

        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a whole number, 1 or more, got {max_attempts!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        key = api_key if api_key is not None else os.environ.get(api_key_env)

        def make_engine() -> Engine:
            return OpenAIEngine(
                base_url, model, api=api, api_key=key or "", timeout_s=timeout_s, max_attempts=max_attempts
            )

        cache = JudgeCache(cache_dir) if cache_dir is not None else None
        return cls(
            engine=make_engine(),
            model=model,
            max_concurrency=max_concurrency,
            cache=cache,
            engine_factory=make_engine,
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this client last asked from (its connections live there), if any."""
        return self._slots_loop

    def _semaphore(self) -> asyncio.Semaphore:
        """One semaphore per event loop (a client may outlive the loop that first used it)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            old = self._slots_loop
            if old is not None and old.is_closed() and self.engine_factory is not None:
                # the old loop's connections are dead: new ones, for this loop
                self._retired_retries += int(getattr(self.engine, "retries", 0))
                self.engine = self.engine_factory()
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._slots_loop = loop
        return self._slots

    async def ask(self, prompt: str | Sequence[Message], sampling: JudgeSampling) -> JudgeReply:
        """One question: raw text is continued (completions API), messages get a chat reply.

        Raises `JudgeUnavailable` when the model cannot answer after all retries.
        """
        from trainer.engines.base import EngineError

        prompt_key: Any = prompt if isinstance(prompt, str) else [dict(m) for m in prompt]
        key = cache_key(self.model, prompt_key, asdict(sampling)) if self.cache is not None else ""
        self.stats.calls += 1
        if self.cache is not None and sampling.cacheable():
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                return JudgeReply(hit["text"], tuple(hit["top_logprobs_T"]), cached=True)
        params = _engine_params(sampling)
        try:
            async with self._semaphore():
                request = (
                    self.engine.complete(prompt, params)
                    if isinstance(prompt, str)
                    else self.engine.generate(prompt, params)
                )
                generation: Generation = await asyncio.wait_for(request, self.timeout_s)
        except (EngineError, TimeoutError) as exc:
            self.stats.failures += 1
            reason = str(exc) or f"no answer within {self.timeout_s} s"
            raise JudgeUnavailable(f"judge {self.model}: {reason}") from None
        reply = JudgeReply(generation.text, tuple(dict(t) for t in generation.top_logprobs_T))
        if self.cache is not None and sampling.cacheable():
            self.cache.put(key, {"text": reply.text, "top_logprobs_T": list(reply.top_logprobs_T)})
        return reply

    def counters(self) -> dict[str, int]:
        """The stats plus the engine's HTTP retries (attempts after the first), if it counts them."""
        retries = self._retired_retries + int(getattr(self.engine, "retries", 0))
        return {**self.stats.as_dict(), "retries": retries}

    async def close(self) -> None:
        """Close the connections and the cache; closing twice does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.engine.close()
        finally:
            if self.cache is not None:
                self.cache.close()


def _engine_params(sampling: JudgeSampling) -> Any:
    from trainer.engines.base import SamplingParams

    return SamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        stop=sampling.stop,
        seed=sampling.seed,
        top_logprobs=sampling.top_logprobs,
    )
