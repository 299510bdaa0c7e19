"""An OpenAI-compatible HTTP server over a local transformers model.

`rewardgym serve-model --model DIR` answers `POST /v1/chat/completions`,
`POST /v1/completions` and `GET /v1/models`, so anything that speaks the OpenAI API (our
evaluator, judges, other tools) can use a local model with no account anywhere. For
throughput on real hardware, `vllm serve` speaks the same protocol.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from envs.spaces import is_message
from trainer.engines.base import MAX_TOP_LOGPROBS, EngineError, Generation, SamplingParams
from trainer.engines.transformers_engine import TransformersEngine


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send many optional OpenAI fields

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    seed: int | None = None

    def sampling(self, default_max_tokens: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(stop),
            seed=self.seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )


class ChatCompletionRequest(_SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("messages")
    @classmethod
    def _messages_are_chat(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, message in enumerate(messages):
            if not is_message(message):
                raise ValueError(f"messages[{i}] is not a chat message with a role and text content")
        return messages

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, top_logprobs: int | None, info: ValidationInfo) -> int | None:
        """As OpenAI answers: top logprobs come inside `logprobs`, which must be asked for."""
        if top_logprobs and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return top_logprobs


class CompletionRequest(_SamplingFields):
    prompt: str = Field(min_length=1)
    # The legacy API's top-k size (OpenAI caps it at 5; vLLM allows more, as do we).
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


def _openai_error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def create_app(engine: TransformersEngine, model_name: str, default_max_tokens: int = 256) -> FastAPI:
    app = FastAPI(title="rewardgym model server", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _openai_error(400, problems, "invalid_request_error")

    @app.exception_handler(EngineError)
    async def _engine_failed(request: Request, exc: EngineError) -> JSONResponse:
        return _openai_error(500, str(exc), "server_error")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "rewardgym"}],
        }

    def envelope(
        kind: str, id_prefix: str, choices: list[dict[str, Any]], generations: list[Generation]
    ) -> dict[str, Any]:
        """The OpenAI response wrapper around `choices`, with token usage."""
        prompt = len(generations[0].prompt_token_ids)
        completion = sum(g.num_tokens for g in generations)
        return {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def token_logprobs(generation: Generation) -> list[dict[str, Any]]:
        """Chat `logprobs.content`: each token with its logprob and its top alternatives."""
        tokens = [engine.tokenizer.decode([t]) for t in generation.token_ids]
        tops = generation.top_logprobs_T or [{}] * len(tokens)
        return [
            {
                "token": tok,
                "logprob": lp,
                "bytes": list(tok.encode()),
                "top_logprobs": [
                    {"token": alt, "logprob": alt_lp, "bytes": list(alt.encode())}
                    for alt, alt_lp in top.items()
                ],
            }
            for tok, lp, top in zip(tokens, generation.logprobs_T, tops, strict=False)
        ]

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> dict[str, Any]:
        params = body.sampling(
            default_max_tokens, logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0
        )
        generations = await asyncio.gather(*(engine.generate(body.messages, params) for _ in range(body.n)))  # type: ignore[arg-type]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "logprobs": {"content": token_logprobs(g)} if body.logprobs else None,
            }
            for i, g in enumerate(generations)
        ]
        return envelope("chat.completion", "chatcmpl", choices, list(generations))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> dict[str, Any]:
        params = body.sampling(
            default_max_tokens, logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0
        )
        generations = await asyncio.gather(*(engine.complete(body.prompt, params) for _ in range(body.n)))
        choices = []
        for i, g in enumerate(generations):
            logprobs = None
            if body.logprobs is not None:
                logprobs = {
                    "tokens": [engine.tokenizer.decode([t]) for t in g.token_ids],
                    "token_logprobs": list(g.logprobs_T),
                    # one {token: logprob} per token, most likely first (null when not asked for)
                    "top_logprobs": [dict(top) for top in g.top_logprobs_T] if body.logprobs else None,
                }
            choices.append(
                {"index": i, "text": g.text, "finish_reason": g.finish_reason, "logprobs": logprobs}
            )
        return envelope("text_completion", "cmpl", choices, list(generations))

    return app
