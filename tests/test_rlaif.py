"""RLAIF end to end with real parts: a tiny policy in-process, a tiny judge behind
`rewardgym serve-model` on loopback, the real trainer, the real sentence-embedding encoder."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import envs
from envs.preference_env import LOCAL_JUDGE, PreferenceEnv, preference_tasks
from rewards.judges import JudgeConfig
from rewards.preference_data import read_preferences
from trainer.engines import SamplingParams, TransformersEngine
from trainer.rlaif import collect_preferences, head_to_head
from trainer.rlaif_compare import ComparisonSettings, JudgeEndpoint, run_comparison, train_direct

from conftest import free_port


def test_preference_env_is_registered_and_scores_only_through_its_group() -> None:
    env = envs.make("rewardgym/Preference-v0", split="eval")
    assert isinstance(env, PreferenceEnv) and env.group_reward is not None
    eval_ids = {t.id for t in preference_tasks(split="eval")}
    assert {t.id for t in env.tasks} == eval_ids and 0 < len(eval_ids) < 60
    assert eval_ids.isdisjoint(t.id for t in preference_tasks(split="train"))
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step("A short, kind reply.")
    assert terminated and reward == 0.0  # relative to the group only
    env.close()
    with pytest.raises(ValueError, match="either reward_model or judge"):
        PreferenceEnv(reward_model="rm/", judge={"base_url": "http://h/v1", "model": "m"})


def test_collect_preferences_writes_every_pair_with_its_verdict_or_error(
    tiny_model_dir: Path, model_server: str, tmp_path: Path
) -> None:
    tasks = list(preference_tasks(split="train"))[:3]
    judge_config = JudgeConfig(base_url=model_server, model="tiny", api="completions")

    async def run() -> tuple[list, dict, object]:
        engine = TransformersEngine.from_pretrained(tiny_model_dir, chat_format="plain")
        client = judge_config.client()
        try:
            judge = judge_config.pairwise(client)
            records = await collect_preferences(
                engine,
                judge,
                tasks,
                SamplingParams(max_tokens=8, temperature=1.0),
                pairs_per_task=2,
                out=tmp_path / "prefs.jsonl",
                progress=False,
            )
            prompts = [r.prompt for r in records]
            h2h = await head_to_head(
                judge,
                prompts,
                [r.response_a for r in records],
                [r.response_b for r in records],
                progress=False,
            )
            return records, client.counters(), h2h
        finally:
            await client.close()
            await engine.close()

    records, counters, h2h = asyncio.run(run())
    assert len(records) == 6 and read_preferences(tmp_path / "prefs.jsonl") == records
    for record in records:
        assert record.judge == "tiny" and record.task_id in {t.id for t in tasks}
        if record.ok:
            assert 0.0 <= record.p_a <= 1.0 and record.verdict in ("A", "B", "tie")
            assert [o.swapped for o in record.orders] == [False, True]  # each order, as read
            assert record.p_a == pytest.approx(sum(o.p_a for o in record.orders) / 2)
            assert record.stand_in == any(o.source == "neutral" for o in record.orders)
        else:
            assert record.error and record.p_a is None  # a failed verdict is kept and says why
    assert counters["calls"] >= 12 and counters["failures"] == 0
    assert h2h.judged + h2h.failed == 6
    # The same pairs asked again hit the judge's answers consistently (greedy): same verdicts.
    assert [v.verdict for v in h2h.verdicts] == [r.verdict for r in records]


def test_rlaif_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response_a": "a"}\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewardgym",
            "rlaif",
            "train-rm",
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "rm"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "bad.jsonl:1" in result.stderr and "missing field" in result.stderr
    down = f"http://127.0.0.1:{free_port()}/v1"
    collect = [sys.executable, "-m", "rewardgym", "rlaif", "collect", "--out", str(tmp_path / "p.jsonl")]
    result = subprocess.run([*collect, "--judge-url", down], capture_output=True, text=True, timeout=120)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and f"no judge answers at {down}" in said, said
    assert not (tmp_path / "p.jsonl").exists()  # found out before loading the policy
    with socket.socket() as probe:
        local_judge_free = probe.connect_ex(("127.0.0.1", 8001)) != 0
    if local_judge_free:  # the documented command asks the local judge by default
        result = subprocess.run(collect, capture_output=True, text=True, timeout=120)
        said = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 2 and f"no judge answers at {LOCAL_JUDGE['base_url']}" in said, said
        assert "rewardgym serve-model --port 8001" in said


def completion_reply(text: str) -> dict:
    return {"choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]}


def test_stand_in_verdicts_are_recorded_as_such(tiny_model_dir: Path, scripted, tmp_path: Path) -> None:
    """Under the "neutral" policy an unreadable reply becomes a tie; the record keeps each order's
    source, so it reads as a stand-in, not as a real tie. (The judge is a scripted server: a
    model cannot be made to babble on cue.)"""
    scripted.reply(200, completion_reply(" hmm, well"))
    scripted.reply(200, completion_reply(" B"))  # shown second-first: " B" is the original A
    tasks = list(preference_tasks(split="train"))[:1]
    config = JudgeConfig(base_url=f"{scripted.url}/v1", model="babbler", api="completions")
    config = dataclasses.replace(config, on_unparseable="neutral", top_logprobs=0, max_concurrency=1)

    async def run() -> list:
        engine = TransformersEngine.from_pretrained(tiny_model_dir, chat_format="plain")
        client = config.client()
        try:
            return await collect_preferences(
                engine,
                config.pairwise(client),
                tasks,
                SamplingParams(max_tokens=8, temperature=1.0),
                out=tmp_path / "prefs.jsonl",
                progress=False,
            )
        finally:
            await client.close()
            await engine.close()

    (record,) = asyncio.run(run())
    assert record.ok and record.stand_in and record.p_a == pytest.approx(0.75)
    assert [(o.source, o.swapped, o.p_a) for o in record.orders] == [
        ("neutral", False, 0.5),
        ("text", True, 1.0),
    ]
    assert read_preferences(tmp_path / "prefs.jsonl") == [record]


def test_direct_training_goes_on_when_the_judge_fails_and_says_how_often(
    tiny_model_dir: Path, scripted, tmp_path: Path
) -> None:
    """One direct-RLAIF step against a judge that answers only 500s (a scripted server): the run
    finishes, and its summary counts the failed verdicts and the skipped groups."""
    for _ in range(200):
        scripted.reply(500, {"error": "judge overloaded"})
    settings = ComparisonSettings(
        out_dir=tmp_path,
        steps=1,
        overrides=(
            f"model.name={tiny_model_dir}",
            "rollout.max_tokens=8",
            "rollout.group_size=3",
            "rollout.groups_per_step=2",
        ),
        progress=False,
    )
    model, summary = train_direct(settings, JudgeEndpoint(f"{scripted.url}/v1", "flaky"), tmp_path)
    assert model.is_dir() and summary["steps"] == 1
    counters = summary["judge_counters"]
    failed = summary["failed_matchups_total"]
    assert (
        failed == counters["failed_pairs"] and 4 <= failed <= 6
    )  # 3 pairs a group; identical ones tie unasked
    assert counters["failures"] == 2 * failed  # both orders of every failed matchup
    assert len(scripted.requests) == 4 * counters["failures"]  # each question tried max_attempts = 4 times
    assert summary["skipped_groups_total"] == 2


@pytest.mark.slow
def test_direct_vs_indirect_comparison_runs_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The whole comparison at the smallest scale: tiny policy and judge, one step each."""
    settings = ComparisonSettings(
        out_dir=tmp_path / "compare",
        judge=JudgeEndpoint(None, str(tiny_model_dir), "completions"),  # started for the run
        steps=1,
        pairs_per_prompt=1,
        eval_replies_per_prompt=1,
        overrides=(
            f"model.name={tiny_model_dir}",
            "rollout.max_tokens=8",
            "rollout.group_size=2",
            "rollout.groups_per_step=2",
        ),
        progress=False,
    )
    result = run_comparison(settings)
    summary = json.loads((settings.out_dir / "report.json").read_text())
    report = result.report_path.read_text()
    for heading in (
        "## Training",
        "## Preferences and the reward model",
        "## Held-out prompts",
        "## Samples",
    ):
        assert heading in report
    direct = summary["direct_training"]
    assert direct["steps"] == 1 and "position_consistency" in direct and "failed_matchups" in direct
    # totals over the run, from the judge client the run's environments shared
    assert direct["failed_matchups_total"] == direct["judge_counters"]["failed_pairs"]
    assert direct["judge_counters"]["calls"] > 0 and direct["skipped_groups_total"] >= 0
    assert f"{direct['failed_matchups_total']} judge verdicts failed" in report
    assert summary["judge_agreement"] == "not measured: one judge"
    assert summary["indirect_training"]["steps"] == 1
    assert summary["preferences"]["pairs"] == len(preference_tasks(split="train"))
    rm = summary["reward_model"]
    assert rm["n_train"] + rm["n_eval"] + rm["n_skipped"] == summary["preferences"]["pairs"]
    for row in summary["head_to_head"]:
        judged = row["wins"] + row["losses"] + row["ties"] + row["failed"]
        assert judged == len(preference_tasks(split="eval"))  # one reply per eval prompt
    assert (settings.out_dir / "direct" / "checkpoints").is_dir()
    assert (settings.out_dir / "reward-model").is_dir()
    assert all(math.isfinite(v) for v in summary["reward_model_mean_on_eval_replies"].values())
