"""An OpenAI-compatible HTTP server over a local transformers model.

`rewardgym serve-model --model DIR` answers `POST /v1/chat/completions`,
`POST /v1/completions` and `GET /v1/models`, so anything that speaks the OpenAI API (our
evaluator, judges, other tools) can use a local model with no account anywhere. For
throughput on real hardware, `vllm serve` speaks the same protocol.

Training through a server needs vLLM's extensions, which this server has too: a prompt of
token ids, `return_tokens_as_token_ids` (tokens written "token_id:<id>") and
`return_token_ids` in `/v1/completions`, and, with `--enable-lora`, runtime LoRA loading
(`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`; see `trainer.served_models`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from envs.spaces import is_message
from trainer.engines.base import MAX_TOP_LOGPROBS, EngineError, Generation, SamplingParams
from trainer.engines.openai_engine import TOKEN_ID_PREFIX
from trainer.engines.transformers_engine import TransformersEngine
from trainer.served_models import AdapterError, ServedModels


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
    # Text, or token ids continued exactly (vLLM's extension: what training sends).
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    )
    # The legacy API's top-k size (OpenAI caps it at 5; vLLM allows more, as do we).
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    return_tokens_as_token_ids: bool = False  # logprobs' tokens as "token_id:<id>"
    return_token_ids: bool = False  # each choice also carries token_ids and prompt_token_ids

    @field_validator("return_tokens_as_token_ids")
    @classmethod
    def _ids_only_for_sampled_tokens(cls, as_ids: bool, info: ValidationInfo) -> bool:
        """Top alternatives are merged by text here, so they cannot be given as token ids."""
        if as_ids and info.data.get("logprobs"):
            raise ValueError("is supported with logprobs 0 only (top alternatives are reported by text)")
        return as_ids


class LoadLoRAAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False  # replace an adapter already loaded under this name


class UnloadLoRAAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # vLLM's optional lora_int_id means nothing here

    lora_name: str = Field(min_length=1)


def _openai_error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def create_app(
    engine: TransformersEngine, model_name: str, default_max_tokens: int = 256, *, enable_lora: bool = False
) -> FastAPI:
    """The server's app over `engine` (served as `model_name`); `enable_lora` opens runtime
    LoRA loading. `app.state.models` holds the served models (the base and any adapters)."""
    app = FastAPI(title="rewardgym model server", version="1")
    served = ServedModels(engine, model_name, enable_lora=enable_lora)
    app.state.models = served
    vocab_size = engine.model.get_input_embeddings().num_embeddings

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _openai_error(400, problems, "invalid_request_error")

    @app.exception_handler(EngineError)
    async def _engine_failed(request: Request, exc: EngineError) -> JSONResponse:
        return _openai_error(500, str(exc), "server_error")

    @app.exception_handler(AdapterError)
    async def _adapter_refused(request: Request, exc: AdapterError) -> JSONResponse:
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return _openai_error(exc.status, str(exc), kind)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": served.cards()}

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadLoRAAdapterRequest) -> PlainTextResponse:
        """vLLM's runtime LoRA loading: the peft adapter at `lora_path` becomes model `lora_name`."""
        await served.load(body.lora_name, body.lora_path, inplace=body.load_inplace)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadLoRAAdapterRequest) -> PlainTextResponse:
        await served.unload(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    def envelope(
        kind: str, id_prefix: str, model: str, choices: list[dict[str, Any]], generations: list[Generation]
    ) -> dict[str, Any]:
        """The OpenAI response wrapper around `choices`, with token usage."""
        prompt = len(generations[0].prompt_token_ids)
        completion = sum(g.num_tokens for g in generations)
        return {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def served_name(model: str | None) -> str:
        return model if model in served.adapters else model_name

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
        target = served.engine_for(body.model)
        generations = await asyncio.gather(*(target.generate(body.messages, params) for _ in range(body.n)))  # type: ignore[arg-type]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "logprobs": {"content": token_logprobs(g)} if body.logprobs else None,
            }
            for i, g in enumerate(generations)
        ]
        return envelope("chat.completion", "chatcmpl", served_name(body.model), choices, list(generations))

    def completion_logprobs(body: CompletionRequest, g: Generation) -> dict[str, Any]:
        if body.return_tokens_as_token_ids:
            tokens = [f"{TOKEN_ID_PREFIX}{t}" for t in g.token_ids]
            top: list[Any] = [{token: lp} for token, lp in zip(tokens, g.logprobs_T, strict=True)]
        else:
            tokens = [engine.tokenizer.decode([t]) for t in g.token_ids]
            # one {token: logprob} per token, most likely first (null when not asked for)
            top = [dict(step) for step in g.top_logprobs_T] if body.logprobs else None  # type: ignore[assignment]
        return {"tokens": tokens, "token_logprobs": list(g.logprobs_T), "top_logprobs": top}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        if not isinstance(body.prompt, str) and max(body.prompt) >= vocab_size:
            return _openai_error(
                400,
                f"prompt: token id {max(body.prompt)} is outside the vocabulary (size {vocab_size})",
                "invalid_request_error",
            )
        params = body.sampling(
            default_max_tokens, logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0
        )
        target = served.engine_for(body.model)
        generations = await asyncio.gather(*(target.complete(body.prompt, params) for _ in range(body.n)))
        choices = []
        for i, g in enumerate(generations):
            choice: dict[str, Any] = {
                "index": i,
                "text": g.text,
                "finish_reason": g.finish_reason,
                "logprobs": completion_logprobs(body, g) if body.logprobs is not None else None,
            }
            if body.return_token_ids:
                choice.update(token_ids=list(g.token_ids), prompt_token_ids=list(g.prompt_token_ids))
            choices.append(choice)
        return envelope("text_completion", "cmpl", served_name(body.model), choices, list(generations))

    return app
