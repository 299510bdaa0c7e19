"""The SandboxFusion-compatible endpoint, served for real (`rewardgym serve-sandbox` in a
subprocess on loopback, bubblewrap inside) and called as veRL's and the Tinker cookbook's
clients call SandboxFusion: same bodies, same headers, same reading of the answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sandbox import Limits, make_sandbox
from sandbox.fusion import FusionSettings, fusion_router

from conftest import cli_without, free_port, served

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`rewardgym serve-sandbox` as a user starts it; yields the base URL."""
    port = free_port()
    with served(["serve-sandbox", "--pool-size", "2"], port) as url:
        yield url


def verl_call(base: str, code: str, stdin: str | None, language: str = "python", timeout: int = 10) -> Any:
    """veRL's `call_sandbox_api`: a json.dumps body with explicit headers, all fields sent."""
    payload = {
        "compile_timeout": timeout,
        "run_timeout": timeout,
        "code": code,
        "stdin": stdin,
        "memory_limit_MB": 1024,
        "language": language,
        "files": {},
        "fetch_files": [],
    }
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    response = httpx.post(
        f"{base}/run_code", content=json.dumps(payload), headers=headers, timeout=2 * timeout + 10
    )
    response.raise_for_status()
    return response.json()


def verl_verdict(answer: dict[str, Any]) -> str:
    """How veRL's `_process_single_case` reads an answer (its result codes, named)."""
    if answer["status"] == "SandboxError":
        return "sandbox_error"
    compile_result, run_result = answer.get("compile_result"), answer.get("run_result")
    if answer["status"] == "Failed":
        if compile_result and (
            compile_result["status"] in ("Error", "TimeLimitExceeded")
            or (compile_result["status"] == "Finished" and compile_result["return_code"] != 0)
        ):
            return "compile_error"
        if run_result and run_result["status"] == "TimeLimitExceeded":
            return "timeout"
        if run_result and (run_result["status"] == "Error" or run_result["return_code"] != 0):
            return "runtime_error"
        return "unknown_failure"
    if answer["status"] == "Success" and run_result and run_result["status"] == "Finished":
        return "finished"
    return "unexpected"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def test_python_with_stdin_as_verl_sends_it(server: str) -> None:
    answer = verl_call(server, "a, b = map(int, input().split())\nprint(a + b)", "2 40\n")
    assert verl_verdict(answer) == "finished"
    assert answer["status"] == "Success" and answer["message"] == ""
    assert answer["compile_result"] is None and answer["files"] == {}
    run = answer["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0
    assert run["stdout"] == "42\n" and run["stderr"] == "" and run["execution_time"] > 0
    assert set(answer) == {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}


def test_a_cpp_program_is_compiled_then_run(server: str) -> None:
    code = "#include <bits/stdc++.h>\nint main(){long a,b; std::cin>>a>>b; std::cout<<a*b<<std::endl;}"
    answer = verl_call(server, code, "6 7", language="cpp")
    assert verl_verdict(answer) == "finished", answer
    assert answer["compile_result"]["status"] == "Finished" and answer["compile_result"]["return_code"] == 0
    assert answer["run_result"]["stdout"] == "42\n"


def test_timeouts_runtime_errors_and_compile_errors_read_as_verl_expects(server: str) -> None:
    slow = verl_call(server, "while True: pass", "", timeout=1)
    assert verl_verdict(slow) == "timeout" and slow["status"] == "Failed"
    assert slow["run_result"]["return_code"] is None and slow["run_result"]["execution_time"] >= 0.9

    crash = verl_call(server, "print('partial')\nraise ValueError('boom')", None)
    assert verl_verdict(crash) == "runtime_error"
    run = crash["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 1
    assert run["stdout"] == "partial\n" and "ValueError: boom" in run["stderr"]

    broken = verl_call(server, "int main() { return 0 }", "", language="cpp")
    assert verl_verdict(broken) == "compile_error" and broken["status"] == "Failed"
    assert broken["compile_result"]["return_code"] != 0 and "error" in broken["compile_result"]["stderr"]
    assert broken["run_result"] is None


def test_memory_and_output_limits_are_run_errors_with_a_reason(server: str) -> None:
    payload = {"code": "x = bytearray(512 << 20)", "language": "python", "memory_limit_MB": 128}
    hungry = httpx.post(f"{server}/run_code", json=payload, timeout=30).json()
    assert verl_verdict(hungry) == "runtime_error"
    assert hungry["run_result"]["status"] == "Error" and hungry["message"].startswith("memory:")

    loud = httpx.post(
        f"{server}/run_code", json={"code": "print('x' * (2 << 20))", "language": "python"}, timeout=30
    ).json()
    assert verl_verdict(loud) == "runtime_error"
    assert loud["run_result"]["status"] == "Error" and loud["message"].startswith("output-limit:")
    assert len(loud["run_result"]["stdout"]) == 1 << 20  # the server's output cap, as SandboxFusion's


TEST_UTIL = "def check(fn, cases):\n    return all(fn(*args) == want for args, want in cases)\n"
TEST_CODE = """
import json
from code import solve
from testing_util import check
cases = json.load(open("test_cases.txt"))["cases"]
print("passed" if check(solve, cases) else "failed")
"""


def test_files_as_the_tinker_cookbook_sends_them(server: str) -> None:
    """Its SandboxFusionClient: aiohttp `json=` with code, language, an int run_timeout and
    base64 files; success is status == "Success"."""
    files = {
        "test_cases.txt": json.dumps({"cases": [[[1, 2], 3], [[5, 5], 10]]}),
        "code.py": "def solve(a, b):\n    return a + b\n",
        "testing_util.py": TEST_UTIL,
    }
    payload = {
        "code": TEST_CODE,
        "language": "python",
        "run_timeout": 11,
        "files": {name: b64(text) for name, text in files.items()},
    }

    async def post_all() -> list[Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post(f"{server}/run_code", json=payload) for _ in range(6))
            )
        return [r.json() for r in responses]

    answers = asyncio.run(post_all())  # concurrent, like its connection pool
    assert all(a["status"] == "Success" and a["run_result"]["stdout"] == "passed\n" for a in answers), answers


def test_fetched_files_come_back_base64_and_missing_ones_are_left_out(server: str) -> None:
    code = (
        "import os\n"
        "data = open('in/blob.bin', 'rb').read()\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/reversed.bin', 'wb').write(data[::-1])\n"
        "print(len(data))"
    )
    blob = bytes(range(256)) * 4
    payload = {
        "code": code,
        "language": "python",
        "files": {"in/blob.bin": b64(blob), "ignored.txt": None},  # null content: skipped, as there
        "fetch_files": ["out/reversed.bin", "missing.txt"],
    }
    answer = httpx.post(f"{server}/run_code", json=payload, timeout=30).json()
    assert answer["status"] == "Success", answer
    assert answer["run_result"]["stdout"] == "1024\n"
    assert set(answer["files"]) == {"out/reversed.bin"}
    assert base64.b64decode(answer["files"]["out/reversed.bin"]) == blob[::-1]


def test_bash_and_c_run_too(server: str) -> None:
    bash = verl_call(server, 'read x; echo "got $x"; exit 4', "it\n", language="bash")
    assert bash["status"] == "Failed" and bash["run_result"]["return_code"] == 4
    assert bash["run_result"]["stdout"] == "got it\n"
    c = verl_call(server, '#include <stdio.h>\nint main(){puts("c ok");return 0;}', "", language="c")
    assert c["status"] == "Success" and c["run_result"]["stdout"] == "c ok\n"


def test_health_and_ping(server: str) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "backend": "bubblewrap"}
    assert httpx.get(f"{server}/v1/ping").json() == "pong"


