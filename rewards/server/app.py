"""The reward server's HTTP API (FastAPI): named rewards scored in batches, plus
OpenRLHF's `/get_reward` and whatever routers the caller mounts (SandboxFusion's `/run_code`).

    POST /v1/rewards/{name}:score         {"samples": [...]}        -> {"scores": [...]}
    POST /v1/rewards/{name}:score_group   {"groups": [[...], ...]}  -> {"scores": [[...], ...]}
    GET  /v1/rewards                      names, kinds, parameters and limits
    GET  /health, GET /metrics (Prometheus), GET /openapi.json
    POST /get_reward                      OpenRLHF's remote reward protocol

Bad input is a 4xx `{"error": {"message", "type"}}` naming the problem; a reward that
fails on one item is an error on that item in a 200 answer. What composes rewards,
environments and the sandbox into a server lives in the CLI (`rewardgym serve`).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Scope

from rewards.config_file import describe_validation_error
from rewards.server.hosted import HostedReward, QueueFull
from rewards.server.metrics import ServerMetrics
from rewards.server.middleware import BearerAuth, BodyLimit, RequestMetrics
from rewards.server.schemas import (
    ErrorResponse,
    GroupScoreRequest,
    GroupScoreResponse,
    Health,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardList,
    ScoreRequest,
    ScoreResponse,
)
from rewards.types import Sample, Score
from rewards.wire import sample_from_json, score_to_json

logger = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)
OPEN_PATHS = frozenset({"/health"})  # answered without the API key (load-balancer probes)


@dataclass(frozen=True)
class ServerSettings:
    """Server-wide policy. `request_timeout_s` bounds a whole request: items not scored by
    then come back as errors (the rest keep their scores). `openrlhf_reward` is what
    `/get_reward` scores with (default: the only sample reward, if there is one), and
    `openrlhf_error_value` the number it reports for an item that failed (flagged in
    `extra_logs.reward_error`, since OpenRLHF wants a float for every item)."""

    api_key: str | None = None
    max_request_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float | None = 150.0
    openrlhf_reward: str | None = None
    openrlhf_error_value: float = 0.0


class ClientError(Exception):
    """A request we refuse; becomes a 4xx JSON error."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.headers = headers


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def _parse(model: type[ModelT], raw: bytes) -> ModelT:
    if not raw.strip():
        raise ClientError(400, "the request has no body; send JSON", "invalid_request_error")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ClientError(
                400, f"the body is not valid JSON: {describe_validation_error(exc)}", "invalid_json"
            ) from None
        raise ClientError(422, describe_validation_error(exc), "invalid_request_error") from None


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


def _score_json(score: Score, reward: str) -> dict[str, Any]:
    """One score's wire form; a score that cannot be encoded (an `info` that refers to
    itself) becomes an error on its item instead of failing the whole response."""
    try:
        return score_to_json(score)
    except Exception as exc:  # whatever a reward put in its score
        logger.warning("%s: a score could not be encoded as JSON: %s: %s", reward, type(exc).__name__, exc)
        error = f"{reward}: the score could not be encoded as JSON ({type(exc).__name__}: {exc})"
        return score_to_json(Score.failure(error))


def _scores_json(scores: Sequence[Score], reward: str) -> list[dict[str, Any]]:
    return [_score_json(s, reward) for s in scores]


def _errors(items: Sequence[dict[str, Any]]) -> int:
    return sum(1 for item in items if item["error"] is not None)


def _request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body we parse ourselves (raw bytes straight into pydantic-core)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed request",
        401: "missing or wrong API key",
        404: "no reward by that name",
        413: "body or batch too large",
        422: "well-formed JSON of the wrong shape",
        429: "the reward's queue is full; see Retry-After",
    }.items()
}


