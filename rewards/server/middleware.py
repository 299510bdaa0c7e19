"""ASGI middleware of the reward server: bearer-token auth, a request-size cap, metrics.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: cheaper per request, and they see
every response, including the 401s and 413s they produce themselves.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewards.server.metrics import ServerMetrics


async def send_error(
    send: Send, status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> None:
    """Answer with the server's JSON error form `{"error": {"message", "type"}}`."""
    body = json.dumps({"error": {"message": message, "type": kind}}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class BearerAuth:
    """Every path but the open ones needs `Authorization: Bearer <key>`; the scheme is
    case-insensitive (RFC 7235), the key is not. The comparison is constant-time, so
    response timing says nothing about how much of a guess was right."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str]) -> None:
        if not api_key:
            raise ValueError("the API key is empty")
        self.app = app
        self.expected = api_key.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization")
        scheme, _, token = (given or b"").strip().partition(b" ")
        if given is None:
            message = "this server needs an API key: send the header 'Authorization: Bearer <key>'"
        elif scheme.lower() != b"bearer":
            message = "the Authorization header must use the Bearer scheme: 'Authorization: Bearer <key>'"
        elif not hmac.compare_digest(token.strip(), self.expected):
            message = "the API key is wrong"
        else:
            return await self.app(scope, receive, send)
        await send_error(send, 401, message, "authentication_error", {"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, whether the size is declared in
    Content-Length or only shows while streaming; the body is read at most once."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_large = f"the request body is over this server's limit of {self.max_bytes} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, 413, too_large, "request_too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(send, 413, too_large, "request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class RequestMetrics:
    """Count and time every request by endpoint (the route's path template) and reward."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, reward_label: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.reward_label = reward_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)  # type: ignore[arg-type]

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            reward = self.reward_label(scope)
            self.metrics.requests.labels(endpoint, reward, str(status)).inc()
            self.metrics.latency.labels(endpoint, reward).observe(time.perf_counter() - start)
