"""The GRPO-family training loop: rollouts → advantages → learner step → weight sync → log.

    for step in range(start, steps):
        groups   = collector.collect(step)            # G episodes per task, token level
        batch    = advantages within each group      # (r - mean) [/ std]
        metrics  = learner.train_step(batch)         # one optimizer step
        engine.update_weights(...)                   # vLLM only; transformers shares the model
        log metrics / samples / checkpoint

Under `torchrun` every rank plays its own share of the step's groups and the learner's
gradients are summed over ranks (DDP or FSDP2).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from envs.registration import env_description
from envs.suites import Suite, SuiteMember, get_suite
from rewards.plugins import import_user_module
from rewards.remote import RemoteReward
from trainer.adapter_push import AdapterPublisher
from trainer.advantages import group_advantages, overlong_penalty
from trainer.checkpoint import Checkpoints, load_trainable, trainable_state_dict
from trainer.config import TrainConfig, TrainConfigError
from trainer.distributed import init_distributed, wrap_for_ranks
from trainer.engines.base import Engine, SamplingParams
from trainer.engines.transformers_engine import TransformersEngine
from trainer.learner import Learner, TrainSequence
from trainer.metrics_log import MetricsLogger
from trainer.policy import Policy, full_tensor, load_policy
from trainer.rollouts import RolloutCollector, RolloutGroup, StepRollouts
from trainer.samples import write_samples
from trainer.step_report import Progress, rollout_metrics, sample_groups

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. every rollout failed for several steps); the message says why."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps_done: int
    resumed_from: int  # 0 for a fresh run
    first_reward: float
    last_reward: float
    seconds: float


T = TypeVar("T")
MAX_FAILED_STEPS = 3  # consecutive steps in which every group failed before we stop


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) the training run described by `config`."""
    start_time = time.monotonic()
    rank, world_size = init_distributed()
    for module in config.imports:
        import_user_module(module)
    torch.manual_seed(config.seed + rank)
    run_dir = config.run_dir
    overlap = config.rollout.overlap
    remote = _remote_reward(config)
    suite = _suite(config, remote)
    policy = load_policy(config.model, config.lora, keep_reference=config.loss.kl_coef > 0)
    train_model = wrap_for_ranks(policy, config.distributed, config.engine.kind) if world_size > 1 else None
    learner = Learner(
        policy,
        config.optim,
        config.loss,
        max_tokens=config.rollout.max_tokens,
        temperature=config.rollout.temperature,
        total_steps=config.steps,
        train_model=train_model,
    )
    checkpoints = Checkpoints(run_dir, keep=config.keep_checkpoints)
    config_record = config.to_dict()
    start_step = 0
    latest = checkpoints.latest()
    engine_weights: dict[str, torch.Tensor] | None = None  # what generated the next step (overlap)
    if latest is not None:
        resumed = checkpoints.restore(latest, policy, learner, config_record)
        start_step, engine_weights = resumed.step, resumed.engine_weights
        if rank == 0:
            logger.info("resumed from %s (step %d)", latest, start_step)
    engine = _engine(config, policy, separate=overlap)
    sync = _WeightSync(
        engine, policy, config.engine.kind, adapters=_adapter_publisher(config, engine, policy)
    )
    params = SamplingParams(
        max_tokens=config.rollout.max_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
    )
    collector = RolloutCollector(
        suite,
        engine,
        params,
        group_size=config.rollout.group_size,
        groups_per_step=config.rollout.groups_per_step,
        seed=config.seed,
        max_concurrent_groups=config.rollout.max_concurrent_groups,
        dynamic_sampling=config.rollout.dynamic_sampling,
        max_refill_rounds=config.rollout.max_refill_rounds,
        group_reward_weight=config.rollout.group_reward_weight,
        rank=rank,
        world_size=world_size,
    )
    metrics_log = (
        MetricsLogger(run_dir, tensorboard=config.tensorboard, resume_step=start_step) if rank == 0 else None
    )
    rollout_loop = _LoopThread()

    def start_rollouts(step: int, weights: dict[str, torch.Tensor] | None = None) -> Future[StepRollouts]:
        """Give the engine the current weights (or `weights`), then collect `step` in the background."""
        sync.push(weights)
        return rollout_loop.submit(collector.collect(step))

    rewards_seen: list[float] = []
    failed_steps = 0
    bar = Progress(config.steps, start_step, enabled=progress and rank == 0)
    # With overlap, step s+1's rollouts are generated (by the weights before step s's update)
    # while step s trains: one step off-policy, which `loss.is_cap` corrects for.
    pending = start_rollouts(start_step, engine_weights) if overlap and start_step < config.steps else None
    try:
        for step in range(start_step, config.steps):
            step_start = time.monotonic()
            if pending is None:
                pending = start_rollouts(step)
            if not overlap and isinstance(engine, TransformersEngine):
                engine.drive(pending)  # generate on this (the main) thread while rollouts run
            rollouts = pending.result()
            wait_seconds = time.monotonic() - step_start
            pending = start_rollouts(step + 1) if overlap and step + 1 < config.steps else None
            failed_steps = failed_steps + 1 if _all_failed(rollouts, world_size) else 0
            if failed_steps >= MAX_FAILED_STEPS:
                raise TrainingError(
                    f"every rollout failed for {failed_steps} steps in a row; first error: "
                    f"{rollouts.failed[0].first_error if rollouts.failed else 'unknown'}"
                )
            sequences, advantages = _sequences(rollouts.groups, config)
            done = step + 1
            # Every rank takes part in saving (FSDP2 gathers the shards); rank 0 writes.
            checkpoint_due = done % config.checkpoint_every == 0 or done == config.steps
            # With overlap, step `done` is generated by the weights before this update: keep them.
            next_engine_weights = _snapshot(policy) if overlap and checkpoint_due else None
            train_start = time.monotonic()
            learner_metrics = learner.train_step(sequences)
            train_seconds = time.monotonic() - train_start
            metrics = rollout_metrics(rollouts, config, world_size)
            metrics.update(learner_metrics)
            metrics.update(
                {
                    "time/rollout": rollouts.seconds,
                    "time/rollout_wait": wait_seconds,
                    "time/reward": rollouts.env_seconds,
                    "time/train": train_seconds,
                    "time/weight_sync": sync.seconds,
                    "time/step": time.monotonic() - step_start,
                }
            )
            metrics["tokens_per_s"] = metrics.pop("_tokens", 0.0) / max(metrics["time/step"], 1e-9)
            if metrics_log is not None:
                metrics_log.log(done, metrics)
            if not math.isnan(metrics["reward/mean"]):
                rewards_seen.append(metrics["reward/mean"])
            if rank == 0 and (done % config.samples_every == 0 or done == 1):
                write_samples(run_dir, done, sample_groups(rollouts.groups, advantages))
            if checkpoint_due:
                checkpoints.save(done, policy, learner, config_record, engine_weights=next_engine_weights)
            if world_size > 1:
                dist.barrier()
            bar.update(done, metrics)
    finally:
        bar.close()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(Exception):
                pending.result(timeout=60)
        collector.close()
        rollout_loop.run(engine.close())
        if remote is not None:
            rollout_loop.run(remote.aclose())  # its connections live on the rollout loop
        rollout_loop.close()
        if metrics_log is not None:
            metrics_log.close()
    if rank == 0:
        _plot(run_dir)
    return TrainResult(
        run_dir=run_dir,
        steps_done=config.steps,
        resumed_from=start_step,
        first_reward=rewards_seen[0] if rewards_seen else math.nan,
        last_reward=rewards_seen[-1] if rewards_seen else math.nan,
        seconds=time.monotonic() - start_time,
    )


