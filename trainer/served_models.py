"""The models a `rewardgym serve-model` server answers for: its base model, and LoRA adapters
loaded while it runs.

Mirrors vLLM's runtime LoRA loading (`POST /v1/load_lora_adapter`), so a trainer can push its
adapter after every step to either server. Each adapter is merged into its own copy of the
base weights and served by its own engine: requests for the adapter's name then cost what
base-model requests cost. Loading a name again (`load_inplace`) swaps the engine; requests
already queued on the old one finish there.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.engines.transformers_engine import TransformersEngine
from trainer.models import ADAPTER_CONFIG


class AdapterError(Exception):
    """A load or unload request that cannot be honoured; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Adapter:
    path: Path
    engine: TransformersEngine


class ServedModels:
    """The base engine under `base_name`, and one engine per loaded adapter.

    A request naming no model, the base, or any name that is not a loaded adapter goes to the
    base (as before adapters existed: clients may send any name)."""

    def __init__(self, base: TransformersEngine, base_name: str, *, enable_lora: bool = False) -> None:
        self.base = base
        self.base_name = base_name
        self.enable_lora = enable_lora
        self.adapters: dict[str, _Adapter] = {}
        self.loads = 0  # successful loads, in place or not
        self._lock = asyncio.Lock()

    def engine_for(self, model: str | None) -> TransformersEngine:
        adapter = self.adapters.get(model) if model else None
        return adapter.engine if adapter is not None else self.base

    def cards(self) -> list[dict[str, Any]]:
        """`/v1/models` entries, as vLLM writes them: adapters name their path and parent."""
        base = {
            "id": self.base_name,
            "object": "model",
            "owned_by": "rewardgym",
            "root": None,
            "parent": None,
        }
        return [base] + [
            {
                "id": name,
                "object": "model",
                "owned_by": "rewardgym",
                "root": str(a.path),
                "parent": self.base_name,
            }
            for name, a in self.adapters.items()
        ]

    async def load(self, name: str, path: str, *, inplace: bool) -> None:
        self._check_enabled()
        if name == self.base_name:
            raise AdapterError(400, f"the lora adapter {name!r} conflicts with the served base model")
        async with self._lock:
            if name in self.adapters and not inplace:
                raise AdapterError(
                    400, f"the lora adapter {name!r} is already loaded; set load_inplace to replace it"
                )
            directory = Path(path)
            engine = await asyncio.to_thread(self._engine_with, directory, name)
            old = self.adapters.get(name)
            self.adapters[name] = _Adapter(directory, engine)
            self.loads += 1
        if old is not None:
            await asyncio.to_thread(old.engine.shutdown)  # finishes what was queued on it

    async def unload(self, name: str) -> None:
        self._check_enabled()
        async with self._lock:
            adapter = self.adapters.pop(name, None)
        if adapter is None:
            raise AdapterError(404, f"the lora adapter {name!r} cannot be found")
        await asyncio.to_thread(adapter.engine.shutdown)

    def close(self) -> None:
        for adapter in self.adapters.values():
            adapter.engine.shutdown()
        self.base.shutdown()

    def _check_enabled(self) -> None:
        if not self.enable_lora:
            raise AdapterError(
                404, "runtime LoRA loading is off: start `rewardgym serve-model --enable-lora`"
            )

    def _engine_with(self, directory: Path, name: str) -> TransformersEngine:
        """An engine on a copy of the base model with the peft adapter in `directory` merged in."""
        if not directory.is_absolute():
            raise AdapterError(
                400, f"lora_path must be absolute (the server's working directory is not yours): {directory}"
            )
        if not directory.is_dir():
            raise AdapterError(404, f"no LoRA adapter at {directory}: not a directory")
        config_file = directory / ADAPTER_CONFIG
        try:
            peft_type = json.loads(config_file.read_text()).get("peft_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise AdapterError(400, f"{directory} is not a peft adapter ({ADAPTER_CONFIG}: {exc})") from None
        if peft_type != "LORA":
            raise AdapterError(400, f"{directory} holds a {peft_type} adapter, not LoRA")
        from peft import PeftModel

        model = copy.deepcopy(self.base.model)
        try:
            merged = PeftModel.from_pretrained(model, directory).merge_and_unload()
        except Exception as exc:  # peft's errors for an adapter made for another model vary
            raise AdapterError(
                400, f"the adapter at {directory} does not fit the served model: {type(exc).__name__}: {exc}"
            ) from None
        return TransformersEngine(
            merged.eval(),
            self.base.tokenizer,
            chat_format=self.base.chat_format,
            max_batch_size=self.base.max_batch_size,
            name=name,
        )
