"""A remote OpenAI-compatible server as an engine (vLLM serve, llama.cpp, hosted APIs).

Chat models use `/chat/completions`; base models served without a chat template use
`/completions` with the same plain transcript the transformers engine renders; `complete`
sends raw prompt text there whichever API the engine was made for. Transient failures
(connection errors, 429, 5xx, and a 200 whose body is not JSON or not a completion, as a
flaky proxy may send) are retried with jittered exponential backoff, honouring
`Retry-After`; other 4xx fail at once with the server's message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from rewards.types import Message
from trainer.engines.base import (
    Engine,
    EngineError,
    Generation,
    SamplingParams,
    ToolSchemas,
    top_logprobs_by_text,
)
from trainer.engines.chat_format import PLAIN_STOP, render_plain

Api = Literal["chat", "completions"]


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


class _Wait(wait_random_exponential):
    """Jittered exponential backoff, but never shorter than the server's Retry-After."""

    def __call__(self, retry_state: Any) -> float:
        wait = super().__call__(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(wait, min(exc.retry_after, 60.0))
        return wait


class OpenAIEngine(Engine):
    """Generation through an OpenAI-compatible HTTP API.

    `requests` counts HTTP attempts made and `retries` the attempts after the first of each
    call (both across calls, plain ints), so a judge can report how flaky its server was.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "chat",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = 4,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.max_attempts = max_attempts
        self.requests = 0  # HTTP attempts made
        self.retries = 0  # attempts after the first of a call
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout_s, headers=headers)
        self.name = f"{model}@{self.base_url}"

    def _body(
        self, messages: Sequence[Message], params: SamplingParams, tools: ToolSchemas | None = None
    ) -> tuple[str, dict[str, Any]]:
        if self.api == "chat":
            body = self._sampling(params)
            body["messages"] = list(messages)
            if tools:
                body["tools"] = [dict(t) for t in tools]
            if params.logprobs or params.top_logprobs:
                body["logprobs"] = True
            if params.top_logprobs:
                body["top_logprobs"] = params.top_logprobs
            if params.stop_strings:
                body["stop"] = list(params.stop_strings)
            return "/chat/completions", body
        if tools:
            raise EngineError("tool schemas need the chat API (api='chat'), not completions")
        stop = tuple(dict.fromkeys(params.stop_strings + PLAIN_STOP))
        return "/completions", self._completion_body(render_plain(messages), stop, params)

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _completion_body(self, prompt: str, stop: Sequence[str], params: SamplingParams) -> dict[str, Any]:
        body = self._sampling(params)
        body["prompt"] = prompt
        if params.top_logprobs:  # the legacy API's `logprobs` is the top-k size
            body["logprobs"] = params.top_logprobs
        elif params.logprobs:
            body["logprobs"] = 1
        if stop:
            body["stop"] = list(stop)
        return body

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        self.requests += 1
        try:
            response = await self.client.post(url, json=body)
        except httpx.TransportError as exc:
            raise _Retryable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(
                f"{url} answered {response.status_code}: {response.text[:300]}",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise EngineError(f"{url} rejected the request ({response.status_code}): {response.text[:500]}")
        try:
            return response.json()
        except ValueError:
            raise _Retryable(f"{url} answered with non-JSON: {response.text[:200]!r}") from None

    async def _request(self, path: str, body: dict[str, Any], params: SamplingParams, api: Api) -> Generation:
        """POST with retries; a reply that does not parse is retried too (see the module docstring)."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                stop=stop_after_attempt(self.max_attempts),
                wait=_Wait(multiplier=0.5, max=20),
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.retries += 1
                    return self._parse(await self._post(path, body), params, api)
        except _Retryable as exc:
            raise EngineError(f"gave up after {self.max_attempts} attempts: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, *, tools: ToolSchemas | None = None
    ) -> Generation:
        path, body = self._body(messages, params, tools)
        generation = await self._request(path, body, params, self.api)
        return replace(generation, text=generation.text.strip())

    async def complete(self, prompt: str, params: SamplingParams) -> Generation:
        """Continue raw prompt text through `/completions` (also for an engine made with
        api="chat": both are the same server); only `params.stop_strings` end it, and the
        text comes back unstripped, as `LocalEngine.complete` gives it."""
        body = self._completion_body(prompt, params.stop_strings, params)
        return await self._request("/completions", body, params, "completions")

    def _parse(self, data: Any, params: SamplingParams, api: Api) -> Generation:
        """A response body as a Generation; a body of another shape is retryable (a proxy's garbage)."""
        tool_calls: tuple[dict[str, Any], ...] = ()
        top: tuple[dict[str, float], ...] = ()
        k = params.top_logprobs
        try:
            choice = data["choices"][0]
            if api == "chat":
                text = choice["message"].get("content") or ""
                tool_calls = tuple(choice["message"].get("tool_calls") or ())
                entries = ((choice.get("logprobs") or {}).get("content")) or []
                logprobs = tuple(float(e["logprob"]) for e in entries)
                if k:
                    top = tuple(
                        top_logprobs_by_text(
                            [(t["token"], float(t["logprob"])) for t in e.get("top_logprobs") or ()], k
                        )
                        for e in entries
                    )
            else:
                text = choice["text"]
                if not isinstance(text, str):
                    raise TypeError(f"text is {type(text).__name__}")
                logprobs = tuple(
                    float(x) for x in ((choice.get("logprobs") or {}).get("token_logprobs") or [])
                )
                if k:  # one {token: logprob} per token, null where the server has none
                    steps = (choice.get("logprobs") or {}).get("top_logprobs") or []
                    top = tuple(
                        top_logprobs_by_text([(t, float(lp)) for t, lp in (step or {}).items()], k)
                        for step in steps
                    )
            usage = data.get("usage") or {}
            num_tokens = int(usage.get("completion_tokens") or len(logprobs))
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
            stop_reason = choice.get("stop_reason")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _Retryable(
                f"unexpected response shape ({type(exc).__name__}: {exc}): {str(data)[:300]}"
            ) from None
        if isinstance(stop_reason, str) and stop_reason in params.stop_after:  # vLLM names the stop it cut
            text += stop_reason
        return Generation(
            text=text,
            num_tokens=num_tokens,
            finish_reason=finish,
            logprobs_T=logprobs if params.logprobs else (),
            tool_calls=tool_calls,
            top_logprobs_T=top,
        )

    async def close(self) -> None:
        if self._owns_client:  # a client handed in belongs to the caller
            await self.client.aclose()
