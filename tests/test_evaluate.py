"""The evaluator with real policies: a tiny local model, and the same model over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from envs import MathEnv, MultiTurnEnv, Suite, SuiteMember, Task, TaskList
from rewards import FunctionReward
from trainer import (
    EvalTarget,
    OpenAIEngine,
    SamplingParams,
    TransformersEngine,
    evaluate,
    report_table,
    targets_from_ids,
    targets_from_suite,
)

from conftest import AnsweringHTTPServer, free_port

PARAMS = SamplingParams(max_tokens=6, temperature=0)
WORDS = TaskList(
    [Task(id=f"w{i}", prompt=f"Write {i} words.", answer=str(i)) for i in range(6)], name="words"
)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    e = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu", max_batch_size=4)
    yield e
    e.shutdown()


def length_env() -> MultiTurnEnv:
    return MultiTurnEnv(WORDS, FunctionReward(lambda s: float(len(s.completion)), name="chars"))


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluate_math_env_writes_samples_and_summary(engine: TransformersEngine, tmp_path: Path) -> None:
    targets = targets_from_ids(["rewardgym/Math-v0"], {"few_shot": 1})
    report = asyncio.run(
        evaluate(targets, engine, num_tasks=3, samples_per_task=2, concurrency=4, params=PARAMS,
                 out_dir=tmp_path, show_progress=False)
    )  # fmt: skip
    samples = read_samples(tmp_path / "samples.jsonl")
    assert len(samples) == 6 and {s["sample"] for s in samples} == {0, 1}
    assert len({s["task_id"] for s in samples}) == 3
    first = samples[0]
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["role"] == "assistant"
    assert set(first["components"]) == {"math", "format"}
    assert first["num_tokens"] <= 6 and first["turns"] == 1 and first["error"] is None
    (summary,) = report.summaries
    assert summary.episodes == 6 and summary.mean_turns == 1.0
    assert summary.mean_reward == pytest.approx(sum(s["reward"] for s in samples) / 6)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["envs"][0]["episodes"] == 6 and on_disk["samples"] == str(tmp_path / "samples.jsonl")


def test_summary_means_match_the_samples(engine: TransformersEngine, tmp_path: Path) -> None:
    report = asyncio.run(
        evaluate([EvalTarget("words", length_env)], engine, num_tasks=6, concurrency=3, params=PARAMS,
                 out_dir=tmp_path, show_progress=False)
    )  # fmt: skip
    samples = read_samples(tmp_path / "samples.jsonl")
    rewards = [float(len(s["messages"][-1]["content"])) for s in samples]
    assert [s["reward"] for s in samples] == rewards
    assert report.summaries[0].mean_reward == pytest.approx(sum(rewards) / len(rewards))
    assert math.isnan(report.summaries[0].pass_rate)  # a length reward gives no pass/fail verdicts


def test_multi_turn_episodes_take_several_turns(engine: TransformersEngine) -> None:
    tasks = TaskList([Task(id="q", prompt="What is 2+2?", answer="4")])
    target = EvalTarget("retry", lambda: MathEnv(tasks, max_attempts=3))
    report = asyncio.run(evaluate([target], engine, num_tasks=1, params=PARAMS, show_progress=False))
    (summary,) = report.summaries
    assert summary.mean_reward == 0.0 and summary.mean_turns == 3.0  # a random tiny model never gets it


def test_evaluate_a_suite_through_the_openai_endpoint(model_server: str, tmp_path: Path) -> None:
    suite = Suite(
        "mix",
        (
            SuiteMember("rewardgym/Math-v0", weight=3.0),
            SuiteMember("rewardgym/MathMultiTurn-v0", weight=1.0, label="retry"),
        ),
    )

    async def go():
        engine = OpenAIEngine(model_server, "tiny")
        try:
            return await evaluate(targets_from_suite(suite), engine, num_tasks=2, params=PARAMS,
                                  out_dir=tmp_path, show_progress=False)  # fmt: skip
        finally:
            await engine.close()

    report = asyncio.run(go())
    assert [s.name for s in report.summaries] == ["rewardgym/Math-v0", "retry"]
    assert all(s.episodes == 2 and s.episode_errors == 0 for s in report.summaries)
    math_mean, retry_mean = (s.mean_reward for s in report.summaries)
    assert report.weighted_mean_reward == pytest.approx(0.75 * math_mean + 0.25 * retry_mean)
    table = report_table(report)
    headers = [str(c.header) for c in table.columns]
    # no stray empty column: the weighted-mean row has exactly as many cells as there are headers
    assert headers == ["env", "n", "reward", "pass", "errors", "turns", "tokens", "trunc", "format", "math"]
    assert table.row_count == 3  # two members and the weighted mean


def test_a_dead_policy_endpoint_gives_counted_errors_and_the_run_completes(tmp_path: Path) -> None:
    async def go():
        engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "m", max_attempts=1)
        try:
            return await evaluate(targets_from_ids(["rewardgym/Math-v0"]), engine, num_tasks=3,
                                  params=PARAMS, out_dir=tmp_path, show_progress=False)  # fmt: skip
        finally:
            await engine.close()

    report = asyncio.run(go())
    (summary,) = report.summaries
    assert summary.episodes == 3 and summary.episode_errors == 3
    assert math.isnan(summary.mean_reward)  # errors are not averaged in as zeros
    samples = read_samples(tmp_path / "samples.jsonl")
    assert all(s["error"].startswith("policy: EngineError: gave up after 1 attempts") for s in samples)
    assert all(s["reward"] is None for s in samples)


def test_bad_evaluate_arguments(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(evaluate([EvalTarget("words", length_env)], engine, num_tasks=0))


def test_requests_in_flight_never_exceed_the_concurrency_limit() -> None:
    """A scripted chat endpoint (it holds each request 0.2 s and counts how many are in
    flight at once, which no real server reports) under 12 episodes at concurrency 3."""
    reply = {
        "choices": [{"message": {"content": "three words here"}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 3},
    }

    async def go(url: str):
        engine = OpenAIEngine(url, "scripted", max_attempts=1)
        try:
            return await evaluate([EvalTarget("words", length_env)], engine, num_tasks=6, samples_per_task=2,
                                  concurrency=3, params=PARAMS, show_progress=False)  # fmt: skip
        finally:
            await engine.close()

    with AnsweringHTTPServer(lambda body: (200, reply), delay_s=0.2) as endpoint:
        report = asyncio.run(go(endpoint.url))
    assert endpoint.requests == 12 and report.summaries[0].episode_errors == 0
    assert endpoint.peak == 3  # the limit is reached and never passed
