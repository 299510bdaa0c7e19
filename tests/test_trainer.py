"""The training loop end to end on a real tiny model (built in the test, loaded with from_pretrained).

Faults are produced for real: an environment that raises, a reward server that is not
there, a NaN advantage fed to the real learner, a run killed with SIGKILL and resumed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from envs.suites import Suite, SuiteMember
from envs.tasks import Task
from trainer.config import TrainConfig
from trainer.engines import SamplingParams, TransformersEngine
from trainer.grpo import TrainingError, _shaped_rewards, train
from trainer.metrics_log import read_metrics
from trainer.rollout import EpisodeResult
from trainer.rollouts import RolloutCollector, RolloutGroup, StepRollouts, Trajectory
from trainer.step_report import rollout_metrics

import train_envs  # noqa: F401 - registers tests/LetterA-v0
from conftest import free_port, served

ENVS_FILE = str(Path(__file__).with_name("train_envs.py"))
REPO = Path(__file__).resolve().parents[1]


def tiny_config(model_dir: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    """Full fine-tuning of the tiny model on tests/LetterA-v0, small and fast."""
    base = [
        f"model.name={model_dir}",
        f"run_dir={run_dir}",
        "imports=[train_envs]",  # already imported here; the CLI tests import it by path
        "rollout.env=tests/LetterA-v0",
        "rollout.group_size=8",
        "rollout.groups_per_step=4",
        "rollout.max_tokens=16",
        "lora.enabled=false",
        "optim.lr=3e-3",
        "tensorboard=false",
        "steps=4",
    ]
    return TrainConfig.load(None, [*base, *overrides])


def rewards(run_dir: Path) -> list[float]:
    return [row["reward/mean"] for row in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_a_tiny_model_learns_the_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The proof that it learns: reward well above the start within 60 steps (~15 s here)."""
    result = train(tiny_config(tiny_model_dir, tmp_path / "run", "steps=60"), progress=False)
    curve = rewards(tmp_path / "run")
    start, end = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert end > start + 0.3, f"reward went from {start:.3f} to {end:.3f}"
    assert result.last_reward == curve[-1]
    assert (tmp_path / "run" / "plots" / "reward.png").stat().st_size > 1000
    assert (tmp_path / "run" / "samples" / "step_000060.md").is_file()


