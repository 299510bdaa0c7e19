"""The reward server's client and remote rewards, against real servers: `rewardgym serve`
subprocesses, a port with nothing listening, and a tiny scripted HTTP server for answers a
correct server never gives."""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import pickle
import random
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

import envs
from envs import Task, TaskList
from rewards import (
    RemoteGroupReward,
    RemoteReward,
    RewardClient,
    RewardServerError,
    RewardServerUnavailable,
    Sample,
    describe_reward,
    make_reward,
)
from rewards.client import _Transient, parse_retry_after, plan_chunks

from conftest import ScriptedHTTPServer, free_port, served

SERVER_REWARDS = str(Path(__file__).with_name("server_rewards.py"))
TEST_REWARDS = ["--import", SERVER_REWARDS] + [
    arg for name in ("echo", "slow", "flaky", "rank_by_length") for arg in ("--reward", name)
]


def in_new_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop (as a script would with asyncio.run)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def numbers(values: range | list[int]) -> list[Sample]:
    return [Sample.from_completion(str(v)) for v in values]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: connections are refused


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples on one server whose labels include `labels`."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


# -- without a server ------------------------------------------------------------------------------


def test_chunk_plan_caps_size_and_shares_over_urls() -> None:
    assert plan_chunks([], 2, 256) == []
    assert plan_chunks([1] * 10, 1, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert plan_chunks([1] * 10, 3, 256) == [range(0, 4), range(4, 8), range(8, 10)]  # a share per URL
    assert plan_chunks([1] * 3, 4, 256) == [range(0, 1), range(1, 2), range(2, 3)]
    assert plan_chunks([1] * 1000, 2, 256) == [range(i, min(i + 256, 1000)) for i in range(0, 1000, 256)]
    # groups count their samples, as the server's batch limit does; a huge group goes alone
    assert plan_chunks([4, 4, 4, 4], 1, 8) == [range(0, 2), range(2, 4)]
    assert plan_chunks([4, 4, 4, 4], 2, 256) == [range(0, 2), range(2, 4)]
    assert plan_chunks([2, 20, 2], 1, 8) == [range(0, 1), range(1, 2), range(2, 3)]


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    now = time.time()
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10, abs=1)
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_backoff_is_full_jitter_exponential_capped_and_retry_after_wins() -> None:
    client = RewardClient("http://host:8000", backoff_base_s=0.5, backoff_max_s=3.0)
    client._jitter = random.Random(20240611)  # seeded: the same draws every run
    for failures in range(1, 8):
        ceiling = min(3.0, 0.5 * 2 ** (failures - 1))  # 0.5, 1, 2, then capped at 3
        waits = [client.backoff_s(failures) for _ in range(100)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert len(set(waits)) == 100  # jittered: no two retries wait the same
        assert min(waits) < 0.2 * ceiling and max(waits) > 0.8 * ceiling  # over the whole range
    # a server's Retry-After takes precedence over the backoff, capped at backoff_max_s as well
    assert client.backoff_s(1, retry_after_s=2.5) == 2.5
    assert client.backoff_s(6, retry_after_s=0.0) == 0.0
    assert client.backoff_s(1, retry_after_s=120.0) == 3.0

    # and the retry loop asks for exactly this: the n-th failure's wait, Retry-After first
    async def fail_twice() -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _Transient("try again", retry_after_s=0.3 if len(calls) == 1 else None)

    calls: list[float] = []
    quick = RewardClient("http://host:8000", backoff_base_s=0.05, backoff_max_s=1.0)
    asyncio.run(quick._with_retries(0, lambda url: fail_twice()))
    assert len(calls) == 3 and quick.retries == 2
    assert 0.3 <= calls[1] - calls[0] < 0.6  # Retry-After: 0.3 s
    assert calls[2] - calls[1] < 0.05 + 0.25  # the 2nd failure's jittered backoff: at most 2 x 0.05 s


@pytest.mark.parametrize(
    ("urls", "options", "message"),
    [
        ([], {}, "at least one server URL"),
        ("localhost:8000", {}, "must look like http://host:port"),
        ("ftp://host:21", {}, "must look like http://host:port"),
        ("http://host:8000/?x=1", {}, "no query"),
        ("http://host:8000", {"max_retries": -1}, "max_retries"),
        ("http://host:8000", {"max_batch_size": 0}, "max_batch_size"),
        ("http://host:8000", {"max_concurrency": 0}, "max_concurrency"),
        ("http://host:8000", {"timeout_s": 0}, "timeout_s"),
        ("http://host:8000", {"api_key": " "}, "api_key is empty"),
    ],
)
def test_client_rejects_bad_arguments(urls: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RewardClient(urls, **options)


def test_urls_are_normalised() -> None:
    client = RewardClient(["http://a:1/", "https://b:2/prefix/", " http://c:3 "])
    assert client.urls == ["http://a:1", "https://b:2/prefix", "http://c:3"]


def test_remote_reward_rejects_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    client = RewardClient("http://host:8000")
    with pytest.raises(ValueError, match="exactly one of urls"):
        RemoteReward("math")
    with pytest.raises(ValueError, match="exactly one of urls"):
        RemoteReward("math", "http://host:8000", client=client)
    with pytest.raises(ValueError, match="carries its own api_key"):
        RemoteReward("math", client=client, api_key="k")
    monkeypatch.delenv("REWARDGYM_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="REWARDGYM_TEST_KEY"):
        RemoteReward("math", "http://host:8000", api_key_env="REWARDGYM_TEST_KEY")
    with pytest.raises(ValueError, match="batch_window_s"):
        RemoteReward("math", "http://host:8000", batch_window_s=-1)


def test_registry_builds_remote_rewards() -> None:
    reward = make_reward("remote", reward="math", url="http://a:1, http://b:2")
    assert isinstance(reward, RemoteReward) and reward.name == "math"
    assert reward.client.urls == ["http://a:1", "http://b:2"]
    group = make_reward("remote", reward="rank", url=["http://a:1"], group=True)
    assert isinstance(group, RemoteGroupReward)
    assert "reward server" in describe_reward("remote")["summary"]


def test_copies_share_the_client_and_pickles_start_fresh() -> None:
    reward = RemoteReward("echo", client=RewardClient(dead_url(), max_retries=0), name="remote-echo")
    assert copy.deepcopy(reward) is reward
    asyncio.run(reward.score(numbers([1])[0]))  # leaves per-loop state behind
    clone = pickle.loads(pickle.dumps(reward))
    assert (clone.name, clone.remote_name, clone.client.urls) == ("remote-echo", "echo", reward.client.urls)


@in_new_loop
async def test_unavailable_names_the_urls_attempts_and_error() -> None:
    urls = [dead_url(), dead_url()]
    async with RewardClient(urls, max_retries=3, backoff_base_s=0.01) as client:
        with pytest.raises(RewardServerUnavailable) as caught:
            await client.score("echo", numbers([1, 2]))
    error = caught.value
    assert error.attempts == 4 and sorted(error.urls) == sorted(urls)
    assert all(url in str(error) for url in urls)
    assert "ConnectError" in str(error) and "4 attempt" in str(error)


@in_new_loop
async def test_remote_reward_turns_a_dead_server_into_error_items() -> None:
    url = dead_url()
    reward = RemoteReward("echo", client=RewardClient(url, max_retries=1, backoff_base_s=0.01))
    score = await reward.score(numbers([3])[0])
    assert math.isnan(score.value) and not score.ok
    assert (
        score.error is not None
        and score.error.startswith("echo: RewardServerUnavailable")
        and url in score.error
    )
    batch = await reward.score_batch(numbers([1, 2]))
    assert [s.ok for s in batch] == [False, False] and all(url in (s.error or "") for s in batch)


# -- a scripted HTTP server (conftest.ScriptedHTTPServer): answers a correct reward server never gives --


OK_SCORE = {"value": 1.0, "components": {}, "passed": True, "error": None, "info": {}}


@in_new_loop
async def test_nonsense_answers_fail_loudly(scripted: ScriptedHTTPServer) -> None:
    async with RewardClient(scripted.url, max_retries=0) as client:
        scripted.reply(200, {"reward": "echo", "scores": [OK_SCORE], "errors": 0, "elapsed_s": 0.0})
        with pytest.raises(RewardServerError, match="expected 2 scores, got 1"):
            await client.score("echo", numbers([1, 2]))
        scripted.reply(200, b"<html>hello</html>")
        with pytest.raises(RewardServerError, match="not JSON"):
            await client.score("echo", numbers([1]))
        scripted.reply(200, {"scores": [[OK_SCORE], [OK_SCORE]]})
        with pytest.raises(RewardServerError, match="expected 1 groups of scores, got 2"):
            await client.score_group("rank", [numbers([1, 2, 3])])


@in_new_loop
async def test_transient_statuses_are_retried_and_others_are_not(scripted: ScriptedHTTPServer) -> None:
    async with RewardClient(scripted.url, api_key="sesame", backoff_base_s=0.01) as client:
        scripted.reply(
            503, {"error": {"message": "warming up", "type": "unavailable"}}, **{"Retry-After": "0"}
        )
        scripted.reply(502, b"bad gateway")
        scripted.reply(
            200, {"reward": "rewardgym/Math-v0", "scores": [OK_SCORE], "errors": 0, "elapsed_s": 0.0}
        )
        [score] = await client.score("rewardgym/Math-v0", numbers([1]))
        assert score.value == 1.0 and score.passed is True
        assert [path for path, _, _ in scripted.requests] == ["/v1/rewards/rewardgym/Math-v0:score"] * 3
        headers = scripted.requests[0][1]
        assert headers["Authorization"] == "Bearer sesame"
        assert scripted.requests[0][2] == {"samples": [{"completion": "1"}]}  # one turn: sent once

        scripted.requests.clear()
        scripted.reply(
            500, {"error": {"message": "internal server error: KeyError", "type": "internal_error"}}
        )
        with pytest.raises(RewardServerError) as caught:
            await client.score("a b", numbers([1]))
        assert (caught.value.status, caught.value.error_type) == (500, "internal_error")
        assert caught.value.message == "internal server error: KeyError"
        assert [path for path, _, _ in scripted.requests] == ["/v1/rewards/a%20b:score"]  # not retried


# -- real reward servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    argv = ["serve", "--reward", "math", "--env", "rewardgym/Math-v0", *TEST_REWARDS]
    with served(argv, free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def second_server() -> Iterator[str]:
    with served(["serve", *TEST_REWARDS], free_port()) as url:
        yield url


@in_new_loop
async def test_a_reply_slower_than_the_timeout_is_retried_then_unavailable(server: str) -> None:
    slow = Sample.from_completion("x", info={"sleep_s": 5.0})
    async with RewardClient(server, timeout_s=0.5, max_retries=1, backoff_base_s=0.01) as client:
        started = time.monotonic()
        with pytest.raises(RewardServerUnavailable) as caught:
            await client.score("slow", [slow])
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5  # two attempts of 0.5 s each, not the reward's 5 s
    assert caught.value.attempts == 2 and client.retries == 1
    assert "ReadTimeout" in str(caught.value) and "no answer within timeout_s=0.5 s" in str(caught.value)
    assert metric(server, "rewardgym_items_in_progress", reward="slow") == 2  # the server got both tries


@in_new_loop
async def test_scores_come_back_in_order_across_chunks(server: str) -> None:
    async with RewardClient(server, max_batch_size=7, max_concurrency=3) as client:
        scores = await client.score("echo", numbers(range(50)))
        assert [s.value for s in scores] == list(range(50))
        assert await client.score("echo", []) == []
        names = {r["name"]: r["kind"] for r in await client.list_rewards()}
        assert names["echo"] == "sample" and names["rank_by_length"] == "group"
        assert (await client.health())["status"] == "ok"


@in_new_loop
async def test_a_batch_is_shared_over_servers(server: str, second_server: str) -> None:
    urls = [server, second_server]
    before = [metric(u, "rewardgym_items_total", reward="echo") for u in urls]
    async with RewardClient(urls) as client:
        scores = await client.score("echo", numbers(range(40)))
        assert [s.value for s in scores] == list(range(40))
        assert len({s.info["pid"] for s in scores}) == 2
        after = [metric(u, "rewardgym_items_total", reward="echo") for u in urls]
        assert [a - b for a, b in zip(after, before, strict=True)] == [20, 20]
        for _ in range(4):  # consecutive single samples take turns too
            await client.score("echo", numbers([1]))
    final = [metric(u, "rewardgym_items_total", reward="echo") for u in urls]
    assert [f - a for f, a in zip(final, after, strict=True)] == [2, 2]


@in_new_loop
async def test_an_environments_reward_by_its_name_with_a_slash(server: str) -> None:
    async with RewardClient(server) as client:
        right, wrong = await client.score(
            "rewardgym/Math-v0", [Sample.from_completion(r"\boxed{5}", "5"), Sample.from_completion("7", "5")]
        )
    assert (right.value, right.passed, wrong.value, wrong.passed) == (1.0, True, 0.0, False)


@in_new_loop
async def test_score_group(server: str) -> None:
    groups = [[Sample.from_completion("x" * n) for n in sizes] for sizes in ([3, 1, 2], [5, 9], [1, 2, 3, 4])]
    async with RewardClient(server, max_batch_size=4) as client:
        scores = await client.score_group("rank_by_length", groups)
        assert [[s.value for s in group] for group in scores] == [
            [1.0, 0.0, 0.5],
            [0.0, 1.0],
            [0, 1 / 3, 2 / 3, 1],
        ]
        flat = await client.score_group("echo", [numbers([1, 2]), numbers([3])])  # sample rewards too
        assert [[s.value for s in group] for group in flat] == [[1, 2], [3]]
    reward = RemoteGroupReward("rank_by_length", server)
    results = await asyncio.gather(*(reward.score_group(g) for g in groups))
    assert [[s.value for s in group] for group in results] == [
        [1.0, 0.0, 0.5],
        [0.0, 1.0],
        [0, 1 / 3, 2 / 3, 1],
    ]
    await reward.aclose()


@in_new_loop
async def test_item_errors_stay_on_their_items(server: str) -> None:
    async with RewardClient(server) as client:
        scores = await client.score("flaky", [Sample.from_completion(c) for c in ("ok", "boom", "fine")])
    assert [s.value for s in scores][::2] == [2.0, 4.0]
    assert math.isnan(scores[1].value) and "boom requested" in (scores[1].error or "")


@in_new_loop
async def test_unknown_reward_is_a_client_error_naming_it(server: str) -> None:
    before = metric(server, "rewardgym_requests_total", status="404")
    async with RewardClient(server, backoff_base_s=5.0) as client:  # a retry would show as a wait
        started = time.monotonic()
        with pytest.raises(RewardServerError) as caught:
            await client.score("no_such_reward", numbers([1]))
    assert time.monotonic() - started < 2.0
    assert caught.value.status == 404 and "no_such_reward" in caught.value.message
    assert caught.value.url == server
    assert metric(server, "rewardgym_requests_total", status="404") - before == 1


@in_new_loop
async def test_a_dead_url_fails_over_to_a_live_one(server: str) -> None:
    async with RewardClient([dead_url(), server], max_retries=2, backoff_base_s=0.01) as client:
        for _ in range(3):  # every call, whichever URL its chunks start on
            scores = await client.score("echo", numbers(range(10)))
            assert [s.value for s in scores] == list(range(10))


def test_remote_reward_in_an_environment(server: str) -> None:
    tasks = TaskList([Task(id="sum", prompt="What is 2 + 3?", answer="5")], name="tiny")
    reward = RemoteReward("math", server)
    env = envs.make("rewardgym/Math-v0", tasks=tasks, reward=reward)
    for reply, expected in ((r"It is \boxed{5}.", 1.0), (r"\boxed{6}", 0.0)):
        env.reset(options={"task_id": "sum"})
        _, value, terminated, _, info = env.step(reply)
        assert (value, terminated, info["reward_error"]) == (expected, True, None)
    env.close()  # closes the env's loop; the reward works on the next loop all the same
    other = envs.make("rewardgym/Math-v0", tasks=tasks, reward=reward)
    other.reset(options={"task_id": "sum"})
    assert other.step(r"\boxed{5}")[1] == 1.0
    other.close()


@in_new_loop
async def test_remote_reward_micro_batches_concurrent_calls(server: str) -> None:
    reward = RemoteReward("echo", server, batch_window_s=0.05)
    before = metric(server, "rewardgym_requests_total", reward="echo")
    scores = await asyncio.gather(*(reward.score(s) for s in numbers(range(64))))
    assert [s.value for s in scores] == list(range(64))
    requests = metric(server, "rewardgym_requests_total", reward="echo") - before
    assert 1 <= requests <= 2
    await reward.aclose()


def test_remote_reward_in_an_environment_without_a_server() -> None:
    tasks = TaskList([Task(id="sum", prompt="What is 2 + 3?", answer="5")], name="tiny")
    reward = RemoteReward("math", client=RewardClient(dead_url(), max_retries=1, backoff_base_s=0.01))
    env = envs.make("rewardgym/Math-v0", tasks=tasks, reward=reward)
    env.reset()
    _, value, terminated, _, info = env.step(r"\boxed{5}")
    assert terminated and math.isnan(value) and info["score"] is None
    assert "RewardServerUnavailable" in info["reward_error"]
    env.close()


@in_new_loop
async def test_wrong_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDGYM_TEST_KEY", "sesame")
    with served(["serve", *TEST_REWARDS, "--api-key-env", "REWARDGYM_TEST_KEY"], free_port()) as url:
        async with RewardClient(url, api_key="wrong") as client:
            assert (await client.health())["status"] == "ok"  # probes need no key
            with pytest.raises(RewardServerError) as caught:
                await client.score("echo", numbers([1]))
            assert caught.value.status == 401 and "wrong" in caught.value.message
        async with RewardClient(url) as client:
            with pytest.raises(RewardServerError, match="401"):
                await client.list_rewards()
        reward = RemoteReward("echo", url, api_key_env="REWARDGYM_TEST_KEY")
        assert [s.value for s in await reward.score_batch(numbers([7]))] == [7.0]
        await reward.aclose()


@pytest.mark.slow
@in_new_loop
async def test_queue_full_is_retried_after_the_servers_delay() -> None:
    argv = ["serve", *TEST_REWARDS, "--max-queued", "2"]
    with served(argv, free_port()) as url:
        samples = [Sample.from_completion("x", info={"sleep_s": 0.3}) for _ in range(6)]
        # no backoff of its own: any wait between tries is the server's Retry-After
        async with RewardClient(url, max_batch_size=2, backoff_base_s=0.0, max_retries=10) as client:
            started = time.monotonic()
            scores = await client.score("slow", samples)
            elapsed = time.monotonic() - started
        assert [s.value for s in scores] == [1.0] * 6
        assert metric(url, "rewardgym_rejected_items_total", reward="slow") >= 2
        assert elapsed >= 1.0  # Retry-After is at least 1 s


@in_new_loop
async def test_a_batch_over_the_servers_limit_is_refused_not_retried() -> None:
    with served(["serve", *TEST_REWARDS, "--max-batch-size", "4"], free_port()) as url:
        async with RewardClient(url, max_batch_size=8) as client:
            with pytest.raises(RewardServerError) as caught:
                await client.score("echo", numbers(range(8)))
            assert caught.value.status == 413 and "at most 4" in caught.value.message
            assert metric(url, "rewardgym_requests_total", status="413") == 1
        async with RewardClient(url, max_batch_size=4) as client:
            assert [s.value for s in await client.score("echo", numbers(range(10)))] == list(range(10))
