"""Generation with transformers `generate`, on CPU or GPU, with dynamic batching.

Concurrent `generate` calls (one per running episode) queue up; a single generation
thread takes up to `max_batch_size` waiting requests with the same sampling parameters
and runs them as one left-padded batch. So the evaluator's concurrency turns into batch
size without any caller knowing about batches.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Literal

from rewards.types import Message
from trainer.engines.base import Engine, EngineError, Generation, SamplingParams
from trainer.engines.chat_format import PLAIN_STOP, render_plain

ChatFormat = Literal["auto", "template", "plain"]
_STOP = object()


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: Future[Generation]


class TransformersEngine(Engine):
    """A local causal LM behind the Engine interface.

    `chat_format`: "template" uses the tokenizer's chat template, "plain" renders a
    `User:`/`Assistant:` transcript (for base models) and stops at the next `User:`;
    "auto" picks the template when the tokenizer has one.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        chat_format: ChatFormat = "auto",
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        name: str = "transformers",
    ) -> None:
        import torch
        from transformers import GenerationConfig

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Sampling is ours to define: a checkpoint's generation_config (top_k=64, top_p=0.95,
        # repetition penalties...) would otherwise fill every field we leave unset, and the
        # logprobs we report would not describe the distribution we sampled from.
        checkpoint = getattr(model, "generation_config", None)
        eos = getattr(checkpoint, "eos_token_id", None)
        self.eos_token_ids: list[int] = (
            list(eos) if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id]
        )
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=self.eos_token_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        if chat_format == "auto":
            chat_format = "template" if getattr(tokenizer, "chat_template", None) else "plain"
        if chat_format == "template" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_format='template' but the tokenizer has no chat template")
        self.chat_format = chat_format
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.name = name
        self.batches_run = 0  # generate() calls made; requests served / batches_run = mean batch size
        self.requests_served = 0
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"{name}-generate", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        chat_format: ChatFormat = "auto",
        max_batch_size: int = 8,
    ) -> TransformersEngine:
        """Load a model directory (or the embedded default, "gemma-3-270m")."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from trainer.models import resolve_model

        path = resolve_model(name_or_path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
        return cls(model, tokenizer, chat_format=chat_format, max_batch_size=max_batch_size, name=path.name)

    # -- Engine API --------------------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> tuple[list[int], tuple[str, ...]]:
        """Prompt token ids for a conversation, and the stop strings the format needs."""
        if self.chat_format == "template":
            ids = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
            return list(ids), ()
        return self.tokenizer(render_plain(messages)).input_ids, PLAIN_STOP

    async def generate(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        prompt_ids, format_stop = self.render(messages)
        if format_stop:
            params = replace(params, stop=tuple(dict.fromkeys(params.stop + format_stop)))
        generation = await self._submit(prompt_ids, params)
        return replace(generation, text=generation.text.strip())

    async def complete(self, prompt: str, params: SamplingParams) -> Generation:
        """Continue raw prompt text (the OpenAI completions API)."""
        return await self._submit(self.tokenizer(prompt).input_ids, params)

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._requests.put(_STOP)
            self._thread.join(timeout=60)

    # -- generation thread -----------------------------------------------------------------

    async def _submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        if self._closed:
            raise EngineError(f"{self.name} engine is closed")
        future: Future[Generation] = Future()
        self._requests.put(_Request(prompt_ids, params, future))
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        while True:
            first = self._requests.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            stop_after = False
            while len(batch) < self.max_batch_size:
                try:
                    request = self._requests.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if request is _STOP:
                    stop_after = True
                    break
                batch.append(request)
            by_params: dict[SamplingParams, list[_Request]] = defaultdict(list)
            for request in batch:
                by_params[request.params].append(request)
            for params, requests in by_params.items():
                live = [r for r in requests if r.future.set_running_or_notify_cancel()]
                if not live:
                    continue
                try:
                    results = self._generate_batch([r.prompt_ids for r in live], params)
                    self.batches_run += 1
                    self.requests_served += len(live)
                except Exception as exc:
                    for request in live:
                        request.future.set_exception(EngineError(f"generation failed: {exc}"))
                    continue
                for request, result in zip(live, results, strict=True):
                    request.future.set_result(result)
            if stop_after:
                return

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        torch = self.torch
        from transformers import GenerationConfig

        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        device = self.model.device
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,  # 0 = off; None would become transformers' default of 50
            pad_token_id=pad_id,
            eos_token_id=self.eos_token_ids,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(params.stop) or None,
        )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                tokenizer=self.tokenizer if params.stop else None,
            )
        results = []
        for prompt, row in zip(prompts, output[:, width:].tolist(), strict=True):
            ids, ended = _cut_at_eos(row, self.eos_token_ids, pad_id)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            hit = [text.index(s) for s in params.stop if s in text]
            if hit:
                text, ended = text[: min(hit)], True
            logprobs = self._logprobs(prompt, ids, params.temperature) if params.logprobs else ()
            results.append(
                Generation(
                    text=text,
                    num_tokens=len(ids),
                    finish_reason="stop" if ended else "length",
                    token_ids=tuple(ids),
                    logprobs_T=logprobs,
                    prompt_token_ids=tuple(prompt),
                )
            )
        return results

    def _logprobs(self, prompt: list[int], completion: list[int], temperature: float) -> tuple[float, ...]:
        """Log-probability of each completion token under the sampling distribution."""
        if not completion:
            return ()
        torch = self.torch
        ids = torch.tensor([prompt + completion], device=self.model.device)
        with torch.inference_mode():
            logits_TV = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        if temperature > 0:
            logits_TV = logits_TV / temperature
        logprobs_TV = torch.log_softmax(logits_TV, dim=-1)
        target_T = torch.tensor(completion, device=logits_TV.device)
        return tuple(logprobs_TV.gather(1, target_T[:, None])[:, 0].tolist())


def _cut_at_eos(row: list[int], eos_ids: list[int], pad_id: int | None) -> tuple[list[int], bool]:
    """Completion ids up to and including the first EOS; trailing padding dropped."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return row[: i + 1], True
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row, False