def create_reward_app(
    hosted: Sequence[HostedReward],
    settings: ServerSettings | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    metrics: ServerMetrics | None = None,
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> FastAPI:
    """The server for `hosted` rewards. The app owns them: it closes their executors on
    shutdown (after in-flight requests have their answers), then calls `on_shutdown`."""
    settings = settings or ServerSettings()
    metrics = metrics or ServerMetrics()
    by_name = {h.name: h for h in hosted}
    if len(by_name) != len(hosted):
        raise ValueError("two hosted rewards share a name")
    openrlhf = _openrlhf_target(by_name, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        for h in hosted:
            h.close()
        for close in on_shutdown:
            close()

    app = FastAPI(
        title="rewardgym reward server",
        version="1",
        description=__doc__.split("\n\n")[0] if __doc__ else "",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.hosted = by_name

    @app.exception_handler(ClientError)
    async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation_error(exc), "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, message, kind, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, f"internal server error: {type(exc).__name__}: {exc}", "internal_error")

    def lookup(name: str) -> HostedReward:
        if name not in by_name:
            close = difflib.get_close_matches(name, by_name, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            served = ", ".join(sorted(by_name)) or "none"
            raise ClientError(404, f"no reward named {name!r} here.{hint} Served: {served}", "unknown_reward")
        return by_name[name]

    def check_batch(h: HostedReward, count: int) -> None:
        """A batch over the limit, or one that could never be admitted, is a 413 (a 429
        would send the client into retries that cannot succeed)."""
        limit = min(h.limits.max_batch_size, h.limits.max_queued)
        if count > limit:
            message = (
                f"{count} samples in one request; {h.name!r} takes at most {limit}. "
                f"Split the batch (RewardClient(max_batch_size={limit}) does)."
            )
            raise ClientError(413, message, "batch_too_large")

    async def admitted(call: Any) -> Any:
        try:
            return await call
        except QueueFull as exc:
            raise ClientError(429, str(exc), "queue_full", {"Retry-After": str(exc.retry_after_s)}) from None

    @app.get("/health", response_model=Health, tags=["server"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "rewards": sorted(by_name), "pid": os.getpid()}

    @app.get("/metrics", tags=["server"], response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/rewards", response_model=RewardList, tags=["rewards"])
    async def list_rewards() -> dict[str, Any]:
        return {"rewards": [h.describe() for h in hosted]}

    @app.post(
        "/v1/rewards/{name:path}:score",
        response_model=ScoreResponse,
        openapi_extra=_request_schema(ScoreRequest),
        tags=["rewards"],
    )
    async def score(name: str, request: Request) -> Response:
        """Score a batch of samples, each on its own."""
        h = lookup(name)
        body = _parse(ScoreRequest, await request.body())
        if h.kind == "group":
            raise ClientError(400, f"{name!r} is a group reward: POST its :score_group", "wrong_kind")
        check_batch(h, len(body.samples))
        samples = [sample_from_json(s.model_dump(exclude_none=True)) for s in body.samples]
        start = time.perf_counter()
        scores: list[Score] = await admitted(h.score(samples, settings.request_timeout_s))
        items = _scores_json(scores, name)
        return _json(
            {
                "reward": name,
                "scores": items,
                "errors": _errors(items),
                "elapsed_s": time.perf_counter() - start,
            }
        )

    @app.post(
        "/v1/rewards/{name:path}:score_group",
        response_model=GroupScoreResponse,
        openapi_extra=_request_schema(GroupScoreRequest),
        tags=["rewards"],
    )
    async def score_group(name: str, request: Request) -> Response:
        """Score groups (the G samples of one prompt each). A sample reward scores every
        member on its own, so trainers can call one endpoint for both kinds."""
        h = lookup(name)
        body = _parse(GroupScoreRequest, await request.body())
        check_batch(h, sum(len(g) for g in body.groups))
        groups = [[sample_from_json(s.model_dump(exclude_none=True)) for s in g] for g in body.groups]
        start = time.perf_counter()
        results: list[list[Score]] = await admitted(h.score_groups(groups, settings.request_timeout_s))
        items = [_scores_json(group, name) for group in results]
        return _json(
            {
                "reward": name,
                "scores": items,
                "errors": sum(_errors(group) for group in items),
                "elapsed_s": time.perf_counter() - start,
            }
        )

    @app.post(
        "/get_reward",
        response_model=OpenRLHFResponse,
        openapi_extra=_request_schema(OpenRLHFRequest),
        tags=["compatibility"],
    )
    async def get_reward(request: Request) -> Response:
        """OpenRLHF's `--remote_rm_url` protocol, scored by the configured reward."""
        if openrlhf is None:
            served = ", ".join(n for n, h in by_name.items() if h.kind == "sample") or "none"
            message = f"no reward is set for /get_reward; serve with --openrlhf-reward (one of: {served})"
            raise ClientError(404, message, "unknown_reward")
        body = _parse(OpenRLHFRequest, await request.body())
        h = by_name[openrlhf]
        check_batch(h, len(body.query))
        samples = _openrlhf_samples(body)
        scores: list[Score] = await admitted(h.score(samples, settings.request_timeout_s))
        failed = [s.error for s in scores if s.error is not None]
        if failed:  # OpenRLHF sees only a number: say here, once a request, that some are stand-ins
            logger.warning(
                "/get_reward: %d of %d items failed on %r and are reported as %g "
                "(flagged in extra_logs.reward_error); the first error: %s",
                len(failed),
                len(scores),
                h.name,
                settings.openrlhf_error_value,
                failed[0],
            )
        return _json(_openrlhf_response(scores, settings.openrlhf_error_value))

    for router in routers:
        app.include_router(router)
    _document_bodies(app, (ScoreRequest, GroupScoreRequest, OpenRLHFRequest))

    def reward_label(scope: Scope) -> str:
        name = scope.get("path_params", {}).get("name")
        if name is not None:
            return name if name in by_name else "unknown"
        return openrlhf or "" if scope["path"] == "/get_reward" else ""

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key, open_paths=OPEN_PATHS)
    app.add_middleware(RequestMetrics, metrics=metrics, reward_label=reward_label)
    return app


def _document_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add the schemas of the bodies the handlers parse by hand to the OpenAPI document."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in definition.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[model.__name__] = definition
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _openrlhf_target(by_name: dict[str, HostedReward], settings: ServerSettings) -> str | None:
    if settings.openrlhf_reward is not None:
        h = by_name.get(settings.openrlhf_reward)
        if h is None:
            raise ValueError(f"openrlhf_reward {settings.openrlhf_reward!r} is not among the hosted rewards")
        if h.kind != "sample":
            raise ValueError(
                f"openrlhf_reward {h.name!r} is a group reward; /get_reward scores single samples"
            )
        return h.name
    sample_rewards = [n for n, h in by_name.items() if h.kind == "sample"]
    return sample_rewards[0] if len(sample_rewards) == 1 else None


def _openrlhf_samples(body: OpenRLHFRequest) -> list[Sample]:
    """OpenRLHF sends prompt + response as one string; the response is what follows the
    prompt (the whole query when it does not start with the prompt)."""
    n = len(body.query)
    for field in ("prompts", "labels"):
        given = getattr(body, field)
        if given is not None and len(given) != n:
            raise ClientError(422, f"{field}: {len(given)} items for {n} queries", "invalid_request_error")
    samples = []
    for i, query in enumerate(body.query):
        prompt = body.prompts[i] if body.prompts is not None else ""
        completion = query[len(prompt) :] if prompt and query.startswith(prompt) else query
        reference = body.labels[i] if body.labels is not None else None
        samples.append(Sample.from_completion(completion, reference, prompt=prompt))
    return samples


def _openrlhf_response(scores: Sequence[Score], error_value: float) -> dict[str, Any]:
    def value(x: float) -> float:
        return x if math.isfinite(x) else error_value

    rewards = [error_value if s.error else value(s.value) for s in scores]
    names = sorted({k for s in scores for k in s.components})
    extra_logs = {k: [value(s.components.get(k, math.nan)) for s in scores] for k in names}
    extra_logs["reward_error"] = [float(s.error is not None) for s in scores]
    return {"rewards": rewards, "scores": rewards, "extra_logs": extra_logs}
