"""Generation with transformers `generate`, on CPU or GPU, with dynamic batching.

Concurrent `generate` calls (one per running episode) queue up; a single generation
thread takes up to `max_batch_size` waiting requests with the same sampling parameters
and runs them as one left-padded batch. So the evaluator's concurrency turns into batch
size without any caller knowing about batches.
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from rewards.types import Message
from trainer.engines.base import EngineError, Generation, LocalEngine, SamplingParams, top_logprobs_by_text
from trainer.engines.chat_format import ChatFormat, ChatRenderer
from trainer.engines.stops import cut_at_stop

_STOP = object()


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: Future[Generation]


class TransformersEngine(LocalEngine):
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
        threaded: bool = True,
    ) -> None:
        """`threaded=False`: no generation thread; the owner calls `drive()` from its own thread."""
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
        self.renderer = ChatRenderer(tokenizer, chat_format)
        self.chat_format = self.renderer.chat_format
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.name = name
        self.batches_run = 0  # generate() calls made; requests served / batches_run = mean batch size
        self.requests_served = 0
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread: threading.Thread | None = None
        if threaded:
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
        threaded: bool = True,
    ) -> TransformersEngine:
        """Load a model directory (or the embedded default, "gemma-3-270m")."""
        import torch
        from transformers import AutoTokenizer

        from trainer.models import load_causal_lm, resolve_model

        path = resolve_model(name_or_path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_causal_lm(path, torch_dtype).to(device).eval()  # type: ignore[attr-defined]
        return cls(
            model,
            tokenizer,
            chat_format=chat_format,
            max_batch_size=max_batch_size,
            name=path.name,
            threaded=threaded,
        )

    # -- Engine API --------------------------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> tuple[list[int], tuple[str, ...]]:
        """Prompt token ids for a conversation, and the stop strings the format needs."""
        return self.renderer.prompt_ids(messages), self.renderer.stop

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Copy weights in; a no-op cost when the engine shares the trainer's model object."""
        params = dict(self.model.named_parameters())
        with self.torch.no_grad():
            for name, tensor in named_tensors:
                if name not in params:
                    raise EngineError(f"update_weights: the engine's model has no parameter {name!r}")
                params[name].copy_(tensor)

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._requests.put(_STOP)
            if self._thread is not None:
                self._thread.join(timeout=60)

    def drive(self, until: Future[Any]) -> None:
        """Generate on the calling thread until `until` is done (for `threaded=False` engines).

        Why: matrix products run single-threaded in threads other than the main one here
        (MKL under PyTorch's OpenMP), so generating from the main thread is ~2x faster on 2
        cores; the rollouts' event loop then runs on a side thread and waits on our futures.
        """
        if self._thread is not None:
            raise EngineError("drive() is for engines made with threaded=False")
        while not until.done():
            try:
                first = self._requests.get(timeout=0.01)
            except queue.Empty:
                continue
            if first is _STOP or not self._serve_batch(first):
                return

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
            if first is _STOP or not self._serve_batch(first):
                return

    def _serve_batch(self, first: _Request) -> bool:
        """Gather requests arriving within `batch_wait_s` and generate them; False once stopped."""
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
        # Seeds are per row (see _RowSampler), so requests differing only in seed share a batch.
        by_params: dict[SamplingParams, list[_Request]] = defaultdict(list)
        for request in batch:
            by_params[replace(request.params, seed=None)].append(request)
        for params, requests in by_params.items():
            live = [r for r in requests if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                seeds = [r.params.seed for r in live]
                results = self._generate_batch([r.prompt_ids for r in live], params, seeds)
                self.batches_run += 1
                self.requests_served += len(live)
            except Exception as exc:
                for request in live:
                    request.future.set_exception(EngineError(f"generation failed: {exc}"))
                continue
            for request, result in zip(live, results, strict=True):
                request.future.set_result(result)
        return not stop_after

    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int | None]
    ) -> list[Generation]:
        torch = self.torch
        from transformers import GenerationConfig, TemperatureLogitsWarper, TopPLogitsWarper

        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        device = self.model.device
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        sample = params.temperature > 0
        # Temperature and top-p run as our own processors, ahead of the logprob recorder, so the
        # recorded logprobs are those of the distribution actually sampled from (transformers
        # would apply its own warpers after any processor we pass).
        processors: list[Any] = []
        if sample and params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if sample and params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        recorder = _LogprobRecorder(params.top_logprobs) if params.logprobs or params.top_logprobs else None
        if recorder:
            processors.append(recorder)
        if sample:
            processors.append(_RowSampler(seeds, device))
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=False,  # sampling happens in _RowSampler; argmax then takes its token
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_id,
            eos_token_id=self.eos_token_ids,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(params.stop_strings) or None,
        )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                tokenizer=self.tokenizer if params.stop_strings else None,
                logits_processor=processors or None,
            )
        completions_BT = output[:, width:]
        logprobs_BT = recorder.finish(completions_BT).tolist() if recorder and params.logprobs else None
        top_BT = self._top_texts(recorder) if recorder and params.top_logprobs else None
        results = []
        for b, (prompt, row) in enumerate(zip(prompts, completions_BT.tolist(), strict=True)):
            ids, ended = _cut_at_eos(row, self.eos_token_ids)
            text, ids, stopped = cut_at_stop(self.tokenizer, ids, params.stop, params.stop_after)
            ended = ended or stopped
            logprobs = tuple(logprobs_BT[b][: len(ids)]) if logprobs_BT else ()
            top = tuple(top_BT[b][: len(ids)]) if top_BT else ()
            results.append(
                Generation(
                    text=text,
                    num_tokens=len(ids),
                    finish_reason="stop" if ended else "length",
                    token_ids=tuple(ids),
                    logprobs_T=logprobs,
                    prompt_token_ids=tuple(prompt),
                    top_logprobs_T=top,
                )
            )
        return results

    def _top_texts(self, recorder: _LogprobRecorder) -> list[list[dict[str, float]]]:
        """Per row and step, the recorded top-k as decoded text -> logprob (see Generation)."""
        topk_ids_BTK, topk_logprobs_BTK = recorder.top()
        ids_BTK, logprobs_BTK = topk_ids_BTK.tolist(), topk_logprobs_BTK.tolist()
        unique = sorted({i for row in ids_BTK for step in row for i in step})
        text_of = dict(zip(unique, self.tokenizer.batch_decode([[i] for i in unique]), strict=True))
        rows = []
        for ids_TK, logprobs_TK in zip(ids_BTK, logprobs_BTK, strict=True):
            steps = []
            for ids_K, logprobs_K in zip(ids_TK, logprobs_TK, strict=True):
                candidates = [(text_of[i], lp) for i, lp in zip(ids_K, logprobs_K, strict=True)]
                steps.append(top_logprobs_by_text(candidates, len(ids_K)))
            rows.append(steps)
        return rows


