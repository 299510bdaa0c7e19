"""The reward server as users run it: `rewardgym serve` in a subprocess on loopback, spoken
to with raw httpx and with a request shaped exactly like OpenRLHF's client."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_reward_client import metric

from conftest import free_port, served, wait_for_http

TESTS = Path(__file__).parent
SNAPSHOT = TESTS / "data" / "reward_server_openapi.json"
IMPORTS = ["--import", str(TESTS / "server_rewards.py"), "--import", str(TESTS / "cpu_rewards.py")]
MAIN_ARGV = [
    "serve",
    *IMPORTS,
    "--reward", "exact_match",
    "--reward", "tagged=format",
    "--reward-param", 'tagged.format="answer_tag"',
    "--reward", "slow",
    "--reward", "flaky",
    "--reward", "rank_by_length",
    "--env", "rewardgym/Math-v0",
    "--env-arg", 'split="all"',
    "--openrlhf-reward", "exact_match",
    "--sandbox", "bubblewrap",
    "--item-timeout", "1",
    "--max-batch-size", "512",
    "--max-request-bytes", "200000",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with served(MAIN_ARGV, free_port()) as url:
        yield url


JSON = {"content-type": "application/json"}


def score(url: str, reward: str, samples: list[dict], **options: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/rewards/{reward}:score", json={"samples": samples}, timeout=30, **options)


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type"}, body
    return body["error"]["message"]


# -- the API -------------------------------------------------------------------------------


def test_health_and_listing(server: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok"
    assert {"exact_match", "tagged", "rank_by_length", "rewardgym/Math-v0"} <= set(health["rewards"])
    listed = {r["name"]: r for r in httpx.get(f"{server}/v1/rewards").json()["rewards"]}
    assert listed["tagged"]["parameters"] == {"format": "answer_tag"}
    assert listed["tagged"]["source"] == "registered reward 'format'"
    assert listed["rank_by_length"]["kind"] == "group"
    assert listed["exact_match"]["kind"] == "sample"
    assert listed["exact_match"]["item_timeout_s"] == 1.0
    assert listed["exact_match"]["max_batch_size"] == 512
    assert listed["rewardgym/Math-v0"]["source"] == "environment rewardgym/Math-v0"
    # what each reward accepts, and what to POST where
    assert listed["tagged"]["signature"] == {"format": "'boxed'", "name": "'format'"}
    assert listed["exact_match"]["signature"]["normalize"] == "True"
    assert listed["rewardgym/Math-v0"]["signature"] is None
    assert listed["rank_by_length"]["requests"] == {
        "/v1/rewards/rank_by_length:score_group": "#/components/schemas/GroupScoreRequest"
    }
    assert listed["exact_match"]["requests"] == {
        "/v1/rewards/exact_match:score": "#/components/schemas/ScoreRequest",
        "/v1/rewards/exact_match:score_group": "#/components/schemas/GroupScoreRequest",
    }


def test_scores_come_back_in_order_with_components(server: str) -> None:
    samples = [{"completion": c, "reference": "Paris"} for c in ("paris", "London", "The Paris")]
    response = score(server, "exact_match", samples)
    assert response.status_code == 200
    body = response.json()
    assert [s["value"] for s in body["scores"]] == [1.0, 0.0, 1.0]
    assert [s["passed"] for s in body["scores"]] == [True, False, True]
    assert body["errors"] == 0 and body["reward"] == "exact_match"
    tagged = score(server, "tagged", [{"completion": "<answer>4</answer>"}, {"completion": "4"}]).json()
    assert [s["value"] for s in tagged["scores"]] == [1.0, 0.0]


def test_a_failing_item_is_an_error_on_that_item_only(server: str) -> None:
    samples = [{"completion": "fine"}, {"completion": "boom"}, {"completion": "ok"}]
    body = score(server, "flaky", samples).json()
    values = [s["value"] for s in body["scores"]]
    assert values[0] == 4.0 and values[2] == 2.0
    assert values[1] is None  # null, never a 0
    assert "boom requested" in body["scores"][1]["error"]
    assert body["errors"] == 1


def test_an_item_past_its_deadline_is_an_error_and_the_rest_are_scored(server: str) -> None:
    samples = [{"completion": "x", "info": {"sleep_s": s}} for s in (0.0, 5.0, 0.1)]
    start = time.monotonic()
    body = score(server, "slow", samples).json()
    assert time.monotonic() - start < 4  # the 1 s item timeout, not the 5 s sleep
    assert [s["value"] for s in body["scores"]] == [1.0, None, 1.0]
    assert "timed out after 1 s" in body["scores"][1]["error"]


def test_environment_reward_looks_up_the_task_by_id(server: str) -> None:
    import envs

    task = envs.make("rewardgym/Math-v0", split="all").tasks[3]
    samples = [
        {"completion": f"\\boxed{{{task.answer}}}", "task_id": task.id},
        {"completion": "\\boxed{-99999}", "task_id": task.id},
        {"completion": "\\boxed{1}", "task_id": "no-such-task"},
    ]
    # math-verify's worker processes start on first use, which on a busy machine can take
    # longer than this server's 1 s item timeout: warm them up before judging the scores.
    for _ in range(20):
        body = score(server, "rewardgym/Math-v0", samples).json()
        if not any("timed out" in (s["error"] or "") for s in body["scores"]):
            break
    first, second, third = body["scores"]
    assert first["value"] == 1.0 and first["components"]["math"] == 1.0
    assert second["components"]["math"] == 0.0
    assert third["value"] is None and "no-such-task" in third["error"]
    percent_encoded = score(server, "rewardgym%2FMath-v0", samples[:1]).json()
    assert percent_encoded["scores"][0]["value"] == 1.0


def test_group_rewards(server: str) -> None:
    groups = [[{"completion": "aaa"}, {"completion": "a"}, {"completion": "aa"}], [{"completion": "x"}]]
    response = httpx.post(f"{server}/v1/rewards/rank_by_length:score_group", json={"groups": groups})
    assert response.status_code == 200
    scores = response.json()["scores"]
    assert [s["value"] for s in scores[0]] == [1.0, 0.0, 0.5]
    assert [s["value"] for s in scores[1]] == [0.0]
    empty = httpx.post(f"{server}/v1/rewards/rank_by_length:score_group", json={"groups": [[]]})
    assert empty.status_code == 422 and "groups[0]" in error_of(empty)
    wrong = score(server, "rank_by_length", [{"completion": "a"}])
    assert wrong.status_code == 400 and ":score_group" in error_of(wrong)
    # A sample reward on the group endpoint scores every member on its own.
    by_item = httpx.post(
        f"{server}/v1/rewards/exact_match:score_group",
        json={"groups": [[{"completion": "a", "reference": "a"}, {"completion": "b", "reference": "a"}]]},
    ).json()
    assert [s["value"] for s in by_item["scores"][0]] == [1.0, 0.0]


BAD_REQUESTS = [
    # (what, reward, raw body, status, words the message must contain)
    ("malformed JSON", "exact_match", b'{"samples": [', 400, "not valid JSON"),
    ("no body", "exact_match", b"", 400, "no body"),
    ("invalid UTF-8", "exact_match", b'{"samples": [{"completion": "\xff"}]}', 400, "not valid JSON"),
    ("missing field", "exact_match", b'{"samples": [{"reference": "a"}]}', 422, "samples[0].completion"),
    ("wrong type", "exact_match", b'{"samples": [{"completion": 5}]}', 422, "samples[0].completion"),
    ("not a list", "exact_match", b'{"samples": {"completion": "a"}}', 422, "samples"),
    ("empty batch", "exact_match", b'{"samples": []}', 422, "samples"),
    ("unknown field", "exact_match", b'{"samples": [{"completon": "a"}]}', 422, "completon"),
    ("bad role", "exact_match", b'{"samples": [{"completion": "a", "messages": [{"role": "x"}]}]}', 422, "role"),  # noqa: E501
    ("negative tokens", "exact_match", b'{"samples": [{"completion": "a", "num_tokens": -1}]}', 422, "num_tokens"),  # noqa: E501
    ("JSON array", "exact_match", b"[1, 2]", 422, "body"),
    ("unknown reward", "exact_mtch", b'{"samples": [{"completion": "a"}]}', 404, "'exact_match'"),
    ("too many samples", "exact_match", json.dumps({"samples": [{"completion": "a"}] * 513}).encode(), 413, "512"),  # noqa: E501
    ("oversize body", "exact_match", json.dumps({"samples": [{"completion": "a" * 300_000}]}).encode(), 413, "200000"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "reward", "body", "status", "words"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_a_4xx_naming_the_problem(
    server: str, what: str, reward: str, body: bytes, status: int, words: str
) -> None:
    response = httpx.post(f"{server}/v1/rewards/{reward}:score", content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert words in error_of(response)


def test_odd_scores_are_errors_on_their_items_only(tmp_path: Path) -> None:
    """A reward that hands back an infinite value or a score JSON cannot hold errs on that
    item only; numpy numbers are plain numbers on the wire. The same on :score,
    :score_group (sample and group rewards), in worker processes and on /get_reward,
    which logs one warning per request naming how many items stand in for failures."""
    config = tmp_path / "server.toml"
    config.write_text(
        f"imports = [{json.dumps(str(TESTS / 'server_rewards.py'))}]\n"
        'openrlhf_reward = "odd"\n'
        '[[rewards]]\nname = "odd"\n'
        '[[rewards]]\nname = "odd_group"\n'
        '[[rewards]]\nname = "odd_in_worker"\nreward = "odd"\nexecutor = "process"\nprocess_workers = 1\n'
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rewardgym", "serve", "--config", str(config), "--port", str(port)],
            stderr=stderr,
        )
    try:
        wait_for_http(f"{url}/health", process)
        numpy_item = {
            "value": 0.5,
            "components": {"part": 0.25},
            "passed": True,
            "error": None,
            "info": {"count": 3, "array": [0, 1], "flag": False},
        }

        def check(scores: list[dict], reward: str) -> None:
            plain, infinite, numpy, cycle = scores
            assert plain["value"] == 1.0 and plain["error"] is None
            assert (
                infinite["value"] is None
                and infinite["error"] == f"{reward}: returned the non-finite value inf"
            )
            assert numpy == numpy_item
            assert cycle["value"] is None and "could not be encoded as JSON" in cycle["error"]

        completions = [{"completion": c} for c in ("x", "inf", "numpy", "cycle")]
        for reward in ("odd", "odd_in_worker"):
            response = score(url, reward, completions)
            assert response.status_code == 200, response.text
            check(response.json()["scores"], reward)
            assert response.json()["errors"] == 2
        for reward in ("odd", "odd_group"):
            grouped = httpx.post(
                f"{url}/v1/rewards/{reward}:score_group", json={"groups": [completions[:2], completions[2:]]}
            )
            assert grouped.status_code == 200, grouped.text
            check([s for group in grouped.json()["scores"] for s in group], reward)
        openrlhf = httpx.post(f"{url}/get_reward", json={"query": ["x", "inf", "numpy"]})
        assert openrlhf.status_code == 200, openrlhf.text
        assert openrlhf.json()["rewards"] == [1.0, 0.0, 0.5]
        assert openrlhf.json()["extra_logs"]["reward_error"] == [0.0, 1.0, 0.0]
    finally:
        process.terminate()
        process.wait(timeout=30)
    warnings = [line for line in log.read_text().splitlines() if "/get_reward:" in line]
    assert len(warnings) == 1 and "1 of 3 items failed on 'odd'" in warnings[0], warnings


def test_unknown_routes_and_methods_answer_json(server: str) -> None:
    missing = httpx.get(f"{server}/v2/nothing")
    assert missing.status_code == 404 and "/v2/nothing" in error_of(missing)
    wrong_method = httpx.get(f"{server}/v1/rewards/exact_match:score")
    assert wrong_method.status_code == 405 and "Method Not Allowed" in error_of(wrong_method)
    chunked = httpx.post(  # no Content-Length: the limit is enforced while streaming
        f"{server}/v1/rewards/exact_match:score", content=iter([b"x" * 150_000, b"y" * 150_000])
    )
    assert chunked.status_code == 413


def test_openrlhf_client_request(server: str) -> None:
    """Exactly what OpenRLHF's `remote_rm_fn` sends: a JSON POST with query, prompts and
    labels, `Content-Type: application/json`, 180 s timeout; it reads `rewards`."""
    prompts = ["Q: capital of France?\nA:", "Q: capital of Spain?\nA:", "Q: anything\nA:"]
    responses = [" Paris", " Lisbon", " x"]
    data = {
        "query": [p + r for p, r in zip(prompts, responses, strict=True)],
        "prompts": prompts,
        "labels": ["Paris", "Madrid", None],
    }
    response = httpx.post(
        f"{server}/get_reward", json=data, headers={"Content-Type": "application/json"}, timeout=180
    )
    assert response.status_code == 200
    body = response.json()
    assert body["rewards"] == [1.0, 0.0, 0.0]  # the third has no label: an error, reported as 0.0...
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["reward_error"] == [0.0, 0.0, 1.0]  # ...and flagged, not silent
    mismatched = httpx.post(f"{server}/get_reward", json={"query": ["a", "b"], "prompts": ["a"]})
    assert mismatched.status_code == 422 and "prompts" in error_of(mismatched)


def test_run_code_is_mounted(server: str) -> None:
    response = httpx.post(
        f"{server}/run_code", json={"code": "print(6 * 7)", "language": "python"}, timeout=60
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "Success" and body["run_result"]["stdout"] == "42\n"


def test_metrics_count_requests_items_errors_and_queue(server: str) -> None:
    score(server, "flaky", [{"completion": "boom"}, {"completion": "a"}])
    assert httpx.get(f"{server}/no/such/path").status_code == 404
    groups = [[{"completion": "aaa"}, {"completion": "a"}, {"completion": "aa"}], [{"completion": "x"}]]
    grouped = httpx.post(f"{server}/v1/rewards/rank_by_length:score_group", json={"groups": groups})
    assert grouped.status_code == 200
    text = httpx.get(f"{server}/metrics").text
    assert re.search(r'rewardgym_items_total\{reward="flaky"\} [1-9]', text)
    assert re.search(r'rewardgym_item_errors_total\{reward="flaky"\} [1-9]', text)
    route = re.escape("/v1/rewards/{name:path}:score")
    assert re.search(rf'rewardgym_requests_total\{{endpoint="{route}",reward="flaky",status="200"\}}', text)
    assert re.search(r'rewardgym_request_seconds_bucket\{endpoint="[^"]+",le="0.005",reward="flaky"\}', text)
    assert 'rewardgym_queue_depth{reward="flaky"} 0.0' in text
    assert 'rewardgym_requests_total{endpoint="unmatched",reward="",status="404"}' in text
    # a group reward's job is a whole group: the gauges count its samples in and out alike
    assert 'rewardgym_queue_depth{reward="rank_by_length"} 0.0' in text
    assert 'rewardgym_items_in_progress{reward="rank_by_length"} 0.0' in text


def test_openapi_schema_is_stable(server: str) -> None:
    """The published API changes only on purpose. After an intended change, refresh the
    snapshot: REWARDGYM_UPDATE_SNAPSHOTS=1 pytest tests/test_reward_server.py -k openapi"""
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {
        "/v1/rewards/{name}:score",
        "/v1/rewards/{name}:score_group",
        "/v1/rewards",
        "/get_reward",
        "/run_code",
        "/health",
        "/metrics",
    } <= set(schema["paths"])
    score_body = schema["paths"]["/v1/rewards/{name}:score"]["post"]["requestBody"]
    assert score_body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ScoreRequest"
    assert {"ScoreRequest", "SampleModel", "ScoreResponse", "OpenRLHFRequest"} <= set(
        schema["components"]["schemas"]
    )
    listed = httpx.get(f"{server}/v1/rewards").json()["rewards"]
    for ref in {ref for r in listed for ref in r["requests"].values()}:  # the listing points into it
        assert ref.removeprefix("#/components/schemas/") in schema["components"]["schemas"]
    if os.environ.get("REWARDGYM_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    assert schema == json.loads(SNAPSHOT.read_text())


# -- security --------------------------------------------------------------------------------


def test_bearer_token_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-token\n")
    with served(["serve", "--reward", "exact_match", "--api-key-file", str(key_file)], free_port()) as url:
        body = {"samples": [{"completion": "a", "reference": "a"}]}
        endpoint = f"{url}/v1/rewards/exact_match:score"
        missing = httpx.post(endpoint, json=body)
        assert missing.status_code == 401 and "Authorization: Bearer" in error_of(missing)
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(endpoint, json=body, headers={"Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status_code == 401 and "wrong" in error_of(wrong)
        assert httpx.get(f"{url}/metrics").status_code == 401
        right = httpx.post(endpoint, json=body, headers={"Authorization": "Bearer s3cret-token"})
        assert right.status_code == 200 and right.json()["scores"][0]["value"] == 1.0
        for header in ("bearer s3cret-token", "BEARER  s3cret-token"):  # the scheme's case is free
            assert httpx.post(endpoint, json=body, headers={"Authorization": header}).status_code == 200
        basic = httpx.post(endpoint, json=body, headers={"Authorization": "Basic s3cret-token"})
        assert basic.status_code == 401 and "Bearer scheme" in error_of(basic)
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no key


def test_tls_through_uvicorn(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    argv = ["serve", "--reward", "exact_match", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    process = subprocess.Popen([sys.executable, "-m", "rewardgym", *argv, "--port", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/health", verify=trusted)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert health.status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{port}/health")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_binds_to_loopback_unless_told_otherwise() -> None:
    from rewardgym.cli import _serve_config, build_parser

    config = _serve_config(build_parser().parse_args(["serve", "--reward", "exact_match"]))
    assert config.host == "127.0.0.1"


# -- load, back-pressure and faults --------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after() -> None:
    argv = ["serve", *IMPORTS, "--reward", "slow", "--max-queued", "4"]
    with served(argv, free_port()) as url:
        slow = [{"completion": "x", "info": {"sleep_s": 2.0}}] * 3
        first: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: first.append(score(url, "slow", slow)))
        thread.start()
        time.sleep(0.5)
        refused = score(url, "slow", slow)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "at capacity" in error_of(refused)
        thread.join()
        assert first[0].status_code == 200  # the admitted request was not disturbed
        assert score(url, "slow", slow).status_code == 200  # and the queue drained


def test_request_deadline_answers_with_what_is_done() -> None:
    argv = ["serve", *IMPORTS, "--reward", "slow", "--request-timeout", "1", "--item-timeout", "30"]
    with served(argv, free_port()) as url:
        start = time.monotonic()
        body = score(url, "slow", [{"completion": "x", "info": {"sleep_s": s}} for s in (0.1, 20.0)]).json()
        assert time.monotonic() - start < 5
        done, late = body["scores"]
        assert done["value"] == 1.0
        assert late["value"] is None and "request deadline of 1 s passed" in late["error"]
        assert httpx.get(f"{url}/metrics").text.count('rewardgym_items_in_progress{reward="slow"} 0.0') == 1


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    port = free_port()
    argv = ["serve", *IMPORTS, "--reward", "slow"]
    process = subprocess.Popen([sys.executable, "-m", "rewardgym", *argv, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process)
        answers: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: answers.append(score(url, "slow", [{"completion": "x", "info": {"sleep_s": 2.0}}]))
        )
        request.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        request.join()
        assert answers[0].status_code == 200 and answers[0].json()["scores"][0]["value"] == 1.0
        # uvicorn finishes the request, shuts the app down, then re-raises the signal.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_killed_reward_worker_fails_only_its_item_and_the_server_recovers() -> None:
    argv = ["serve", *IMPORTS, "--reward", "spin", "--executor", "process", "--process-workers", "2",
            "--item-timeout", "20"]  # fmt: skip
    with served(argv, free_port()) as url:
        warm = score(url, "spin", [{"completion": "x"}] * 2).json()["scores"]
        pids = {s["info"]["pid"] for s in warm}
        answers: list[httpx.Response] = []
        busy = [{"completion": "x", "info": {"spin_s": 1.5}}] * 2
        request = threading.Thread(target=lambda: answers.append(score(url, "spin", busy)))
        request.start()
        time.sleep(0.7)
        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)
        request.join()
        scores = answers[0].json()["scores"]
        assert answers[0].status_code == 200
        died = [s for s in scores if s["error"]]
        assert len(died) == 1 and "worker process died" in died[0]["error"]
        assert sum(1 for s in scores if s["value"] == 1.0) == 1
        after = score(url, "spin", [{"completion": "x"}] * 4).json()["scores"]
        assert all(s["value"] == 1.0 for s in after)
        assert victim not in {s["info"]["pid"] for s in after}


def test_cpu_bound_item_past_its_deadline_kills_its_worker() -> None:
    argv = ["serve", *IMPORTS, "--reward", "spin", "--executor", "process", "--process-workers", "1",
            "--item-timeout", "1"]  # fmt: skip
    with served(argv, free_port()) as url:
        start = time.monotonic()
        body = score(url, "spin", [{"completion": "x", "info": {"spin_s": 30}}, {"completion": "y"}]).json()
        assert time.monotonic() - start < 15
        stuck, fine = body["scores"]
        assert stuck["value"] is None and "timed out after 1 s (worker killed)" in stuck["error"]
        assert fine["value"] == 1.0


def test_config_file_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(
        'openrlhf_reward = "tagged"\n'
        "[defaults]\nitem_timeout_s = 7\n"
        '[[rewards]]\nname = "tagged"\nreward = "format"\nparams = { format = "answer_tag" }\n'
        "max_batch_size = 8\n"
        '[[envs]]\nid = "rewardgym/Math-v0"\nname = "math-env"\n'
    )
    with served(["serve", "--config", str(toml)], free_port()) as url:
        listed = {r["name"]: r for r in httpx.get(f"{url}/v1/rewards").json()["rewards"]}
        assert listed["tagged"]["max_batch_size"] == 8 and listed["tagged"]["item_timeout_s"] == 7
        assert listed["math-env"]["source"] == "environment rewardgym/Math-v0"
        rewards = httpx.post(f"{url}/get_reward", json={"query": ["<answer>1</answer>"]}).json()["rewards"]
        assert rewards == [1.0]
    yaml = tmp_path / "server.yaml"
    yaml.write_text("rewards:\n  - name: exact_match\n    max_queued: 3\n")
    with served(["serve", "--config", str(yaml)], free_port()) as url:
        assert httpx.get(f"{url}/v1/rewards").json()["rewards"][0]["max_queued"] == 3


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            '[[rewards]]\nname = "exact_match"\nmax_queud = 3\n',
            "rewards[0].max_queud: Extra inputs are not permitted",
        ),
        ('[[rewards]]\nname = "exact_mtch"\n', "unknown reward 'exact_mtch'. Did you mean 'exact_match'"),
        (
            '[[rewards]]\nname = "r"\nreward = "format"\nparams = { format = "nope" }\n',
            "unknown format 'nope'",
        ),
        ('[[rewards]]\nname = "r"\nreward = "format"\nparams = { colour = 1 }\n', "reward 'r': "),
        ('port = "eighty"\n[[rewards]]\nname = "exact_match"\n', "port: Input should be a valid integer"),
        ('[[envs]]\nid = "rewardgym/Nope-v0"\n', "Nope-v0"),
        ("workers = 2\n", "nothing to serve"),
        (
            'api_key_env = "REWARDGYM_TEST_UNSET_KEY"\n[[rewards]]\nname = "exact_match"\n',
            "is empty or unset",
        ),
        ("[[rewards]\n", "cannot parse"),
    ],
)
def test_bad_configs_fail_in_one_line(tmp_path: Path, config: str, words: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "rewardgym", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert words in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_reward_param_needs_a_served_alias() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rewardgym", "serve", "--reward", "t=format", "--reward-param", "x.format=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "ALIAS.KEY=VALUE" in result.stderr


def test_load_with_malformed_requests_and_a_slow_reward() -> None:
    """Thousands of requests at 32 at a time, a share malformed and a share slow: every
    valid request gets its right answer, every malformed one a 4xx, and nothing a 5xx."""
    import asyncio

    argv = ["serve", *IMPORTS, "--reward", "exact_match", "--reward", "slow", "--workers", "2"]
    with served(argv, free_port()) as url:

        def request(i: int) -> tuple[str, bytes, object]:
            kind = ("malformed", "wrong", "slow", "valid", "valid", "valid", "valid", "valid")[i % 8]
            if kind == "malformed":
                return "exact_match", b'{"samples": [{"completion": "x"', kind
            if kind == "wrong":
                return "exact_match", json.dumps({"samples": [{"completion": i}]}).encode(), kind
            if kind == "slow":
                sample = {"completion": "x", "info": {"sleep_s": 0.05}}
                return "slow", json.dumps({"samples": [sample]}).encode(), kind
            samples = [{"completion": str(i + k), "reference": str(i)} for k in range(4)]
            return "exact_match", json.dumps({"samples": samples}).encode(), kind

        async def run() -> list[tuple[object, int, dict]]:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
                gate = asyncio.Semaphore(32)

                async def one(i: int) -> tuple[object, int, dict]:
                    reward, body, kind = request(i)
                    async with gate:
                        r = await client.post(f"/v1/rewards/{reward}:score", content=body, headers=JSON)
                    return kind, r.status_code, r.json()

                return await asyncio.gather(*(one(i) for i in range(3000)))

        results = asyncio.run(run())
        # /metrics, whichever worker answers, sums what both workers counted
        assert metric(url, "rewardgym_items_total", reward="exact_match") == 1875 * 4
        assert metric(url, "rewardgym_items_total", reward="slow") == 375
        assert metric(url, "rewardgym_requests_total", reward="exact_match", status="200") == 1875
    assert not [r for r in results if r[1] >= 500]
    for kind, status, body in results:
        if kind in ("malformed", "wrong"):
            assert 400 <= status < 500 and body["error"]["message"]
        elif kind == "slow":
            assert status == 200 and body["scores"][0]["value"] == 1.0
        else:
            assert status == 200 and [s["value"] for s in body["scores"]] == [1.0, 0.0, 0.0, 0.0]
    assert sum(1 for r in results if r[0] == "valid") == 1875
    assert not any(math.isnan(s["value"]) for r in results if r[0] == "valid" for s in r[2]["scores"])


@pytest.mark.slow
def test_killing_a_server_worker_mid_load_loses_no_request() -> None:
    """SIGKILL one of two uvicorn workers while it holds requests: those are cut off and
    retried by the client (scoring is idempotent), every one gets its answer, and uvicorn
    starts a new worker in its place."""
    import asyncio

    from rewards import RewardClient, Sample

    def worker_pids(url: str) -> set[int]:
        return {httpx.get(f"{url}/health").json()["pid"] for _ in range(40)}  # a new connection each

    argv = ["serve", *IMPORTS, "--reward", "slow", "--workers", "2"]
    request_s = 0.4
    with served(argv, free_port()) as url:
        before = worker_pids(url)
        assert len(before) == 2
        batch = [Sample.from_completion("x", info={"sleep_s": request_s})] * 2

        async def load() -> tuple[list[list[float]], int, int]:
            async with RewardClient(url, max_concurrency=16, backoff_base_s=0.05) as client:
                jobs = [asyncio.ensure_future(client.score("slow", batch)) for _ in range(96)]
                # The victim is the worker that answers first: the connection it answered on is
                # the idle one the next queued job takes, so half a request later (the waves of
                # 16 stay in step) a request is mid-way on it. Killing the worker cuts it off.
                done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
                victim = next(iter(done)).result()[0].info["pid"]
                await asyncio.sleep(request_s / 2)
                os.kill(victim, signal.SIGKILL)
                results = [[s.value for s in scores] for scores in await asyncio.gather(*jobs)]
                return results, victim, client.retries

        results, victim, retries = asyncio.run(load())
        assert victim in before
        assert results == [[1.0, 1.0]] * 96
        assert retries >= 1  # a request really was in flight on the killed worker
        deadline = time.monotonic() + 30
        while len(after := worker_pids(url)) < 2 or victim in after:
            assert time.monotonic() < deadline, f"no replacement worker: {after}"
            time.sleep(0.5)
        assert len(after - before) == 1
