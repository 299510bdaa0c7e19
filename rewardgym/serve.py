"""`rewardgym serve`: compose registered rewards, environments and the sandbox into one
reward server and run it under uvicorn (one process, or several workers).

This is the only place that knows all three packages; `rewards.server` itself hosts any
`Reward` and knows nothing of environments (imports point trainer → envs → rewards →
sandbox, never up).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from rewards.base import GroupReward, Reward
from rewards.plugins import import_user_module
from rewards.registry import describe_reward, make_reward
from rewards.server import (
    EnvEntry,
    HostedReward,
    InlineExecutor,
    Limits,
    ProcessExecutor,
    RewardSpec,
    ServeConfig,
    ServeConfigError,
    ServerMetrics,
    ServerSettings,
    create_reward_app,
)
from rewards.server.metrics import MULTIPROCESS_ENV

if TYPE_CHECKING:
    from envs import MultiTurnEnv

CONFIG_ENV = "REWARDGYM_SERVE_CONFIG"  # the resolved config, for worker processes


def _registered_reward(name: str, registered: str, params: dict[str, Any]) -> Reward | GroupReward:
    try:
        return make_reward(registered, **params)
    except (TypeError, ValueError) as exc:
        raise ServeConfigError(f"reward {name!r}: {exc}") from None


def _make_env(entry: EnvEntry) -> MultiTurnEnv:
    from envs import make

    try:
        return make(entry.id, **entry.kwargs)
    except (TypeError, ValueError) as exc:
        raise ServeConfigError(f"env {entry.id!r}: {exc}") from None


def build_hosted(config: ServeConfig, metrics: ServerMetrics | None) -> list[HostedReward]:
    """Every reward and environment the config names, ready to serve."""
    for module in config.imports:
        import_user_module(module)
    hosted: list[HostedReward] = []
    for entry in config.rewards:
        limits = entry.over(config.defaults)
        reward = _registered_reward(entry.name, entry.registered, entry.params)
        timeout = limits.hosting().item_timeout_s
        if limits.executor == "process":
            spec = RewardSpec(entry.registered, entry.params, tuple(config.imports))
            executor: Any = ProcessExecutor(
                entry.name,
                spec,
                isinstance(reward, GroupReward),
                num_workers=limits.process_workers,
                timeout_s=timeout,
            )
        else:
            executor = InlineExecutor(entry.name, reward, timeout)
        source = f"registered reward {entry.registered!r}"
        signature = describe_reward(entry.registered)["parameters"]
        hosted.append(_hosted(entry.name, reward, executor, source, entry.params, limits, metrics, signature))
    if config.envs:
        from envs.env_reward import EnvReward

        for env_entry in config.envs:
            limits = env_entry.over(config.defaults)
            if limits.executor == "process":
                raise ServeConfigError(
                    f"env {env_entry.id!r}: environments are served inline (executor = 'process' "
                    "is for registered rewards; the math reward already uses worker processes)"
                )
            name = env_entry.served_name
            env_reward = EnvReward(_make_env(env_entry), name)
            executor = InlineExecutor(name, env_reward, limits.hosting().item_timeout_s)
            source = f"environment {env_entry.id}"
            hosted.append(_hosted(name, env_reward, executor, source, env_entry.kwargs, limits, metrics))
    return hosted


def _hosted(
    name: str,
    reward: Reward | GroupReward,
    executor: Any,
    source: str,
    parameters: dict[str, Any],
    limits: Limits,
    metrics: ServerMetrics | None,
    signature: dict[str, str | None] | None = None,
) -> HostedReward:
    return HostedReward(
        name,
        reward,
        executor,
        source=source,
        parameters=parameters,
        signature=signature,
        limits=limits.hosting(),
        metrics=metrics,
    )


def build_app(config: ServeConfig) -> FastAPI:
    """The FastAPI app for `config` (what each uvicorn worker runs)."""
    metrics = ServerMetrics()
    hosted = build_hosted(config, metrics)
    routers: list[APIRouter] = []
    closers: list[Callable[[], None]] = []
    if config.sandbox:
        from sandbox import make_sandbox
        from sandbox.fusion import fusion_router

        sandbox = make_sandbox(config.sandbox)
        routers.append(fusion_router(sandbox))
        closers.append(sandbox.close)
    settings = ServerSettings(
        api_key=config.api_key(),
        max_request_bytes=config.max_request_bytes,
        request_timeout_s=config.request_timeout_s,
        openrlhf_reward=config.openrlhf_reward,
        openrlhf_error_value=config.openrlhf_error_value,
    )
    try:
        return create_reward_app(hosted, settings, routers=routers, metrics=metrics, on_shutdown=closers)
    except ValueError as exc:
        for h in hosted:
            h.close()
        raise ServeConfigError(str(exc)) from None


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process: the config comes in `CONFIG_ENV`."""
    return build_app(ServeConfig.model_validate_json(os.environ[CONFIG_ENV]))


def check_config(config: ServeConfig) -> None:
    """Build each reward and environment once and throw them away, so a bad config fails
    here, in one line, rather than in every worker process."""
    if not config.rewards and not config.envs:
        raise ServeConfigError("nothing to serve: name a --reward or an --env (or give a --config file)")
    config.api_key()
    for module in config.imports:
        import_user_module(module)
    for entry in config.rewards:
        _registered_reward(entry.name, entry.registered, entry.params)
    for env_entry in config.envs:
        _make_env(env_entry).close()


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with Nagle's algorithm off on every connection.

    With `--workers` > 1 uvicorn binds the socket itself and asyncio then leaves
    TCP_NODELAY off; h11 writes headers and body separately, so every keep-alive response
    waited ~40 ms for the client's delayed ACK (uvicorn issue #3149; 44 ms p50 per request
    here, against 1.3 ms with one worker).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def serve(config: ServeConfig, log: Callable[[str], None]) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests get their answers first."""
    import uvicorn

    check_config(config)
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": "warning",
        "http": NoDelayH11Protocol,
        "timeout_graceful_shutdown": config.graceful_shutdown_s,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile": config.ssl_keyfile,
    }
    scheme = "https" if config.ssl_certfile else "http"
    names = [r.name for r in config.rewards] + [e.served_name for e in config.envs]
    extras = " and /run_code" if config.sandbox else ""
    log(
        f"serving {', '.join(names)}{extras} on {scheme}://{config.host}:{config.port} "
        f"({config.workers} worker{'s' if config.workers > 1 else ''})"
    )
    if config.workers == 1:
        uvicorn.run(build_app(config), **options)
        return
    metrics_dir = tempfile.mkdtemp(prefix="rewardgym-metrics-")
    os.environ[MULTIPROCESS_ENV] = metrics_dir
    os.environ[CONFIG_ENV] = config.model_dump_json()
    try:
        uvicorn.run(
            "rewardgym.serve:app_from_environment",
            factory=True,
            workers=config.workers,
            **options,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