@pytest.mark.parametrize("algorithm", ["dr_grpo", "dapo", "gspo"])
def test_every_algorithm_trains_with_lora_and_kl(
    tiny_model_dir: Path, tmp_path: Path, algorithm: str
) -> None:
    config = tiny_config(
        tiny_model_dir,
        tmp_path / "run",
        f"loss.algorithm={algorithm}",
        "lora.enabled=true",
        "lora.rank=4",
        "loss.kl_coef=0.05",
        "loss.is_cap=2.0",
        "loss.epochs=2",
        "optim.micro_batch_size=3",
        "steps=3",
        "model.gradient_checkpointing=true",
        "loss.overlong_buffer=4",
    )
    train(config, progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
        assert row["kl"] >= 0 and 0 <= row["clip_frac/high"] <= 1
    assert rows[-1]["kl"] > 0  # the adapters moved the policy away from the reference
    adapter = tmp_path / "run" / "checkpoints" / "step_000003" / "model" / "adapter_model.safetensors"
    assert adapter.is_file()  # the LoRA adapter is saved the way peft loads it


def test_metrics_cover_rewards_components_lengths_and_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    train(tiny_config(tiny_model_dir, tmp_path / "run", "steps=2", "tensorboard=true"), progress=False)
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    for key in (
        "reward/mean",
        "reward/std",
        "reward/tests/LetterA-v0/mean",
        "reward/tests/LetterA-v0/std",
        "component/share_a/mean",
        "component/share_a/std",
        "episodes/errors",
        "episodes/reward_errors",
        "frac_zero_std",
        "kl",
        "entropy",
        "clip_frac/low",
        "clip_frac/high",
        "length/completion_mean",
        "tokens_per_s",
        "time/rollout",
        "time/reward",
        "time/train",
        "time/weight_sync",
        "grad_norm",
        "lr",
    ):
        assert key in row and row[key] is not None, key
    assert row["entropy"] > 0 and row["tokens_per_s"] > 0
    # one environment: its reward statistics are the step's; replies differ, so do their rewards
    assert row["reward/tests/LetterA-v0/std"] == pytest.approx(row["reward/std"]) and row["reward/std"] > 0
    assert row["component/share_a/std"] == pytest.approx(row["reward/std"])  # the reward is share_a
    assert row["component/length/std"] > 0
    assert row["episodes/errors"] == 0 and row["episodes/reward_errors"] == 0
    assert "reward/overlong_penalty" not in row  # only with loss.overlong_buffer
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def _trajectory(reply_lengths: tuple[int, ...], reward: float = 0.0, error: str | None = None) -> Trajectory:
    """A hand-made episode: a 5-token prompt, then the replies with 3 feedback tokens between them."""
    mask: list[bool] = [False] * 5
    spans = []
    for i, length in enumerate(reply_lengths):
        if i:
            spans.append((len(mask), len(mask) + 3))
            mask += [False] * 3
        mask += [True] * length
    episode = EpisodeResult(
        env_name="hand",
        task_id="t",
        sample_index=0,
        messages=(),
        reward=math.nan if error else reward,
        components={},
        passed=None,
        reward_error=None,
        error=error,
        turns=len(reply_lengths),
        num_tokens=sum(reply_lengths),
        terminated=True,
        truncated=False,
        finish_reasons=("stop",) * len(reply_lengths),
        seconds=0.0,
    )
    ids = tuple(range(len(mask)))
    return Trajectory(episode, ids, tuple(mask), (0.0,) * len(mask), 5, tuple(spans))


def _group(*trajectories: Trajectory) -> RolloutGroup:
    rewards = tuple(t.episode.reward for t in trajectories)
    return RolloutGroup("hand", Task("t", "q"), trajectories, rewards, slot=0)


def test_the_overlong_penalty_measures_each_reply_against_the_per_turn_limit() -> None:
    """DAPO's soft penalty with max_tokens 192 and buffer 32: it starts at 160 tokens per reply.
    Three 60-token replies (180 in all, nothing cut) lose nothing; a 176-token reply loses
    (176 - 160) / 32 = 0.5; a reply cut at 192 loses 1; an episode pays for its longest reply."""
    config = TrainConfig.load(
        None, ["loss.algorithm=dapo", "loss.overlong_buffer=32", "rollout.max_tokens=192"]
    )
    group = _group(
        _trajectory((60, 60, 60), reward=1.0),
        _trajectory((176,), reward=1.0),
        _trajectory((192,), reward=1.0),
        _trajectory((60, 176), reward=0.0),
    )
    assert [t.reply_lengths for t in group.trajectories] == [(60, 60, 60), (176,), (192,), (60, 176)]
    assert _shaped_rewards(group, config) == pytest.approx([1.0, 0.5, 0.0, -0.5])
    metrics = rollout_metrics(StepRollouts(groups=[group], sampled=1), config, world_size=1)
    assert metrics["reward/overlong_penalty"] == pytest.approx((0 - 0.5 - 1 - 0.5) / 4)
    assert metrics["reward/mean"] == pytest.approx(0.75)  # the rewards themselves, unshaped
    off = TrainConfig.load(None, ["rollout.max_tokens=192"])
    assert _shaped_rewards(group, off) == [1.0, 1.0, 1.0, 0.0]


def test_error_metrics_count_failed_episodes_not_groups() -> None:
    config = TrainConfig.load(None, [])
    good = _group(_trajectory((4,), 1.0), _trajectory((4,), 0.0))
    one_failed = _group(_trajectory((4,), 1.0), _trajectory((4,), error="env: broke"))
    two_failed = _group(_trajectory((4,), error="env: broke"), _trajectory((4,), error="policy: down"))
    rollouts = StepRollouts(groups=[good], failed=[one_failed, two_failed], sampled=3)
    metrics = rollout_metrics(rollouts, config, world_size=1)
    assert metrics["episodes/skipped_groups"] == 2
    assert metrics["episodes/errors"] == 3
    assert metrics["episodes/reward_errors"] == 0
    assert metrics["reward/hand/mean"] == 0.5 and metrics["reward/hand/std"] == 0.5


def test_multi_turn_trajectories_keep_the_engines_own_tokens(tiny_model_dir: Path) -> None:
    """Prompt + reply + feedback + reply as one sequence; only replies are trained on, and the
    logprobs the engine reported are those of the tokens in the sequence (nothing re-tokenized)."""
    engine = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu")
    suite = Suite("retry", (SuiteMember("tests/LetterA-v0", kwargs={"mode": "retry"}),))
    collector = RolloutCollector(
        suite, engine, SamplingParams(max_tokens=8, temperature=1.0), group_size=2, groups_per_step=2, seed=3
    )
    try:
        rollouts = asyncio.run(collector.collect(step=0))
    finally:
        collector.close()
        engine.shutdown()
    assert len(rollouts.groups) == 2
    for group in rollouts.groups:
        for t in group.trajectories:
            first, second = t.episode.generations
            assert t.episode.turns == 2 and len(t.env_spans) == 1
            begin, end = t.env_spans[0]
            p = t.prompt_length
            assert t.token_ids[:p] == first.prompt_token_ids
            assert t.token_ids[p:begin] == first.token_ids
            assert t.token_ids[end:] == second.token_ids
            assert second.prompt_token_ids == t.token_ids[:end]  # turn 2 continued the same sequence
            assert [i for i, m in enumerate(t.loss_mask) if m] == [
                *range(p, begin),
                *range(end, len(t.token_ids)),
            ]
            feedback = engine.tokenizer.decode(list(t.token_ids[begin:end]))
            assert "User: More a, please.\nAssistant:" in feedback
            with torch.no_grad():
                logits = engine.model(input_ids=torch.tensor([t.token_ids])).logits[0]
            logprobs = torch.log_softmax(logits.float(), -1)
            expected = [logprobs[i - 1, t.token_ids[i]].item() for i, m in enumerate(t.loss_mask) if m]
            sampled = [lp for lp, m in zip(t.sampler_logprobs, t.loss_mask, strict=True) if m]
            assert sampled == pytest.approx(expected, abs=1e-4)


def test_an_environment_raising_mid_rollout_skips_that_group(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, tmp_path / "run", "rollout.env_kwargs={mode: broken_env}", "steps=3")
    train(config, progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert sum(r["episodes/skipped_groups"] for r in rows) > 0  # odd tasks broke...
    assert all(r["episodes/errors"] == 8 * r["episodes/skipped_groups"] for r in rows)  # each of G episodes
    assert sum(r["groups/trained"] for r in rows) > 0  # ...and the even ones were trained on
    assert all(math.isfinite(r["reward/mean"]) for r in rows if r["groups/trained"])


def test_a_reward_server_that_is_down_stops_the_run_with_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    config = tiny_config(
        tiny_model_dir,
        tmp_path / "run",
        f"rollout.env_kwargs={{mode: remote, reward_url: '{url}'}}",
        "steps=5",
        "rollout.groups_per_step=1",
        "rollout.group_size=2",
    )
    with pytest.raises(TrainingError, match=r"every rollout failed for 3 steps.*(connect|gave up)"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing half-trained was written
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")  # the two steps before it stopped
    assert [(r["episodes/reward_errors"], r["episodes/errors"], r["groups/trained"]) for r in rows] == [
        (2, 2, 0),
        (2, 2, 0),
    ]


def test_training_scores_through_a_reward_server(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`rollout.reward_url` puts a RemoteReward in every env, as `rewardgym eval --reward-url`
    does: the real server scores every episode, and none of them fails."""
    with served(["serve", "--env", "rewardgym/Math-v0"], free_port()) as url:
        config = tiny_config(
            tiny_model_dir,
            tmp_path / "run",
            "rollout.env=rewardgym/Math-v0",
            f"rollout.reward_url=[{url}]",
            "steps=2",
            "rollout.groups_per_step=2",
            "rollout.group_size=2",
        )
        train(config, progress=False)
        served_metrics = httpx.get(f"{url}/metrics").text
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["reward/mean"]) and row["groups/trained"] == 2
        assert row["episodes/errors"] == 0 and row["episodes/reward_errors"] == 0
        assert row["component/math/mean"] == row["reward/mean"]  # its components came over HTTP too
    scored = re.search(r'rewardgym_items_total\{reward="rewardgym/Math-v0"\} (\S+)', served_metrics)
    assert scored and float(scored.group(1)) == 2 * 2 * 2  # steps × groups × G, all on the server


def test_dynamic_sampling_refills_zero_variance_groups(tiny_model_dir: Path, tmp_path: Path) -> None:
    common = ("rollout.env_kwargs={mode: constant_odd}", "steps=2", "rollout.groups_per_step=4")
    train(
        tiny_config(tiny_model_dir, tmp_path / "drop", *common, "rollout.dynamic_sampling=drop"),
        progress=False,
    )
    dropped = read_metrics(tmp_path / "drop" / "metrics.jsonl")
    assert all(r["groups/dropped_zero_std"] > 0 for r in dropped)
    assert all(r["groups/trained"] + r["groups/dropped_zero_std"] == 4 for r in dropped)
    train(
        tiny_config(tiny_model_dir, tmp_path / "fill", *common, "rollout.dynamic_sampling=refill"),
        progress=False,
    )
    refilled = read_metrics(tmp_path / "fill" / "metrics.jsonl")
    assert all(r["groups/trained"] == 4 and r["groups/dropped_zero_std"] > 0 for r in refilled)


def test_a_nan_in_the_batch_skips_the_step_and_keeps_the_weights(tiny_model_dir: Path) -> None:
    from trainer.config import LoraSection, LossSection, ModelSection, OptimSection
    from trainer.learner import Learner, TrainSequence
    from trainer.policy import load_policy

    policy = load_policy(
        ModelSection(name=str(tiny_model_dir)), LoraSection(enabled=False), keep_reference=False
    )
    learner = Learner(
        policy, OptimSection(lr=1e-2), LossSection(), max_tokens=4, temperature=1.0, total_steps=3
    )
    before = {k: v.detach().clone() for k, v in policy.trainable_parameters.items()}
    mask, logprobs = (False, True, True, True), (0.0, -1.0, -1.0, -1.0)
    broken = TrainSequence((1, 5, 6, 7), mask, logprobs, advantage=math.nan)
    metrics = learner.train_step([broken, TrainSequence((1, 5, 6, 8), mask, logprobs, advantage=1.0)])
    assert metrics["step_skipped"] == 1.0 and metrics["steps/skipped_nan"] == 1.0
    after = policy.trainable_parameters
    assert all(torch.equal(before[k], after[k]) for k in before)
    good = TrainSequence((1, 5, 6, 7), mask, logprobs, advantage=1.0)
    assert learner.train_step([good, good])["step_skipped"] == 0.0


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardgym", *args],
        cwd=REPO,
        env=env or os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _train_args(model_dir: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        "train",
        "--no-progress",
        "--steps",
        str(steps),
        "--run-dir",
        str(run_dir),
        "--model",
        str(model_dir),
        "--set",
        f"imports=[{ENVS_FILE}]",
        "--set",
        "rollout.env=tests/LetterA-v0",
        "--set",
        "rollout.max_tokens=12",
        "--set",
        "rollout.groups_per_step=2",
        "--set",
        "rollout.group_size=4",
        "--set",
        "lora.enabled=false",
        "--set",
        "optim.lr=3e-3",
        "--set",
        "checkpoint_every=2",
        "--set",
        "tensorboard=false",
    ]


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_same_batches_and_numbers(tiny_model_dir: Path, tmp_path: Path) -> None:
    straight = _cli(*_train_args(tiny_model_dir, tmp_path / "straight", 8))
    output = straight.communicate(timeout=240)[0]
    assert straight.returncode == 0, output

    killed_dir = tmp_path / "killed"
    victim = _cli(*_train_args(tiny_model_dir, killed_dir, 8))
    deadline = time.monotonic() + 240
    while not (killed_dir / "checkpoints" / "step_000004").is_dir():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # mid-run, maybe mid-write: no chance to clean up
    victim.wait()
    resumed = _cli(*_train_args(tiny_model_dir, killed_dir, 8))
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output
    assert "resumed at step" in output

    def numbers(run: Path) -> list[float]:
        return [r[key] for r in read_metrics(run / "metrics.jsonl") for key in ("reward/mean", "loss")]

    assert [r["step"] for r in read_metrics(killed_dir / "metrics.jsonl")] == list(range(1, 9))
    assert numbers(killed_dir) == pytest.approx(numbers(tmp_path / "straight"), rel=1e-5, abs=1e-7)
    final = load_file(killed_dir / "checkpoints" / "step_000008" / "trainable.safetensors")
    expected = load_file(tmp_path / "straight" / "checkpoints" / "step_000008" / "trainable.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-5, atol=1e-6)


def test_resuming_with_other_settings_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from trainer.checkpoint import CheckpointError

    train(tiny_config(tiny_model_dir, tmp_path / "run", "steps=2", "checkpoint_every=1"), progress=False)
    with pytest.raises(CheckpointError, match=r"different settings for \['optim'\]"):
        train(tiny_config(tiny_model_dir, tmp_path / "run", "steps=3", "optim.lr=1e-4"), progress=False)
    # more steps is fine: the run simply continues
    train(tiny_config(tiny_model_dir, tmp_path / "run", "steps=3", "checkpoint_every=1"), progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_checkpoint_files_are_complete_and_latest_points_at_the_newest(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    train(
        tiny_config(tiny_model_dir, tmp_path / "run", "steps=5", "checkpoint_every=2", "keep_checkpoints=2"),
        progress=False,
    )
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000004", "step_000005"]
    assert (root / "latest").read_text() == "step_000005"
    state = json.loads((root / "step_000005" / "state.json").read_text())
    assert state["step"] == 5 and state["config"]["rollout"]["env"] == "tests/LetterA-v0"
    for name in ("trainable.safetensors", "optimizer.pt", "model/config.json"):
        assert (root / "step_000005" / name).is_file()


def test_a_checkpoint_write_cut_short_is_never_resumed_from(tiny_model_dir: Path, tmp_path: Path) -> None:
    from trainer.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(tiny_config(tiny_model_dir, run, "steps=2", "checkpoint_every=2"), progress=False)
    root = run / "checkpoints"
    # what a crash in the middle of saving step 4 leaves behind: a partial directory and pointer
    (root / ".step_000004.partial").mkdir()
    (root / ".step_000004.partial" / "trainable.safetensors").write_bytes(b"\x00" * 10)
    (root / "latest.tmp").write_text("step_0000")
    result = train(tiny_config(tiny_model_dir, run, "steps=4", "checkpoint_every=2"), progress=False)
    assert result.resumed_from == 2
    assert (root / "latest").read_text() == "step_000004"
    assert not (root / ".step_000004.partial").exists()
    # a pointer to a checkpoint that is not there is an error that says so, not a fresh start
    (root / "latest").write_text("step_000099")
    with pytest.raises(CheckpointError, match="step_000099, which is incomplete or missing"):
        train(tiny_config(tiny_model_dir, run, "steps=6"), progress=False)


@pytest.mark.slow
def test_overlapped_rollouts_learn_and_resume_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Step s+1 is generated while step s trains; a resumed run regenerates it with the same
    (one-step-old) weights, so the numbers match a straight run."""
    common = ("rollout.overlap=true", "loss.is_cap=2.0", "checkpoint_every=3")
    train(tiny_config(tiny_model_dir, tmp_path / "straight", *common, "steps=40"), progress=False)
    curve = rewards(tmp_path / "straight")
    assert sum(curve[-5:]) / 5 > sum(curve[:5]) / 5 + 0.2, curve
    rows = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    assert all(r["is_weight/mean"] != 1.0 for r in rows[2:])  # the one-step lag is visible and corrected

    train(tiny_config(tiny_model_dir, tmp_path / "resumed", *common, "steps=6"), progress=False)
    train(tiny_config(tiny_model_dir, tmp_path / "resumed", *common, "steps=12"), progress=False)
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    # The same samples, hence the same rewards, exactly; the losses to float tolerance: here the
    # engine's copy of the model generates on a side thread while the main thread trains, and
    # under CPU contention the BLAS may split a product differently, which moves the sampling
    # logprobs (and the importance weights built on them) in their last bits (seen: 4e-7).
    assert [r["reward/mean"] for r in resumed] == [r["reward/mean"] for r in rows[:12]]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in rows[:12]], rel=1e-4, abs=1e-6)


def test_a_failing_group_reward_skips_the_group_and_keeps_its_message(tiny_model_dir: Path) -> None:
    engine = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu")
    suite = Suite("broken", (SuiteMember("tests/LetterA-v0", kwargs={"mode": "broken_group"}),))
    collector = RolloutCollector(
        suite, engine, SamplingParams(max_tokens=4, temperature=1.0), group_size=2, groups_per_step=2, seed=0
    )
    try:
        rollouts = asyncio.run(collector.collect(step=0))
    finally:
        collector.close()
        engine.shutdown()
    assert not rollouts.groups and len(rollouts.failed) == 2
    assert "the judge is down" in (rollouts.failed[0].first_error or "")