def _snapshot(policy: Policy) -> dict[str, torch.Tensor]:
    return trainable_state_dict(policy)  # collective; full weights on rank 0


class _LoopThread:
    """An asyncio event loop on its own thread: rollouts run there, training on the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rollouts", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()


class _WeightSync:
    """Brings the engine to the policy's weights before each collection.

    The transformers engine normally generates with the trainer's own model (nothing to do);
    with overlap or FSDP2 it has a copy, which gets the full trainable weights; vLLM gets merged
    weights. Under FSDP2 gathering the weights is collective: every rank pushes at the same point.
    A remote server (`adapters`) gets the LoRA adapter, saved as a new version, loaded by path.
    """

    def __init__(
        self, engine: Engine, policy: Policy, engine_kind: str, *, adapters: AdapterPublisher | None = None
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.engine_kind = engine_kind
        self.adapters = adapters
        self.shared = getattr(engine, "model", None) is policy.model
        self.seconds = 0.0

    def push(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        start = time.monotonic()
        params = self.policy.trainable_parameters
        if weights is not None:  # resuming with overlap: the weights that generated this step
            current = trainable_state_dict(self.policy)
            load_trainable(self.policy, weights)
        if self.adapters is not None:
            self.adapters.push()
        elif not self.shared:
            if self.engine_kind == "vllm":
                self.engine.update_weights(self.policy.merged_weights())
            else:
                self.engine.update_weights((name, full_tensor(p.detach())) for name, p in params.items())
        if weights is not None:
            load_trainable(self.policy, current)
        self.seconds = time.monotonic() - start


# -- set-up ----------------------------------------------------------------------------------------


def _remote_reward(config: TrainConfig) -> RemoteReward | None:
    """The reward server's reward for rollout.env, as `rewardgym eval --reward-url` makes it."""
    rollout = config.rollout
    if not rollout.reward_url:
        return None
    assert rollout.env is not None  # the config refuses reward_url with a suite
    try:
        return RemoteReward(
            rollout.remote_reward or rollout.env, rollout.reward_url, api_key_env=rollout.reward_api_key_env
        )
    except ValueError as exc:
        raise TrainConfigError(f"rollout.reward_api_key_env: {exc}") from None