class _RowSampler:
    """Draws each row's next token with that row's own generator, then leaves only that token.

    A seeded request then samples the same tokens whichever batch it lands in (transformers
    would draw every row from one global generator). Inverse-CDF sampling is exact and needs
    one uniform number per row and step; rows without a seed use a generator seeded from the
    global torch RNG. Generation then runs in greedy mode, whose argmax picks this token.
    """

    def __init__(self, seeds: list[int | None], device: Any) -> None:
        import torch

        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, (1,)).item()))
            self.generators.append(generator)
        self.device = device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        uniform_B1 = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])[
            :, None
        ]
        cdf_BV = torch.softmax(scores.double(), dim=-1).cumsum_(dim=-1)
        uniform_B1 = uniform_B1.to(cdf_BV.device) * cdf_BV[:, -1:]  # the total is 1 up to rounding
        chosen_B = torch.searchsorted(cdf_BV, uniform_B1, right=True).clamp_(max=scores.shape[1] - 1)
        out = torch.full_like(scores, -math.inf)
        out.scatter_(1, chosen_B, 0.0)
        return out


class _LogprobRecorder:
    """A logits processor that keeps each sampled token's logprob under the final sampling scores,
    and with `top_k` > 0 the k most likely token ids and their logprobs at each step.

    Placed after transformers' own processors (temperature, top-p), it sees the scores
    sampling uses (for greedy, the model's own distribution); at step t+1 the token chosen at
    step t is the last input id, so one (B, V) row of the previous scores is all it holds.
    """

    def __init__(self, top_k: int = 0) -> None:
        self.top_k = top_k
        self.logprobs: list[Any] = []  # one (B,) tensor per generated token
        self.topk_ids: list[Any] = []  # one (B, K) tensor per generated token, when top_k > 0
        self.topk_logprobs: list[Any] = []
        self.previous_BV: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.previous_BV is not None:
            chosen_B = input_ids[:, -1]
            self.logprobs.append(self.previous_BV.gather(1, chosen_B[:, None])[:, 0])
        self.previous_BV = torch.log_softmax(scores.float(), dim=-1)
        if self.top_k:
            topk_logprobs_BK, topk_ids_BK = self.previous_BV.topk(min(self.top_k, scores.shape[1]), dim=-1)
            self.topk_logprobs.append(topk_logprobs_BK)
            self.topk_ids.append(topk_ids_BK)
        return scores

    def top(self) -> tuple[Any, Any]:
        """(B, T, K) ids and logprobs of the k most likely tokens at each generated step."""
        import torch

        return torch.stack(self.topk_ids, dim=1), torch.stack(self.topk_logprobs, dim=1)

    def finish(self, completions_BT: Any) -> Any:
        """(B, T) logprobs of the completion tokens (padding positions hold garbage)."""
        import torch

        if completions_BT.shape[1] > len(self.logprobs) and self.previous_BV is not None:
            last_B = completions_BT[:, len(self.logprobs)]
            self.logprobs.append(self.previous_BV.gather(1, last_B[:, None])[:, 0])
        if not self.logprobs:
            return torch.zeros(completions_BT.shape, dtype=torch.float32)
        return torch.stack(self.logprobs, dim=1)


def _cut_at_eos(row: list[int], eos_ids: list[int]) -> tuple[list[int], bool]:
    """Completion ids up to and including the first EOS.

    A row without EOS either ran to the token limit or was stopped by a stop string (and
    then padded; the caller cuts it at the stop). Pad ids are not stripped here: a model may
    sample its pad token like any other.
    """
    for i, token in enumerate(row):
        if token in eos_ids:
            return row[: i + 1], True
    return row, False
