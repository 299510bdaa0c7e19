"""The OpenAI-compatible model server (real subprocess) and the OpenAI engine that calls it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from trainer import EngineError, OpenAIEngine, SamplingParams

from conftest import free_port

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