def _suite(config: TrainConfig, reward: RemoteReward | None = None) -> Suite:
    """What the rollouts sample from, each member made once now: a wrong id or argument is a
    config error naming the field, not a failure inside a rollout."""
    rollout = config.rollout
    if rollout.suite is not None:
        try:
            suite = get_suite(rollout.suite)
        except ValueError as exc:
            raise TrainConfigError(f"rollout.suite: {exc}") from None
        for member in suite.members:
            _check_member(member, f"rollout.suite ({suite.name}, member {member.name!r})")
        return suite
    assert rollout.env is not None
    try:
        env_description(rollout.env)  # an unknown id raises, listing the registered ones
    except LookupError as exc:
        raise TrainConfigError(f"rollout.env: {exc}") from None
    kwargs = dict(rollout.env_kwargs)
    if _takes_split(rollout.env):
        kwargs = {"split": "train", **kwargs}
    if reward is not None:
        kwargs["reward"] = reward
    member = SuiteMember(rollout.env, kwargs=kwargs)
    _check_member(member, "rollout.env_kwargs" if reward is None else "rollout.env_kwargs / reward_url")
    return Suite(rollout.env, (member,))


def _check_member(member: SuiteMember, where: str) -> None:
    try:
        member.make_env().close()
    except (LookupError, TypeError, ValueError) as exc:
        raise TrainConfigError(f"{where}: {exc}") from None


def _takes_split(env_id: str) -> bool:
    import inspect

    import gymnasium

    entry = gymnasium.spec(env_id).entry_point
    target = gymnasium.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return "split" in inspect.signature(target).parameters


