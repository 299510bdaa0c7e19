"""The HTTP client of the reward server (`rewardgym serve`): batches, shards and retries.

A call's samples are cut into chunks no bigger than the server takes, spread over every
URL given (so several servers share one big batch), sent concurrently and put back in
order. Scoring is idempotent, so anything transient (a refused or dropped connection, a
timeout, 429, 502, 503, 504) is retried on the next URL with jittered exponential backoff,
honouring `Retry-After`; any other error status is a bug on one side and fails at once
with the server's message, and a server that stays down fails with a message naming it.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from rewards.types import Sample, Score
from rewards.wire import sample_to_json, score_from_json

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 502, 503, 504})
CONNECT_TIMEOUT_S = 10.0  # a dead host should fail over long before a slow reward times out


class RemoteRewardError(Exception):
    """Scoring through a reward server failed as a whole (not one item's error)."""


class RewardServerError(RemoteRewardError):
    """The server refused the request or answered nonsense; retrying would not help."""

    def __init__(self, status: int, message: str, url: str, error_type: str | None = None) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status
        self.message = message
        self.url = url
        self.error_type = error_type

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.status, self.message, self.url, self.error_type)


class RewardServerUnavailable(RemoteRewardError):
    """No server answered usefully within the retries."""

    def __init__(self, urls: Sequence[str], attempts: int, last_error: str) -> None:
        where = ", ".join(dict.fromkeys(urls))
        super().__init__(f"gave up after {attempts} attempt(s) on {where}; last error: {last_error}")
        self.urls = list(dict.fromkeys(urls))
        self.attempts = attempts
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.urls, self.attempts, self.last_error)


