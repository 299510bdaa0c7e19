"""The OpenAI-compatible model server (real subprocess) and the OpenAI engine that calls it."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from trainer import EngineError, Generation, OpenAIEngine, SamplingParams, TransformersEngine

from conftest import ScriptedHTTPServer, free_port

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def generate(engine: OpenAIEngine, params: SamplingParams):
    async def go():
        try:
            return await engine.generate(MESSAGES, params)
        finally:
            await engine.close()

    return asyncio.run(go())


def test_models_endpoint(model_server: str) -> None:
    data = httpx.get(f"{model_server}/models").json()
    assert [m["id"] for m in data["data"]] == ["tiny"]


def test_chat_completions_through_the_engine(model_server: str) -> None:
    generation = generate(OpenAIEngine(model_server, "tiny"), SamplingParams(max_tokens=5, temperature=0))
    assert isinstance(generation.text, str)
    assert 1 <= generation.num_tokens <= 5
    assert generation.finish_reason in ("stop", "length")


def test_completions_api_for_base_models(model_server: str) -> None:
    engine = OpenAIEngine(model_server, "tiny", api="completions")
    generation = generate(engine, SamplingParams(max_tokens=4, temperature=0))
    assert 1 <= generation.num_tokens <= 4


def test_chat_response_shape_logprobs_and_n(model_server: str) -> None:
    body = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 4,
        "temperature": 1.0,
        "n": 2,
        "logprobs": True,
    }
    data = httpx.post(f"{model_server}/chat/completions", json=body, timeout=60).json()
    assert data["object"] == "chat.completion" and len(data["choices"]) == 2
    for choice in data["choices"]:
        assert choice["message"]["role"] == "assistant"
        assert all(entry["logprob"] <= 0 for entry in choice["logprobs"]["content"])
    lengths = [len(c["logprobs"]["content"]) for c in data["choices"]]
    assert data["usage"]["completion_tokens"] == sum(lengths)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "tiny"}, "messages: Field required"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0] is not a chat message"),
        (
            {"messages": MESSAGES, "temperature": -1},
            "temperature: Input should be greater than or equal to 0",
        ),
        ({"messages": MESSAGES, "n": 99}, "n: Input should be less than or equal to 16"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        (
            {"messages": MESSAGES, "top_logprobs": 3},
            "top_logprobs: Value error, top_logprobs needs logprobs: true",
        ),
        (
            {"messages": MESSAGES, "logprobs": True, "top_logprobs": 21},
            "top_logprobs: Input should be less than or equal to 20",
        ),
    ],
)
def test_malformed_requests_get_a_400_naming_the_problem(model_server: str, body: dict, problem: str) -> None:
    response = httpx.post(f"{model_server}/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]


def test_non_json_body_is_a_400(model_server: str) -> None:
    response = httpx.post(
        f"{model_server}/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_a_rejected_request_fails_at_once_with_the_servers_message(model_server: str) -> None:
    with pytest.raises(EngineError, match=r"rejected the request \(400\).*temperature"):
        generate(OpenAIEngine(model_server, "tiny"), SamplingParams(max_tokens=2, temperature=3.0))


def test_an_unreachable_server_is_retried_then_reported() -> None:
    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "m", max_attempts=2)
    with pytest.raises(EngineError, match="gave up after 2 attempts: cannot reach"):
        generate(engine, SamplingParams(max_tokens=2))


class ScriptedFaultServer:
    """A scripted fault server (not a model): answers 503 + Retry-After first, then a valid reply.

    A real overloaded server cannot be made to return 503 on cue, so this one plays it.
    """

    def __init__(self, failures: int, retry_after: str = "1") -> None:
        self.requests: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append(time.monotonic())
                if len(outer.requests) <= failures:
                    self.send_response(503)
                    self.send_header("Retry-After", retry_after)
                    payload = b'{"error": "overloaded"}'
                else:
                    self.send_response(200)
                    choice = {"message": {"role": "assistant", "content": " 5 "}, "finish_reason": "stop"}
                    payload = json.dumps({"choices": [choice], "usage": {"completion_tokens": 2}}).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fault_server() -> Iterator[ScriptedFaultServer]:
    server = ScriptedFaultServer(failures=1, retry_after="1")
    yield server
    server.server.shutdown()


def test_503_with_retry_after_is_retried_after_the_servers_delay(fault_server: ScriptedFaultServer) -> None:
    generation = generate(OpenAIEngine(fault_server.url, "m"), SamplingParams(max_tokens=2))
    assert (generation.text, generation.num_tokens) == ("5", 2)
    first, second = fault_server.requests
    assert second - first >= 0.95  # honoured Retry-After: 1


PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def local_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    """The model the server runs, in this process: what the server's answers should equal."""
    engine = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu")
    yield engine
    engine.shutdown()


def assert_same_tops(remote: Generation, local: Generation) -> None:
    assert len(remote.top_logprobs_T) == len(local.top_logprobs_T) > 0
    for got, want in zip(remote.top_logprobs_T, local.top_logprobs_T, strict=True):
        assert list(got) == list(want)
        assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-5)


def test_chat_top_logprobs_equal_the_in_process_engine(
    model_server: str, local_engine: TransformersEngine
) -> None:
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=5)
    remote = generate(OpenAIEngine(model_server, "tiny"), params)
    local = asyncio.run(local_engine.generate(MESSAGES, params))
    assert remote.text == local.text
    assert_same_tops(remote, local)
    for logprob, top in zip(remote.logprobs_T, remote.top_logprobs_T, strict=True):
        assert logprob == max(top.values()) == next(iter(top.values()))  # greedy: the argmax was sampled


