"""Shared fixtures: a real tiny model on disk, a real model server on loopback."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

CORPUS = [
    "User: What is 2 + 3?\nAssistant: 2 + 3 = 5. The answer is \\boxed{5}.\n",
    "Solve the math problem. Show brief working, then give the final answer.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 + - * / = { } ( )",
    "That is not right. Check your working and try again.",
] * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(
    directory: Path, *, chat_template: str | None = None, seed: int = 0, hidden: int = 64, layers: int = 2
) -> Path:
    """A small random Llama (2 layers, hidden 64 by default) with a trained byte-level BPE
    tokenizer, written with save_pretrained. bench/ builds bigger ones with the same recipe."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=384, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(4, hidden // 64),
        num_key_value_heads=max(2, hidden // 128),
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat-model"), chat_template=CHAT_TEMPLATE)


def tiny_lora_config(model_dir: Path, run_dir: Path, *overrides: str) -> Any:
    """A two-step LoRA run of the tiny model on tests/LetterA-v0 (the engine tests add their engine)."""
    from trainer.config import TrainConfig

    base = [
        f"model.name={model_dir}",
        f"run_dir={run_dir}",
        "imports=[train_envs]",
        "rollout.env=tests/LetterA-v0",
        "rollout.group_size=4",
        "rollout.groups_per_step=2",
        "rollout.max_tokens=8",
        "lora.rank=4",
        "optim.lr=1e-2",
        "tensorboard=false",
        "steps=2",
    ]
    return TrainConfig.load(None, [*base, *overrides])


def run_with_plugin(
    tmp_path: Path, package: str, source: str, group: str, entries: dict[str, str], script: str
) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter that sees a plugin package as pip would install it.

    The package and a `.dist-info` with `entry_points.txt` go in a directory on PYTHONPATH,
    so discovery goes through the real importlib.metadata machinery.
    """
    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(textwrap.dedent(source))
    dist = site / f"{package}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def expected_top(tokenizer: Any, logprobs_V: Any, k: int) -> dict[str, float]:
    """The k most likely ids of one step, by decoded text, keeping the max of texts that merge
    (what an engine's `top_logprobs_T` should hold for that step)."""
    best: dict[str, float] = {}
    values, ids = logprobs_V.topk(k)
    for token, value in zip(ids.tolist(), values.tolist(), strict=True):
        text = tokenizer.decode([token])
        if value > -math.inf:
            best[text] = max(best.get(text, -math.inf), value)
    return best


def assert_same_top(actual: Mapping[str, float], expected: Mapping[str, float], tol: float = 1e-4) -> None:
    """Same texts and logprobs; a text within `tol` of the k-th value may trade places (float ties)."""
    floor = min(expected.values()) + tol
    assert {t for t, v in actual.items() if v > floor} == {t for t, v in expected.items() if v > floor}
    for text in actual.keys() & expected.keys():
        assert actual[text] == pytest.approx(expected[text], abs=tol)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def cli_without(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `rewardgym ARGV` with `module` made unimportable: what a user without that
    optional dependency sees."""
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from rewardgym.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def served(argv: list[str], port: int, health_path: str = "/health") -> Iterator[str]:
    """`rewardgym ARGV` as a real server subprocess on loopback; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardgym", *argv, "--port", str(port)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}{health_path}", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def model_server(tiny_model_dir: Path) -> Iterator[str]:
    """`rewardgym serve-model` with the tiny model, as a subprocess on loopback; yields the base URL."""
    argv = ["serve-model", "--model", str(tiny_model_dir), "--served-name", "tiny", "--max-tokens", "16"]
    with served(argv, free_port()) as url:
        yield f"{url}/v1"


class ScriptedHTTPServer:
    """A real HTTP server on loopback that answers POSTs from a script and records requests.

    For answers a correct server cannot be made to give on cue (faults, nonsense) or that no
    server here can produce (a tool-call parser in front of a tool-trained model)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scripted.requests.append((self.path, dict(self.headers), body))
                status, headers, payload = scripted.replies.pop(0)
                self.send_response(status)
                for key, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, status: int, body: Any, **headers: str) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.replies.append((status, {"Content-Type": "application/json", **headers}, payload))

    @property
    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.requests]


class _WideServer(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops simultaneous connects (they retry a second later)
    daemon_threads = True


class AnsweringHTTPServer:
    """A scripted JSON endpoint on loopback that answers every POST with `answer(body)` ->
    (status, JSON body), after holding it `delay_s`, and counts the requests and the most in
    flight at once (no real server reports that): for tests of concurrency limits and of
    clients facing a rule-following peer. Use it as a context manager; `url` ends in /v1."""

    def __init__(self, answer: Callable[[Any], tuple[int, Any]], *, delay_s: float = 0.0) -> None:
        self.requests = 0
        self.in_flight = 0
        self.peak = 0
        lock = threading.Lock()
        counted = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    counted.requests += 1
                    counted.in_flight += 1
                    counted.peak = max(counted.peak, counted.in_flight)
                try:
                    time.sleep(delay_s)
                    status, reply = answer(body)
                finally:
                    with lock:
                        counted.in_flight -= 1
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _WideServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> AnsweringHTTPServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedHTTPServer]:
    server = ScriptedHTTPServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
