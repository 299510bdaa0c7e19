"""A remote OpenAI-compatible server as an engine (vLLM serve, llama.cpp, hosted APIs).

Chat models use `/chat/completions`; base models served without a chat template use
`/completions` with the same plain transcript the transformers engine renders; `complete`
sends raw prompt text there whichever API the engine was made for. Transient failures
(connection errors, 429, 5xx, and a 200 whose body is not JSON or not a completion, as a
flaky proxy may send) are retried with jittered exponential backoff, honouring
`Retry-After`; other 4xx fail at once with the server's message.

Training needs token ids, not text. Given the model's tokenizer, `generate_ids` sends the
prompt as token ids to `/completions` and asks for the sampled tokens back as ids
(vLLM's `return_tokens_as_token_ids`, which writes each token as "token_id:<id>"), with
their logprobs; `load_lora_adapter` pushes a trained adapter through vLLM's runtime LoRA
loading (`/v1/load_lora_adapter`). `rewardgym serve-model` speaks both extensions too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
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
from trainer.engines.chat_format import PLAIN_STOP, ChatFormat, ChatRenderer, render_plain
from trainer.engines.stops import cut_at_stop

Api = Literal["chat", "completions"]
TOKEN_ID_PREFIX = "token_id:"  # how vLLM writes a token with return_tokens_as_token_ids
LORA_HINT = (
    "the server must allow runtime LoRA loading: vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
    "--enable-lora (--max-lora-rank at least lora.rank), or `rewardgym serve-model --enable-lora`"
)


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

    With `tokenizer` (the served model's own) the engine also works on token ids, for
    training: `renderer` turns conversations into ids and `generate_ids` continues them.
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
        tokenizer: Any = None,
        chat_format: ChatFormat = "auto",
    ) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model  # the name requests go to: the base model, or the last adapter loaded
        self.api = api
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.requests = 0  # HTTP attempts made
        self.retries = 0  # attempts after the first of a call
        self.adapters_loaded = 0  # successful load_lora_adapter calls
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout_s, headers=self._headers)
        self.tokenizer = tokenizer
        self.renderer = ChatRenderer(tokenizer, chat_format) if tokenizer is not None else None
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

    def _completion_body(
        self, prompt: str | list[int], stop: Sequence[str], params: SamplingParams
    ) -> dict[str, Any]:
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

    async def _request(
        self, path: str, body: dict[str, Any], parse: Callable[[Any], Generation]
    ) -> Generation:
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
                    return parse(await self._post(path, body))
        except _Retryable as exc:
            raise EngineError(f"gave up after {self.max_attempts} attempts: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, *, tools: ToolSchemas | None = None
    ) -> Generation:
        path, body = self._body(messages, params, tools)
        generation = await self._request(path, body, lambda data: self._parse(data, params, self.api))
        return replace(generation, text=generation.text.strip())

    async def complete(self, prompt: str | Sequence[int], params: SamplingParams) -> Generation:
        """Continue raw prompt text (or token ids) through `/completions` (also for an engine
        made with api="chat": both are the same server); only `params.stop_strings` end it,
        and the text comes back unstripped, as `LocalEngine.complete` gives it."""
        if not isinstance(prompt, str):
            prompt = list(prompt)
        body = self._completion_body(prompt, params.stop_strings, params)
        return await self._request(
            "/completions", body, lambda data: self._parse(data, params, "completions")
        )

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

    # -- token level (training) ------------------------------------------------------------------

    async def generate_ids(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        """Continue `prompt_ids` exactly, getting the sampled token ids and logprobs back.

        The prompt goes to `/completions` as a list of ids (no re-tokenization on either side);
        the reply's tokens come as "token_id:<id>" with their logprobs, and are cut at a stop
        string here, with the local tokenizer, exactly as the local engines cut theirs (the
        text is the server's, as it cut it).
        Sampling is pinned to plain temperature / top-p (top_k, min_p and repetition penalty
        neutral) so a server's generation-config defaults cannot change the distribution.
        """
        if self.renderer is None:
            raise EngineError(
                f"the {self.name} engine needs the served model's tokenizer to work on token ids "
                "(OpenAIEngine(..., tokenizer=...))"
            )
        if not prompt_ids:
            raise EngineError("generate_ids needs at least one prompt token")
        if self.renderer.stop:
            params = replace(params, stop=tuple(dict.fromkeys(params.stop + self.renderer.stop)))
        body = self._sampling(params)
        body.update(
            prompt=[int(i) for i in prompt_ids],
            logprobs=params.top_logprobs,  # the sampled token's logprob, and the top k when asked
            return_tokens_as_token_ids=True,
            top_k=-1,
            min_p=0.0,
            repetition_penalty=1.0,
        )
        if params.stop_strings:
            body["stop"] = list(params.stop_strings)
        generation = await self._request("/completions", body, lambda data: self._parse_ids(data, params))
        return replace(generation, prompt_token_ids=tuple(body["prompt"]))

    def _parse_ids(self, data: Any, params: SamplingParams) -> Generation:
        """A `/completions` body with "token_id:<id>" tokens as a token-level Generation."""
        try:
            choice = data["choices"][0]
            logprobs = choice["logprobs"] or {}
            tokens = list(logprobs["tokens"])
            token_logprobs = [float(x) for x in logprobs["token_logprobs"]]
            steps = list(logprobs.get("top_logprobs") or [None] * len(tokens))
            server_finish = choice.get("finish_reason")
            text = choice["text"]
            if not isinstance(text, str):
                raise TypeError(f"text is {type(text).__name__}")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise _Retryable(
                f"unexpected response shape ({type(exc).__name__}: {exc}): {str(data)[:300]}"
            ) from None
        if not len(tokens) == len(token_logprobs) == len(steps):
            raise _Retryable(f"logprobs of mismatched lengths: {str(logprobs)[:300]}")
        ids = [self._token_id(token) for token in tokens]
        # vLLM returns every sampled id (the stop string's too) and cuts only the text: cut the
        # ids by the local engines' rule. The text is the server's, cut where the stop began.
        _, ids, hit_stop = cut_at_stop(self.tokenizer, ids, params.stop, params.stop_after)
        stop_reason = choice.get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason in params.stop_after:  # vLLM names the stop it cut
            text += stop_reason
        top: tuple[dict[str, float], ...] = ()
        if params.top_logprobs:  # {"token_id:<id>": logprob} per step; the sampled token may be extra
            top = tuple(self._top_texts(step or {}, params.top_logprobs) for step in steps[: len(ids)])
        return Generation(
            text=text,
            num_tokens=len(ids),
            finish_reason="stop" if hit_stop or server_finish != "length" else "length",
            token_ids=tuple(ids),
            logprobs_T=tuple(token_logprobs[: len(ids)]) if params.logprobs else (),
            top_logprobs_T=top,
        )

    def _token_id(self, token: Any) -> int:
        if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
            try:
                return int(token[len(TOKEN_ID_PREFIX) :])
            except ValueError:
                pass
        raise EngineError(
            f"{self.base_url} answered with token {token!r}, not 'token_id:<id>': training needs a server "
            "that honours return_tokens_as_token_ids (vLLM, or `rewardgym serve-model`)"
        )

    def _top_texts(self, step: dict[str, float], k: int) -> dict[str, float]:
        """The k most likely of one step's {"token_id:<id>": logprob}, keyed by decoded text."""
        likeliest = sorted(step.items(), key=lambda item: item[1], reverse=True)[:k]
        return top_logprobs_by_text(
            [(self.tokenizer.decode([self._token_id(token)]), float(lp)) for token, lp in likeliest], k
        )

    # -- LoRA adapters -----------------------------------------------------------------------------

    def load_lora_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Have the server load the peft adapter at `path` (a path the server can read) as
        model `name`, replacing one loaded under that name before; later requests use it.

        Blocking (called between rollouts, from the training loop's thread)."""
        url = self.base_url + "/load_lora_adapter"
        body = {"lora_name": name, "lora_path": os.fspath(path), "load_inplace": True}
        try:
            response = httpx.post(url, json=body, headers=self._headers, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise EngineError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            hint = f" ({LORA_HINT})" if response.status_code in (404, 405) else ""
            raise EngineError(
                f"{url} did not load the adapter {body['lora_path']} ({response.status_code}): "
                f"{response.text[:500]}{hint}"
            )
        self.model = name
        self.adapters_loaded += 1

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        raise EngineError(
            "a remote server takes LoRA adapters, not weights: save the adapter with save_pretrained and "
            "call load_lora_adapter (full fine-tuning cannot be pushed to a remote server)"
        )

    def served_models(self) -> list[str]:
        """The model names the server lists at `/models` (blocking; a start-up check)."""
        url = self.base_url + "/models"
        try:
            response = httpx.get(url, headers=self._headers, timeout=min(self.timeout_s, 30.0))
            response.raise_for_status()
            return [str(card["id"]) for card in response.json()["data"]]
        except httpx.HTTPError as exc:
            raise EngineError(f"cannot list the models at {url}: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"{url} did not answer with a model list: {response.text[:300]}") from exc

    async def close(self) -> None:
        if self._owns_client:  # a client handed in belongs to the caller
            await self.client.aclose()