def _engine(config: TrainConfig, policy: Policy, *, separate: bool) -> Engine:
    """The rollout engine; `separate` gives the transformers engine its own copy of the model."""
    kind = config.engine.kind
    if kind == "transformers":
        if policy.generator is not None:  # FSDP2: the unsharded copy (see trainer/distributed.py)
            model = policy.generator
        else:
            model = copy.deepcopy(policy.model).eval() if separate else policy.model
        return TransformersEngine(
            model,
            policy.tokenizer,
            threaded=separate,  # sequential steps: the main thread generates (see `drive`)
            chat_format=config.model.chat_format,
            max_batch_size=config.engine.max_batch_size,
            name=Path(config.model.name).name,
        )
    if kind == "vllm":
        from trainer.engines.vllm_engine import VLLMEngine

        settings = config.engine
        extra: dict[str, Any] = {"enforce_eager": settings.enforce_eager}
        if settings.kv_cache_gib is not None:
            extra["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * 2**30)
        return VLLMEngine.from_pretrained(
            config.model.name,
            chat_format=config.model.chat_format,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=settings.max_model_len,
            dtype=settings.vllm_dtype,
            seed=config.seed,
            **extra,
        )
    if kind == "openai":
        return _remote_engine(config, policy)
    raise ValueError(f"unknown engine kind {kind!r}")


def _remote_engine(config: TrainConfig, policy: Policy) -> Engine:
    """An OpenAI-compatible server generating from token ids; checked to serve the model now,
    rather than failing every rollout."""
    import os

    from trainer.engines.openai_engine import OpenAIEngine

    settings = config.engine
    assert settings.base_url is not None and settings.served_model is not None  # the config checks
    engine = OpenAIEngine(
        settings.base_url,
        settings.served_model,
        api="completions",
        api_key=os.environ.get(settings.api_key_env, ""),
        timeout_s=settings.timeout_s,
        tokenizer=policy.tokenizer,
        chat_format=config.model.chat_format,
    )
    served = engine.served_models()
    if settings.served_model not in served:
        raise TrainConfigError(
            f"engine.served_model: {settings.base_url} serves {served}, not {settings.served_model!r}"
        )
    return engine


def _adapter_publisher(config: TrainConfig, engine: Engine, policy: Policy) -> AdapterPublisher | None:
    """For a remote engine: what saves the adapter each step and has the server load it."""
    if config.engine.kind != "openai":
        return None
    from trainer.engines.openai_engine import OpenAIEngine

    assert isinstance(engine, OpenAIEngine)
    directory = config.engine.adapter_dir or config.run_dir / "engine_adapters"
    return AdapterPublisher(engine, policy, directory, config.engine.lora_name)


# -- per step ------------------------------------------------------------------------------------


def _sequences(
    groups: list[RolloutGroup], config: TrainConfig
) -> tuple[list[TrainSequence], list[list[float]]]:
    """Advantages within each group, one training sequence per trajectory."""
    scale = "none" if config.loss.algorithm == "dr_grpo" else "std"
    sequences: list[TrainSequence] = []
    all_advantages: list[list[float]] = []
    for group in groups:
        rewards = list(_shaped_rewards(group, config))
        advantages = group_advantages(rewards, scale=scale)
        all_advantages.append(advantages)
        for trajectory, advantage in zip(group.trajectories, advantages, strict=True):
            if trajectory.num_sampled:
                sequences.append(
                    TrainSequence(
                        trajectory.token_ids, trajectory.loss_mask, trajectory.sampler_logprobs, advantage
                    )
                )
    return sequences, all_advantages


def _shaped_rewards(group: RolloutGroup, config: TrainConfig) -> list[float]:
    """The group's rewards with DAPO's soft overlong penalty added, when it is on (per reply:
    see `overlong_penalty`)."""
    buffer = config.loss.overlong_buffer
    if buffer is None:
        return list(group.rewards_G)
    limit = config.rollout.max_tokens
    return [
        r + overlong_penalty(t.reply_lengths, limit, buffer)
        for r, t in zip(group.rewards_G, group.trajectories, strict=True)
    ]


def _all_failed(rollouts: StepRollouts, world_size: int) -> bool:
    """Every group of the step failed, on every rank."""
    flag = torch.tensor([float(bool(rollouts.failed) and not rollouts.groups)])
    if world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _plot(run_dir: Path) -> None:
    try:
        from trainer.plot import plot_run

        plot_run(run_dir)
    except Exception as exc:  # a plot is a convenience; the run's data is already on disk
        logger.warning("could not write plots: %s (run `rewardgym plot %s` to retry)", exc, run_dir)
