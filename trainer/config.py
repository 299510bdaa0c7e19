"""The training configuration: one validated, documented tree read from TOML or YAML.

Every field has a description (`rewardgym train --help-config` prints them all); unknown
keys are errors, so a typo never silently falls back to a default. Command-line
overrides use dotted paths: `--set loss.algorithm=dapo --set optim.lr=1e-5`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rewards.client import _normalise_urls
from rewards.config_file import ConfigFileError, describe_validation_error, read_config_file
from trainer.losses import DEFAULT_CLIP, Algorithm, LossSettings


class TrainConfigError(ConfigFileError):
    """The training configuration is invalid; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: str = Field("gemma-3-270m", description="model directory, or the embedded default 'gemma-3-270m'")
    chat_format: Literal["auto", "template", "plain"] = Field(
        "auto",
        description="'template' = the tokenizer's chat template, 'plain' = User:/Assistant: transcript",
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="'auto' = bfloat16 on GPU, float32 on CPU"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward to save memory"
    )


class LoraSection(_Section):
    enabled: bool = Field(True, description="train LoRA adapters (peft) instead of all weights")
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="adapter scale numerator (scale = alpha / rank)")
    dropout: float = Field(0.0, ge=0, lt=1, description="adapter dropout")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        description="names of the linear layers that get adapters",
    )


class EngineSection(_Section):
    kind: Literal["transformers", "vllm", "openai"] = Field(
        "transformers",
        description="'transformers' shares the trainer's model (no weight copy); 'vllm' runs in-process "
        "and gets the weights after every step; 'openai' generates on a remote vLLM server (or "
        "`rewardgym serve-model --enable-lora`) and loads the LoRA adapter there after every step",
    )
    base_url: str | None = Field(
        None, description="openai: the server's API root, e.g. http://127.0.0.1:8000/v1"
    )
    served_model: str | None = Field(
        None,
        description="openai: the base model's name on the server (same weights and tokenizer as model.name)",
    )
    lora_name: str = Field(
        "rewardgym-policy", min_length=1, description="openai: the name the trained adapter is loaded under"
    )
    adapter_dir: Path | None = Field(
        None,
        description="openai: where each step's adapter is saved for the server to read, at the same path "
        "(default RUN_DIR/engine_adapters; a shared mount when the server is on another machine)",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="openai: environment variable with the server's API key (sent if set)"
    )
    timeout_s: float = Field(600.0, gt=0, description="openai: seconds one request may take")
    max_batch_size: int = Field(64, ge=1, description="transformers: most requests generated as one batch")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="vllm: memory share (CPU: of all RAM, this process included)"
    )
    vllm_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="vllm: weights' dtype ('auto' = bfloat16 for a float32 checkpoint, also on CPU)"
    )
    kv_cache_gib: float | None = Field(
        None, gt=0, description="vllm: KV cache size (steadier than the share)"
    )
    enforce_eager: bool = Field(
        False, description="vllm: skip compilation (starts in seconds, decodes slower)"
    )
    max_model_len: int = Field(2048, ge=16, description="vllm: longest prompt + completion")

    @model_validator(mode="after")
    def _remote_server_named(self) -> EngineSection:
        if self.kind == "openai":
            if not self.base_url or not self.served_model:
                raise ValueError("kind = 'openai' needs base_url and served_model (the server and its model)")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self


