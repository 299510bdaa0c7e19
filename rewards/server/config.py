"""`rewardgym serve` configuration: a TOML or YAML file, command-line flags on top.

    host = "127.0.0.1"           # loopback unless told otherwise
    port = 8000
    workers = 2                  # uvicorn worker processes
    api_key_env = "REWARDGYM_API_KEY"
    imports = ["my_rewards.py"]  # modules that register the user's own rewards
    sandbox = "bubblewrap"       # also serve SandboxFusion's POST /run_code
    openrlhf_reward = "math"     # what POST /get_reward scores with

    [defaults]                   # limits for every hosted reward, unless it sets its own
    item_timeout_s = 30

    [[rewards]]
    name = "math"                # the name clients use; `reward` defaults to it
    [[rewards]]
    name = "answer_format"
    reward = "format"            # a registered reward...
    params = { format = "answer_tag" }   # ...with its parameters
    executor = "process"         # CPU-bound: run in worker processes
    process_workers = 2

    [[envs]]                     # an environment's reward, under the environment's id
    id = "rewardgym/Math-v0"

Unknown keys are errors that name the key, so a typo never silently does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rewards.config_file import ConfigFileError, describe_validation_error, read_config_file
from rewards.server.hosted import HostingLimits


class ServeConfigError(ConfigFileError):
    """A configuration we cannot serve, with the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Per-reward limits; unset fields fall back to `[defaults]`, then to built-in values."""

    item_timeout_s: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queued: int | None = Field(default=None, ge=1)
    max_batch_size: int | None = Field(default=None, ge=1)
    executor: Literal["inline", "process"] | None = None
    process_workers: int | None = Field(default=None, ge=1)

    def over(self, base: Limits) -> Limits:
        """These limits with unset fields taken from `base`."""
        return base.model_copy(update=self.model_dump(exclude_none=True))

    def hosting(self) -> HostingLimits:
        built_in = HostingLimits()
        return HostingLimits(
            item_timeout_s=self.item_timeout_s
            if self.item_timeout_s is not None
            else built_in.item_timeout_s,
            max_concurrency=self.max_concurrency or built_in.max_concurrency,
            max_queued=self.max_queued or built_in.max_queued,
            max_batch_size=self.max_batch_size or built_in.max_batch_size,
        )


class RewardEntry(Limits):
    name: str = Field(min_length=1)
    reward: str | None = Field(default=None, description="the registered reward; default: name")
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def registered(self) -> str:
        return self.reward or self.name


class EnvEntry(Limits):
    id: str = Field(min_length=1)
    name: str | None = Field(default=None, description="the name clients use; default: the env id")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @property
    def served_name(self) -> str:
        return self.name or self.id


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    api_key_env: str | None = None
    api_key_file: Path | None = None
    imports: list[str] = Field(default_factory=list)
    sandbox: str | None = Field(default=None, description="a sandbox backend: also serve POST /run_code")
    openrlhf_reward: str | None = None
    openrlhf_error_value: float = 0.0
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Under the 180 s that OpenRLHF's and our client wait, so an answer always arrives first.
    request_timeout_s: float | None = Field(default=150.0, gt=0)
    graceful_shutdown_s: float | None = Field(default=60.0, ge=0)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    defaults: Limits = Field(default_factory=Limits)
    rewards: list[RewardEntry] = Field(default_factory=list)
    envs: list[EnvEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        names = [r.name for r in self.rewards] + [e.served_name for e in self.envs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names served twice: {', '.join(repeated)}")
        if self.api_key_env and self.api_key_file:
            raise ValueError("give api_key_env or api_key_file, not both")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both ssl_certfile and ssl_keyfile")
        return self

    @classmethod
    def from_mapping(cls, data: Any, where: str = "config") -> ServeConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ServeConfigError(f"{where}: {describe_validation_error(exc, root='top level')}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ServeConfig:
        return cls.from_mapping(read_config_file(path, "server config"), where=str(path))

    def api_key(self) -> str | None:
        """The bearer token clients must send, read from the named variable or file."""
        import os

        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise ServeConfigError(
                    f"api_key_env: the environment variable {self.api_key_env} is empty or unset"
                )
            return key
        if self.api_key_file:
            try:
                key = self.api_key_file.read_text().strip()
            except OSError as exc:
                raise ServeConfigError(
                    f"api_key_file: cannot read {self.api_key_file}: {exc.strerror}"
                ) from None
            if not key:
                raise ServeConfigError(f"api_key_file: {self.api_key_file} is empty")
            return key
        return None
