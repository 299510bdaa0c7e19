"""The engine contract: messages in, a generation (text, token ids, logprobs) out.

Every backend (transformers, vLLM, a remote OpenAI-compatible server) implements
`generate`; the evaluator and the trainer only ever see this interface, so choosing an
engine is one line of config.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rewards.types import Message
from trainer.engines.chat_format import ToolSchemas

if TYPE_CHECKING:
    from trainer.engines.chat_format import ChatRenderer


MAX_TOP_LOGPROBS = 20  # what OpenAI's chat API and vLLM's default allow


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # generation ends before any of these strings
    stop_after: tuple[str, ...] = ()  # ... or after any of these, which stay in the reply (tool-call tags)
    seed: int | None = None
    logprobs: bool = False  # also return each completion token's sampling logprob
    # Also return, for each completion token, the k most likely tokens with their logprobs
    # (judges read the probability of "A" vs "B" or of each score digit; entropy bonuses need them).
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Every string that ends generation, whether it is kept or cut."""
        return self.stop + self.stop_after


@dataclass(frozen=True)
class Generation:
    """One completion.

    `token_ids` are the completion tokens exactly as sampled (the trainer never
    re-tokenizes them); engines that cannot see tokens (a remote chat API) leave them
    empty and report `num_tokens` from the server's usage count.

    `top_logprobs_T` (when `SamplingParams.top_logprobs` = k > 0) holds one mapping per
    completion token: decoded token text (as OpenAI reports it, e.g. " A") -> logprob under
    the distribution sampled from, most likely first. They are the k most likely token ids;
    ids that decode to the same text keep the higher logprob (the max, not a log-sum-exp),
    so a mapping has fewer than k entries when texts merge or when fewer than k tokens have
    nonzero probability (top-p leaves the rest out).
    """

    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end of text or a stop string) or "length"
    token_ids: tuple[int, ...] = ()
    logprobs_T: tuple[float, ...] = ()  # one per completion token, when asked for
    prompt_token_ids: tuple[int, ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()  # OpenAI-format calls a chat server parsed out
    top_logprobs_T: tuple[Mapping[str, float], ...] = ()  # one mapping per completion token, when asked for


def top_logprobs_by_text(candidates: Iterable[tuple[str, float]], k: int) -> dict[str, float]:
    """At most `k` (text, logprob) candidates as a mapping, most likely first.

    Texts seen twice (two token ids that decode alike) keep the higher logprob; tokens of
    zero probability (-inf, masked by top-p) are dropped, as they are not "likely" at all.
    """
    best: dict[str, float] = {}
    for text, logprob in candidates:
        if logprob > -math.inf and logprob > best.get(text, -math.inf):
            best[text] = logprob
    return dict(sorted(best.items(), key=lambda item: item[1], reverse=True)[:k])


class EngineError(RuntimeError):
    """The engine could not produce a generation (server down, bad request, ...)."""


class Engine(ABC):
    """Generates assistant replies for conversations.

    Engines that training can use also work on token ids: they expose the `renderer` that
    turns conversations into ids and implement `generate_ids` and `update_weights`.
    """

    name: str = "engine"
    renderer: ChatRenderer | None = None

    @abstractmethod
    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, *, tools: ToolSchemas | None = None
    ) -> Generation:
        """One completion of the conversation, as the assistant's next reply.

        `tools` (OpenAI function schemas) are given to the model natively: in the request
        to a chat server, or through the tokenizer's chat template."""

    async def complete(self, prompt: str | Sequence[int], params: SamplingParams) -> Generation:
        """Continue raw prompt text, or token ids (the OpenAI completions API), with no chat rendering.

        Base-model judges use it for few-shot prompts. Only `params.stop_strings` end it."""
        raise EngineError(f"the {self.name} engine cannot continue raw prompt text (no completions API)")

    async def generate_ids(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        """One completion continuing `prompt_ids` exactly (no re-tokenization), with its token ids."""
        raise EngineError(
            f"the {self.name} engine cannot generate from token ids; training needs one that can "
            "(engine = 'transformers', 'vllm', or 'openai' given the model's tokenizer)"
        )

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load new policy weights (Hugging Face parameter names) before the next rollouts."""
        raise EngineError(f"the {self.name} engine cannot take new weights")

    async def close(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release connections, threads and memory."""

    def describe(self) -> str:
        return self.name


class LocalEngine(Engine):
    """An engine that samples token ids itself (transformers, vLLM in-process): conversations
    are rendered to ids here, once, and every request goes through `_submit`."""

    renderer: ChatRenderer
    tokenizer: Any

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, *, tools: ToolSchemas | None = None
    ) -> Generation:
        generation = await self.generate_ids(self.renderer.prompt_ids(messages, tools=tools), params)
        return replace(generation, text=generation.text.strip())

    async def generate_ids(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        if self.renderer.stop:
            params = replace(params, stop=tuple(dict.fromkeys(params.stop + self.renderer.stop)))
        return await self._submit(list(prompt_ids), params)

    async def complete(self, prompt: str | Sequence[int], params: SamplingParams) -> Generation:
        """Continue raw prompt text, or exactly these token ids (the OpenAI completions API)."""
        ids = self.tokenizer(prompt).input_ids if isinstance(prompt, str) else list(prompt)
        return await self._submit(ids, params)

    @abstractmethod
    async def _submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Queue one generation from exactly these ids."""
