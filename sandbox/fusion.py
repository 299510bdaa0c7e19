"""A SandboxFusion-compatible `POST /run_code` over any `Sandbox`.

veRL's sandbox_fusion reward, the Tinker cookbook's code RL recipe and other tools speak
SandboxFusion's HTTP protocol; serving it here lets them use our sandbox unchanged
(`rewardgym serve-sandbox`, then point them at http://127.0.0.1:8080/run_code).

The protocol, as SandboxFusion defines it: the request is `{code, language,
compile_timeout=10, run_timeout=10, memory_limit_MB=-1, stdin=null, files={path: base64 |
null}, fetch_files=[], args=[]}`; the answer is `{status, message, compile_result,
run_result, executor_pod_name, files}` where status is "Success" (everything ran and exited
0), "Failed" (the code's fault: non-zero exit, time limit, compile error) or "SandboxError"
(ours), and each result is `{status: Finished | Error | TimeLimitExceeded, execution_time,
return_code, stdout, stderr}`. A time limit leaves return_code null; a failed compile leaves
run_result null. Our memory and output-limit stops answer run_result status "Error" under
"Failed" with the reason in `message`. Languages: python, cpp, bash and c (SandboxFusion's
others are refused with a 400). Bad input is a 4xx JSON error naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.base import Sandbox
from sandbox.languages import get_language
from sandbox.types import Limits, RunRequest, RunResult, RunStatus, check_relative_path

logger = logging.getLogger(__name__)
MIB = 1 << 20


class RunCodeRequest(BaseModel):
    """SandboxFusion's request, field for field (unknown fields are ignored, as there)."""

    model_config = ConfigDict(extra="ignore")

    code: str
    language: str
    compile_timeout: float = Field(default=10, gt=0, allow_inf_nan=False)
    run_timeout: float = Field(default=10, gt=0, allow_inf_nan=False)
    memory_limit_MB: int = -1  # <= 0: the server's default
    stdin: str | None = None
    files: dict[str, str | None] = Field(default_factory=dict)  # null content: skipped
    fetch_files: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)  # passed to the program