class _Transient(Exception):
    """One attempt failed in a way another attempt (maybe on another URL) may not."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def plan_chunks(sizes: Sequence[int], num_urls: int, max_batch_size: int) -> list[range]:
    """Index ranges of the chunks a call's items are sent in. `sizes[i]` is how many samples
    item i holds (1 for a sample, G for a group: the server's batch limit counts samples).

    A chunk holds at most `max_batch_size` samples (a group bigger than that goes alone,
    and the server says why it refuses it) and at most a fair share of the total, so a big
    batch gives every URL some of it.
    """
    target = min(max_batch_size, math.ceil(sum(sizes) / num_urls))
    chunks: list[range] = []
    start = load = 0
    for i, size in enumerate(sizes):
        if i > start and load + size > target:
            chunks.append(range(start, i))
            start, load = i, 0
        load += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _normalise_urls(urls: str | Sequence[str]) -> list[str]:
    listed = [urls] if isinstance(urls, str) else list(urls)
    if not listed:
        raise ValueError("RewardClient needs at least one server URL")
    normalised = []
    for url in listed:
        if not isinstance(url, str):
            raise ValueError(f"a server URL must be a string, got {url!r}")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"a server URL must look like http://host:port, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"a server URL takes no query or fragment, got {url!r}")
        normalised.append(url.strip().rstrip("/"))
    return normalised


def _error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The server's `{"error": {"message", "type"}}`, or the start of whatever it sent."""
    try:
        error = response.json()["error"]
        return str(error["message"]), error.get("type")
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or response.reason_phrase, None


def _check_count(what: str, got: Any, expected: int, url: str) -> list[Any]:
    if not isinstance(got, list) or len(got) != expected:
        count = len(got) if isinstance(got, list) else type(got).__name__
        raise RewardServerError(200, f"expected {expected} {what}, got {count}", url, "bad_response")
    return got


def _scores(data: Any, expected: int, url: str) -> list[Score]:
    try:
        return [score_from_json(item) for item in _check_count("scores", data, expected, url)]
    except (TypeError, ValueError, AttributeError) as exc:
        raise RewardServerError(200, f"malformed score ({exc})", url, "bad_response") from None


def forget_closed_loops(per_loop: dict[asyncio.AbstractEventLoop, Any]) -> None:
    """Drop what belonged to event loops now closed (a synchronous environment's, once closed)."""
    for loop in list(per_loop):  # a snapshot: another thread may add its loop meanwhile
        if loop.is_closed():
            per_loop.pop(loop, None)


@dataclass
class _LoopState:
    http: httpx.AsyncClient
    slots: asyncio.Semaphore


class RewardClient:
    """Scores samples on one or more reward servers.

    `max_retries` is how many times a failed request is tried again (on the next URL),
    after a wait drawn uniformly from [0, backoff_base_s * 2^(n-1)] before the n-th retry,
    capped at `backoff_max_s` (or the server's `Retry-After`, capped likewise);
    `timeout_s` bounds each attempt; `max_batch_size` the most samples in one request (at
    most the server's limit, which `GET /v1/rewards` lists); `max_concurrency` the most
    requests in flight at once from this client (per event loop). `retries` counts the
    attempts that were retries, over the client's life (for monitoring).

    The client may be used from several event loops over its life (each synchronous
    environment runs its own); it keeps one HTTP connection pool per loop, made on first use.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout_s: float = 180.0,
        max_retries: int = 5,
        max_batch_size: int = 256,
        max_concurrency: int = 16,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.urls = _normalise_urls(urls)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if backoff_base_s < 0 or backoff_max_s < 0:
            raise ValueError(f"backoff times must be 0 or more, got {backoff_base_s} and {backoff_max_s}")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key is empty; pass None for a server without a key")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._next_url = 0
        self._jitter = random.Random()
        self.retries = 0
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def __repr__(self) -> str:
        return f"RewardClient({self.urls!r})"

    # -- public API ----------------------------------------------------------------------------

    async def score(self, reward: str, samples: Sequence[Sample]) -> list[Score]:
        """One score per sample, in order. Item errors come back as error scores; a failed
        request raises `RemoteRewardError`."""
        path = f"/v1/rewards/{quote(reward, safe='/')}:score"

        async def send(chunk: Sequence[Sample], url: str) -> list[Score]:
            data = await self._request("POST", url, path, {"samples": [sample_to_json(s) for s in chunk]})
            return _scores(data.get("scores"), len(chunk), url)

        return await self._scatter(samples, [1] * len(samples), send)

    async def score_group(self, reward: str, groups: Sequence[Sequence[Sample]]) -> list[list[Score]]:
        """Scores for each group of samples (the G completions of one prompt), in order."""
        path = f"/v1/rewards/{quote(reward, safe='/')}:score_group"

        async def send(chunk: Sequence[Sequence[Sample]], url: str) -> list[list[Score]]:
            body = {"groups": [[sample_to_json(s) for s in group] for group in chunk]}
            data = await self._request("POST", url, path, body)
            results = _check_count("groups of scores", data.get("scores"), len(chunk), url)
            return [_scores(got, len(group), url) for got, group in zip(results, chunk, strict=True)]

        return await self._scatter(groups, [len(g) for g in groups], send)

    async def list_rewards(self) -> list[dict[str, Any]]:
        """The rewards the (first answering) server hosts, as it describes them."""
        data = await self._with_retries(
            self._take_urls(1), lambda url: self._request("GET", url, "/v1/rewards")
        )
        rewards = data.get("rewards")
        if not isinstance(rewards, list):
            raise RewardServerError(200, "no 'rewards' list in the answer", self.urls[0], "bad_response")
        return rewards

    async def health(self, url: str | None = None) -> dict[str, Any]:
        """One server's `/health` (the first URL by default), asked once, without retries."""
        target = self.urls[0] if url is None else _normalise_urls(url)[0]
        try:
            return await self._request("GET", target, "/health")
        except _Transient as exc:
            raise RewardServerUnavailable([target], 1, str(exc)) from None

    async def aclose(self) -> None:
        """Close this loop's connections (and forget those of loops already closed)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        forget_closed_loops(self._loops)
        if state is not None:
            await state.http.aclose()

    async def __aenter__(self) -> RewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loops"] = {}  # connection pools belong to this process's loops
        return state

    # -- the machinery ---------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            forget_closed_loops(self._loops)
            state = _LoopState(
                http=httpx.AsyncClient(
                    headers=self._headers,
                    timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S)),
                ),
                slots=asyncio.Semaphore(self.max_concurrency),
            )
            self._loops[loop] = state
        return state

    def _take_urls(self, count: int) -> int:
        """The URL index the first of `count` chunks goes to; later calls start further on."""
        start = self._next_url
        self._next_url = (start + count) % len(self.urls)
        return start

    async def _scatter(
        self,
        items: Sequence[T],
        sizes: Sequence[int],
        send: Callable[[Sequence[T], str], Awaitable[list[Any]]],
    ) -> list[Any]:
        chunks = plan_chunks(sizes, len(self.urls), self.max_batch_size)
        start = self._take_urls(len(chunks))

        def job(index: int, chunk: range) -> Awaitable[list[Any]]:
            part = items[chunk.start : chunk.stop]
            return self._with_retries(start + index, lambda url: send(part, url))

        results = await _gather_or_cancel(job(i, chunk) for i, chunk in enumerate(chunks))
        return list(itertools.chain.from_iterable(results))

    async def _with_retries(self, first_url: int, attempt: Callable[[str], Awaitable[T]]) -> T:
        tried: list[str] = []
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    url = self.urls[(first_url + len(tried)) % len(self.urls)]
                    if tried:
                        self.retries += 1
                    tried.append(url)
                    return await attempt(url)
        except _Transient as exc:
            raise RewardServerUnavailable(tried, len(tried), str(exc)) from None
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def _wait(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = exc.retry_after_s if isinstance(exc, _Transient) else None
        return self.backoff_s(retry_state.attempt_number, retry_after)

    def backoff_s(self, failed_attempts: int, retry_after_s: float | None = None) -> float:
        """The wait after `failed_attempts` failures: full-jitter exponential backoff, or
        the server's `Retry-After` where it sent one; either capped at `backoff_max_s`."""
        if retry_after_s is not None:
            return min(retry_after_s, self.backoff_max_s)
        ceiling = self.backoff_base_s * 2 ** (failed_attempts - 1)
        return self._jitter.uniform(0, min(self.backoff_max_s, ceiling))

    async def _request(
        self, method: str, url: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        state = self._state()
        async with state.slots:
            try:
                response = await state.http.request(method, url + path, json=body)
            except httpx.ConnectTimeout as exc:
                limit = min(self.timeout_s, CONNECT_TIMEOUT_S)
                raise _Transient(f"{url}: ConnectTimeout: no connection within {limit:g} s") from exc
            except httpx.TimeoutException as exc:
                raise _Transient(
                    f"{url}: {type(exc).__name__}: no answer within timeout_s={self.timeout_s:g} s"
                ) from exc
            except httpx.TransportError as exc:
                raise _Transient(f"{url}: {type(exc).__name__}: {str(exc) or 'no details'}") from exc
        if response.status_code in RETRY_STATUSES:
            message, _ = _error_message(response)
            raise _Transient(
                f"{url} answered {response.status_code}: {message}",
                parse_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 400:
            message, error_type = _error_message(response)
            raise RewardServerError(response.status_code, message, url, error_type)
        try:
            data = response.json()
        except ValueError:
            raise RewardServerError(
                response.status_code, f"not JSON: {response.text[:200]!r}", url, "bad_response"
            ) from None
        if not isinstance(data, dict):
            raise RewardServerError(response.status_code, "expected a JSON object", url, "bad_response")
        return data


async def _gather_or_cancel(jobs: Iterable[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure the other jobs are cancelled, not orphaned."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