GOOD = {"code": "print(1)", "language": "python"}
BAD_REQUESTS = [
    ('{"code": ', "Invalid JSON"),
    ("", "Invalid JSON"),
    ("[1, 2]", "Input should be an object"),
    ({"language": "python"}, "code: Field required"),
    ({"code": 5, "language": "python"}, "code: Input should be a valid string"),
    ({"code": "x"}, "language: Field required"),
    ({**GOOD, "language": "go"}, "unknown language 'go'"),
    ({**GOOD, "run_timeout": -1}, "run_timeout: Input should be greater than 0"),
    ({**GOOD, "run_timeout": 10**9}, "run_timeout: at most 3600 seconds"),
    ({**GOOD, "memory_limit_MB": 10**7}, "memory_limit_MB: at most"),
    ({**GOOD, "stdin": 5}, "stdin: Input should be a valid string"),
    ({**GOOD, "files": ["a.txt"]}, "files: Input should be an object"),
    ({**GOOD, "files": {"a.txt": 5}}, "files.a.txt: Input should be a valid string"),
    ({**GOOD, "files": {"a.txt": "not base64!"}}, "files['a.txt'] is not valid base64"),
    ({**GOOD, "files": {"/etc/passwd": b64("x")}}, "must be relative to the work dir"),
    ({**GOOD, "files": {"../escape.txt": b64("x")}}, "must be relative to the work dir"),
    ({**GOOD, "files": {"dir/": b64("x")}}, "with no empty, '.' or '..' part"),
    ({**GOOD, "files": {"main.py": b64("x")}}, "'main.py' is where the python code is written"),
    ({**GOOD, "files": {"a.txt": b64("x"), "./a.txt": b64("y")}}, "'./a.txt' must be relative"),
    ({**GOOD, "fetch_files": ["/etc/shadow"]}, "fetch_files: file path '/etc/shadow' must be relative"),
    ({**GOOD, "fetch_files": "out.txt"}, "fetch_files: Input should be a valid array"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_naming_the_problem(server: str, body: object, problem: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    response = httpx.post(f"{server}/run_code", content=content, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert problem in error["message"] and error["type"] == "invalid_request_error"


# -- the router mounted in another app, with its own limits --------------------------


@pytest.fixture(scope="module")
def mounted() -> Iterator[str]:
    """`fusion_router` under a prefix of another FastAPI app (as the reward server will mount
    it), with small limits; a real uvicorn on loopback in a thread."""
    sandbox = make_sandbox("bubblewrap", pool_size=1)
    settings = FusionSettings(limits=Limits(memory_mb=256, max_file_bytes=1024), max_request_bytes=16 << 10)
    app = FastAPI()
    app.include_router(fusion_router(sandbox, settings), prefix="/sandbox")
    try:
        with uvicorn_in_thread(app) as base:
            yield f"{base}/sandbox"
    finally:
        sandbox.close()


@contextlib.contextmanager
def uvicorn_in_thread(app: FastAPI) -> Iterator[str]:
    """A real uvicorn on loopback, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_router_works_mounted_under_a_prefix(mounted: str) -> None:
    answer = httpx.post(f"{mounted}/run_code", json=GOOD, timeout=30).json()
    assert answer["status"] == "Success" and answer["run_result"]["stdout"] == "1\n"


def test_oversize_requests_and_files_are_refused_with_413(mounted: str) -> None:
    big_file = {**GOOD, "files": {"big.bin": b64(b"x" * 2048)}}
    response = httpx.post(f"{mounted}/run_code", json=big_file, timeout=30)
    assert (
        response.status_code == 413
        and "files['big.bin'] is 2048 bytes" in response.json()["error"]["message"]
    )

    huge = {**GOOD, "code": "#" * (20 << 10)}
    response = httpx.post(f"{mounted}/run_code", json=huge, timeout=30)  # with a Content-Length
    assert response.status_code == 413 and "larger than this server's limit" in response.text

    def chunks() -> Iterator[bytes]:
        yield json.dumps(huge).encode()

    response = httpx.post(f"{mounted}/run_code", content=chunks(), timeout=30)  # chunked: no length given
    assert response.status_code == 413 and "larger than this server's limit" in response.text


# -- the command line ----------------------------------------------------------------


def test_serve_sandbox_without_the_serve_extra_names_it() -> None:
    """A base install has no uvicorn: blocking the import shows what such a user sees."""
    out = cli_without("uvicorn", ["serve-sandbox", "--port", "1"])
    assert out.returncode == 2
    assert "this needs 'uvicorn', which comes with: pip install 'rewardgym[serve]'" in out.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--pool-size", "0"], "--pool-size must be at least 1, got 0"),
        (["--docker-image", "python:3.12"], "--docker-image goes with --backend docker"),
        (["--backend", "firecracker"], "invalid choice: 'firecracker'"),
    ],
)
def test_serve_sandbox_refuses_bad_arguments_in_one_line(args: list[str], problem: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rewardgym", "serve-sandbox", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and problem in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_failed_sandbox_answers_sandbox_error_as_sandboxfusion_does() -> None:
    """The router over a sandbox that cannot run (closed): HTTP 200, status "SandboxError"
    with the reason, which veRL reads as a sandbox error, not as the code's failure."""
    closed = make_sandbox("bubblewrap", pool_size=1)
    closed.close()
    app = FastAPI()
    app.include_router(fusion_router(closed))
    with uvicorn_in_thread(app) as base:
        answer = verl_call(base, "print(1)", None)
    assert answer["status"] == "SandboxError" and answer["message"] == "the sandbox is closed", answer
    assert answer["run_result"] is None and verl_verdict(answer) == "sandbox_error"