class CommandRunResult(BaseModel):
    status: Literal["Finished", "Error", "TimeLimitExceeded"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class FusionSettings:
    """The server's policy. `limits` is the base of every run (output cap, disk, processes),
    with its memory used when a request sends `memory_limit_MB` <= 0 (SandboxFusion's "no
    limit"); requests may not go past the maxima."""

    limits: Limits = field(default_factory=lambda: Limits(memory_mb=1024))
    max_timeout_s: float = 3600.0
    max_memory_mb: int = 16384
    max_request_bytes: int = 64 * MIB
    max_fetch_files: int = 64


class FusionInputError(Exception):
    """A request we refuse, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _input_error(exc: FusionInputError) -> JSONResponse:
    kind = "request_too_large" if exc.status == 413 else "invalid_request_error"
    return JSONResponse(status_code=exc.status, content={"error": {"message": str(exc), "type": kind}})


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    too_large = f"the request body is larger than this server's limit of {limit} bytes"
    if declared.isdigit() and int(declared) > limit:
        raise FusionInputError(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FusionInputError(413, too_large)
    return bytes(body)


def _check_path(path: str, what: str) -> str:
    try:
        check_relative_path(path)
    except ValueError as exc:
        raise FusionInputError(400, f"{what}: {exc}") from None
    return path


def _decode_file(path: str, text: str) -> bytes:
    try:  # line breaks and spaces are tolerated (MIME-style base64), anything else is not
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise FusionInputError(400, f"files[{path!r}] is not valid base64") from None


def to_run_request(body: RunCodeRequest, settings: FusionSettings) -> RunRequest:
    """Our request for a SandboxFusion one. Raises FusionInputError for anything we refuse."""
    try:
        language = get_language(body.language)
    except ValueError as exc:
        raise FusionInputError(400, f"language: {exc}") from None
    for name in ("run_timeout", "compile_timeout"):
        if getattr(body, name) > settings.max_timeout_s:
            raise FusionInputError(400, f"{name}: at most {settings.max_timeout_s:g} seconds here")
    memory_mb = body.memory_limit_MB if body.memory_limit_MB > 0 else settings.limits.memory_mb
    if memory_mb > settings.max_memory_mb:
        raise FusionInputError(400, f"memory_limit_MB: at most {settings.max_memory_mb} here")
    limits = settings.limits
    files: dict[str, bytes] = {}
    for path, text in body.files.items():
        _check_path(path, "files")  # normalised already: no '', '.' or '..' parts
        if text is None:
            continue  # SandboxFusion skips files without content
        if path == language.source_file:
            raise FusionInputError(400, f"files: {path!r} is where the {language.name} code is written")
        data = _decode_file(path, text)
        if len(data) > limits.max_file_bytes:
            message = f"files[{path!r}] is {len(data)} bytes; each file may have {limits.max_file_bytes}"
            raise FusionInputError(413, message)
        files[path] = data
    total = sum(map(len, files.values())) + len(body.code.encode())
    if total > limits.disk_mb * MIB:
        message = f"the files and code come to {total} bytes; the work dir holds {limits.disk_mb} MiB"
        raise FusionInputError(413, message)
    fetch = list(dict.fromkeys(_check_path(path, "fetch_files") for path in body.fetch_files))
    if len(fetch) > settings.max_fetch_files:
        raise FusionInputError(400, f"fetch_files: at most {settings.max_fetch_files} files here")
    try:
        return RunRequest(
            code=body.code,
            language=language.name,
            args=tuple(body.args),
            files=files,
            stdin=(body.stdin or "").encode(),
            fetch_files=tuple(fetch),
            limits=replace(limits, wall_time_s=body.run_timeout, cpu_time_s=None, memory_mb=memory_mb),
            compile_timeout_s=body.compile_timeout,
        )
    except ValueError as exc:  # the checks above should leave nothing for RunRequest to refuse
        raise FusionInputError(400, str(exc)) from None


def _command_result(step: RunResult) -> CommandRunResult:
    """One step as SandboxFusion reports it: a time limit has no return code; our memory
    and output-limit stops are "Error" (SandboxFusion's word for a run that did not finish)."""
    if step.status is RunStatus.TIMEOUT:
        status, code = "TimeLimitExceeded", None
    elif step.status in (RunStatus.OK, RunStatus.ERROR):
        status, code = "Finished", step.exit_code
    else:
        status, code = "Error", step.exit_code
    return CommandRunResult(
        status=status,  # type: ignore[arg-type]
        execution_time=step.wall_time_s,
        return_code=code,
        stdout=step.stdout,
        stderr=step.stderr,
    )


def to_fusion_response(result: RunResult) -> RunCodeResponse:
    if result.status is RunStatus.SANDBOX_ERROR:
        return RunCodeResponse(status="SandboxError", message=result.message)
    message = "" if result.ok else f"{result.status.value}: {result.message}"
    compile_result = _command_result(result.compile) if result.compile is not None else None
    if result.compile is not None and not result.compile.ok:
        return RunCodeResponse(status="Failed", message=message, compile_result=compile_result)
    return RunCodeResponse(
        status="Success" if result.ok else "Failed",
        message=message,
        compile_result=compile_result,
        run_result=_command_result(result),
        files={path: base64.b64encode(data).decode() for path, data in result.files.items()},
    )


def fusion_router(sandbox: Sandbox, settings: FusionSettings | None = None) -> APIRouter:
    """`POST /run_code` running each request in `sandbox`. Mount it anywhere (it shapes its
    own errors, so it needs no app-level handlers)."""
    settings = settings or FusionSettings()
    router = APIRouter(tags=["sandbox"])
    body_schema = {"application/json": {"schema": RunCodeRequest.model_json_schema()}}

    @router.post(
        "/run_code",
        response_model=RunCodeResponse,
        openapi_extra={"requestBody": {"content": body_schema, "required": True}},
    )
    async def run_code(request: Request) -> Any:
        try:
            raw = await _read_body(request, settings.max_request_bytes)
            try:
                body = RunCodeRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise FusionInputError(400, _describe(exc)) from None
            run_request = to_run_request(body, settings)
        except FusionInputError as exc:
            return _input_error(exc)
        try:
            result = await sandbox.run(run_request)
        except Exception as exc:  # the sandbox promises results, not exceptions; answer as SandboxFusion does
            logger.exception("the sandbox failed on a /run_code request")
            return RunCodeResponse(status="SandboxError", message=f"{type(exc).__name__}: {exc}")
        return to_fusion_response(result)

    return router


def create_fusion_app(sandbox: Sandbox, settings: FusionSettings | None = None) -> FastAPI:
    """The endpoint on its own, with `GET /health` and SandboxFusion's `GET /v1/ping`."""
    app = FastAPI(title="rewardgym sandbox (SandboxFusion-compatible)", version="1")
    app.include_router(fusion_router(sandbox, settings))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "backend": sandbox.name}

    @app.get("/v1/ping")
    async def ping() -> str:
        return "pong"

    return app