async def complete_both(
    engine: OpenAIEngine, local: TransformersEngine, params: SamplingParams
) -> tuple[Generation, Generation]:
    try:
        return await engine.complete(PROMPT, params), await local.complete(PROMPT, params)
    finally:
        await engine.close()


def test_complete_sends_raw_text_and_equals_the_local_completion(
    model_server: str, local_engine: TransformersEngine
) -> None:
    """`complete` goes to /completions even from a chat engine, with only the caller's stops:
    greedy, then seeded sampling (the server samples rows with their own seed) cut by a stop."""
    sampled = SamplingParams(max_tokens=16, temperature=1.0, seed=3, top_logprobs=3)
    free = asyncio.run(local_engine.complete(PROMPT, sampled))
    # a stop string first found past the first token, so that the cut text has tokens
    after = len(local_engine.tokenizer.decode([free.token_ids[0]])) + 1
    text = free.text
    stop = next(text[i : i + 2] for i in range(after, len(text) - 1) if text.index(text[i : i + 2]) == i)
    for params in (
        SamplingParams(max_tokens=8, temperature=0, top_logprobs=3),
        replace(sampled, stop=(stop,)),
    ):
        engine = OpenAIEngine(model_server, "tiny", api="chat")
        remote, local = asyncio.run(complete_both(engine, local_engine, params))
        assert remote.text == local.text  # unstripped, as the local engine gives it
        assert (remote.num_tokens, remote.finish_reason) == (local.num_tokens, local.finish_reason)
        assert_same_tops(remote, local)
        assert (engine.requests, engine.retries) == (1, 0)
    assert remote.finish_reason == "stop" and remote.text == text[: text.index(stop)]


def test_chat_top_logprobs_response_shape(model_server: str) -> None:
    body = {"messages": MESSAGES, "max_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    data = httpx.post(f"{model_server}/chat/completions", json=body, timeout=60).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"] > 0
    for entry in content:
        top = entry["top_logprobs"]
        assert 0 < len(top) <= 3
        assert all(
            set(t) == {"token", "logprob", "bytes"} and t["bytes"] == list(t["token"].encode()) for t in top
        )
        assert (top[0]["token"], top[0]["logprob"]) == (entry["token"], entry["logprob"])
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-6


def test_completions_report_up_to_20_top_logprobs_per_token(model_server: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 20}
    data = httpx.post(f"{model_server}/completions", json=body, timeout=60).json()
    logprobs = data["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) > 0
    for token, logprob, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert 10 < len(top) <= 20  # a few ids of the tiny vocabulary may merge into one text
        assert next(iter(top)) == token and top[token] == logprob == max(top.values())
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
    too_many = httpx.post(f"{model_server}/completions", json={**body, "logprobs": 21}, timeout=30)
    assert too_many.status_code == 400
    assert "logprobs: Input should be less than or equal to 20" in too_many.json()["error"]["message"]


def test_a_garbage_200_is_retried_like_a_5xx(scripted: ScriptedHTTPServer) -> None:
    """A scripted fault server (no model): a proxy's HTML page with status 200, then a valid
    completion whose top logprobs come unordered and with a null step, as servers may send."""
    scripted.reply(200, b"<html>502 Bad Gateway</html>", **{"Content-Type": "text/html"})
    choice = {
        "text": " 2",
        "finish_reason": "stop",
        "logprobs": {
            "tokens": [" 2", "\n"],
            "token_logprobs": [-0.1, -0.7],
            "top_logprobs": [{" 3": -2.5, " 2": -0.1, " 4": -3.0}, None],
        },
    }
    scripted.reply(200, {"choices": [choice], "usage": {"completion_tokens": 2}})
    engine = OpenAIEngine(scripted.url + "/v1", "judge", api="chat")
    generation = asyncio.run(engine.complete("Q: 1 + 1?\nA:", SamplingParams(max_tokens=2, top_logprobs=2)))
    assert generation.text == " 2" and generation.num_tokens == 2
    assert generation.top_logprobs_T == ({" 2": -0.1, " 3": -2.5}, {})
    assert [list(top) for top in generation.top_logprobs_T] == [[" 2", " 3"], []]  # most likely first
    assert (engine.requests, engine.retries) == (2, 1)
    assert [path for path, _, _ in scripted.requests] == ["/v1/completions"] * 2
    sent = scripted.bodies[-1]
    assert (sent["prompt"], sent["logprobs"], "stop" in sent) == ("Q: 1 + 1?\nA:", 2, False)


def test_a_reply_of_the_wrong_shape_fails_once_the_attempts_run_out(scripted: ScriptedHTTPServer) -> None:
    """A scripted fault server (no model) answering 200 with JSON that is not a completion."""
    for _ in range(2):
        scripted.reply(200, {"error": "upstream timed out"})
    engine = OpenAIEngine(scripted.url + "/v1", "judge", max_attempts=2)
    with pytest.raises(EngineError, match=r"gave up after 2 attempts: unexpected response shape.*upstream"):
        generate(engine, SamplingParams(max_tokens=2, top_logprobs=2))
    assert (engine.requests, engine.retries) == (2, 1)
    assert scripted.bodies[0]["logprobs"] is True and scripted.bodies[0]["top_logprobs"] == 2