class RolloutSection(_Section):
    env: str | None = Field("rewardgym/Math-v0", description="environment id (or give 'suite' instead)")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the env")
    suite: str | None = Field(None, description="a registered suite name or a suite .toml/.yaml file")
    group_size: int = Field(8, ge=2, description="G: rollouts per task (the group advantages compare)")
    groups_per_step: int = Field(8, ge=1, description="tasks per optimizer step (batch = G × this)")
    max_tokens: int = Field(256, ge=1, description="generation budget per assistant turn")
    temperature: float = Field(
        1.0, gt=0, description="sampling temperature (training samples must be random)"
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_concurrent_groups: int = Field(64, ge=1, description="groups in flight at once")
    dynamic_sampling: Literal["off", "drop", "refill"] = Field(
        "off",
        description="zero-variance groups (all rewards equal: no gradient): keep them ('off'), drop them, "
        "or drop and sample new groups until the step has `groups_per_step` informative ones (DAPO)",
    )
    max_refill_rounds: int = Field(4, ge=0, description="'refill': extra sampling rounds per step at most")
    group_reward_weight: float = Field(1.0, description="weight of the env's group reward, if it has one")
    overlap: bool = Field(
        False,
        description="generate the next step's rollouts while this step trains (one step off-policy; "
        "set loss.is_cap to correct for it); the transformers engine then keeps its own copy of the model",
    )
    reward_url: tuple[str, ...] = Field(
        (),
        description="score rollout.env's episodes with a reward server (`rewardgym serve --env ID`) "
        "instead of in-process; several URLs share the load and fail over",
    )
    remote_reward: str | None = Field(
        None, description="with reward_url: the served reward's name (default: the env id)"
    )
    reward_api_key_env: str | None = Field(
        None, description="with reward_url: the environment variable holding the server's bearer token"
    )

    @model_validator(mode="before")
    @classmethod
    def _suite_replaces_the_default_env(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("suite") is not None and "env" not in data:
            return {**data, "env": None}
        return data

    @field_validator("reward_url", mode="before")
    @classmethod
    def _one_url_or_several(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("reward_url")
    @classmethod
    def _urls_look_like_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalise_urls(value)) if value else value

    @model_validator(mode="after")
    def _one_source(self) -> RolloutSection:
        if (self.env is None) == (self.suite is None):
            raise ValueError("give exactly one of rollout.env and rollout.suite")
        if not self.reward_url:
            if self.remote_reward is not None or self.reward_api_key_env is not None:
                raise ValueError(
                    "rollout.remote_reward and rollout.reward_api_key_env go with rollout.reward_url"
                )
        elif self.suite is not None:
            raise ValueError(
                "rollout.reward_url applies to rollout.env; a suite's members keep their own rewards"
            )
        elif "reward" in self.env_kwargs:
            raise ValueError("give rollout.reward_url or rollout.env_kwargs.reward, not both")
        return self


class LossSection(_Section):
    algorithm: Algorithm = Field("grpo", description="'grpo', 'dr_grpo', 'dapo' or 'gspo'")
    clip_low: float | None = Field(
        None, ge=0, lt=1, description="ratio floor 1 - clip_low (default per algorithm)"
    )
    clip_high: float | None = Field(
        None, ge=0, description="ratio ceiling 1 + clip_high (default per algorithm)"
    )
    kl_coef: float = Field(0.0, ge=0, description="β of the k3 KL to the frozen initial policy (0 = off)")
    is_cap: float | None = Field(
        None, gt=0, description="truncated importance sampling engine→trainer, capped at this (None = off)"
    )
    overlong_buffer: int | None = Field(
        None,
        ge=1,
        description="DAPO soft overlong penalty: a reply longer than rollout.max_tokens minus this many "
        "tokens loses up to 1 (linearly, -1 at the limit); each reply is measured against the per-turn "
        "limit and an episode gets its longest reply's penalty",
    )
    epochs: int = Field(1, ge=1, description="optimizer passes over each batch (>1 makes the ratio matter)")

    def settings(self) -> LossSettings:
        low, high = DEFAULT_CLIP[self.algorithm]
        return LossSettings(
            algorithm=self.algorithm,
            clip_low=low if self.clip_low is None else self.clip_low,
            clip_high=high if self.clip_high is None else self.clip_high,
            kl_coef=self.kl_coef,
            is_cap=self.is_cap,
        )


class OptimSection(_Section):
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "cosine"] = Field("constant", description="after warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None = off)")
    micro_batch_size: int = Field(
        8, ge=1, description="sequences per forward/backward (gradient accumulation)"
    )


class TrainConfig(_Section):
    run_dir: Path = Field(Path("runs/grpo"), description="metrics, checkpoints, samples and plots go here")
    seed: int = Field(0, description="seeds task choice, sampling and initialisation")
    steps: int = Field(50, ge=1, description="optimizer steps")
    checkpoint_every: int = Field(10, ge=1, description="steps between checkpoints (and one at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    samples_every: int = Field(10, ge=1, description="steps between rollout samples (markdown + HTML)")
    tensorboard: bool = Field(True, description="also write TensorBoard events")
    distributed: Literal["ddp", "fsdp2"] = Field(
        "ddp", description="under torchrun: how the learner is wrapped"
    )
    imports: tuple[str, ...] = Field(
        (), description="modules or .py files imported first (they register your own envs and rewards)"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)

    @model_validator(mode="after")
    def _remote_engine_takes_lora_only(self) -> TrainConfig:
        if self.engine.kind == "openai" and not self.lora.enabled:
            raise ValueError(
                "engine.kind = 'openai' needs lora.enabled = true: only LoRA adapters can be pushed to a "
                "remote server (full fine-tuning needs engine.kind = 'transformers' or 'vllm')"
            )
        return self

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
        """The file's settings (or the defaults), then `key.path=value` overrides, validated."""
        try:
            data: dict[str, Any] = dict(read_config_file(path, "training config")) if path else {}
        except TrainConfigError:
            raise
        except ConfigFileError as exc:
            raise TrainConfigError(str(exc)) from None
        for override in overrides:
            key, value = parse_override(override)
            set_dotted(data, key, value)
        return cls.from_dict(data, where=str(path) if path else "config")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> TrainConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TrainConfigError(f"{where}: {describe_validation_error(exc, root='top level')}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_override(text: str) -> tuple[str, Any]:
    """`loss.algorithm=dapo` → ("loss.algorithm", "dapo"); values are read as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(
            f"an override is KEY=VALUE with a dotted key (e.g. optim.lr=1e-5), got {text!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-5" as a string
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"cannot set {key}: {part} is not a section")
        node = child
    node[leaf] = value


def describe_fields(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field, for `--help-config` and the README."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_fields(annotation, f"{prefix}{name}."))
            continue
        default = field.get_default(call_default_factory=True)
        shown = json.dumps(list(default) if isinstance(default, tuple) else default, default=str)
        rows.append((f"{prefix}{name}", shown, field.description or ""))
    return rows


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
