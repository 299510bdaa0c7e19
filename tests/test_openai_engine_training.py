"""Training through a remote OpenAI-compatible server: token ids in and out, LoRA pushed by path.

A real `rewardgym serve-model --enable-lora` on loopback serves the tiny model; the engine
sends token-id prompts to its /v1/completions and loads peft adapters through
/v1/load_lora_adapter, as it would with `vllm serve --enable-lora` (tests/test_vllm_engine.py
runs the same against vLLM where it is installed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.config import TrainConfig, TrainConfigError
from trainer.engines import EngineError, Generation, OpenAIEngine, SamplingParams, TransformersEngine
from trainer.grpo import train
from trainer.metrics_log import read_metrics

import train_envs  # noqa: F401 - registers tests/LetterA-v0
from conftest import ScriptedHTTPServer, free_port, served, tiny_lora_config

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def lora_server(tiny_model_dir: Path) -> Iterator[str]:
    """`rewardgym serve-model --enable-lora` with the tiny model; yields its /v1 base URL."""
    argv = ["serve-model", "--model", str(tiny_model_dir), "--served-name", "tiny", "--enable-lora"]
    with served(argv, free_port()) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def save_adapter(model_dir: Path, directory: Path, seed: int) -> Path:
    """A peft LoRA adapter on the tiny model with random (nonzero) B matrices: it changes outputs."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(directory)
    return directory.resolve()


def run(engine: Any, prompt_ids: list[int], params: SamplingParams) -> Generation:
    async def once() -> Generation:
        try:
            return await engine.generate_ids(prompt_ids, params)
        finally:
            if isinstance(engine, OpenAIEngine):
                await engine.close()

    return asyncio.run(once())


def remote(url: str, tokenizer: Any, model: str = "tiny") -> OpenAIEngine:
    return OpenAIEngine(url, model, api="completions", tokenizer=tokenizer, max_attempts=1)


def test_generate_ids_returns_the_servers_tokens_with_the_logprobs_of_a_local_forward_pass(
    lora_server: str, tokenizer: Any, hf_model: Any
) -> None:
    engine = remote(lora_server, tokenizer)
    prompt = engine.renderer.prompt_ids(MESSAGES)  # type: ignore[union-attr]
    params = SamplingParams(max_tokens=12, temperature=0.7, seed=5, logprobs=True)
    generation = run(engine, prompt, params)
    assert generation.prompt_token_ids == tuple(prompt)
    assert len(generation.token_ids) == len(generation.logprobs_T) == generation.num_tokens > 0
    assert generation.text == tokenizer.decode(list(generation.token_ids), skip_special_tokens=True)
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + list(generation.token_ids)])).logits[0].float()
    steps = logits[len(prompt) - 1 : -1] / params.temperature  # the distribution each token was drawn from
    expected = torch.log_softmax(steps, dim=-1).gather(1, torch.tensor(generation.token_ids)[:, None])[:, 0]
    assert list(generation.logprobs_T) == pytest.approx(expected.tolist(), abs=1e-4)
    assert engine.requests == 1


def test_remote_and_local_engines_sample_the_same_ids_and_cut_stops_alike(
    lora_server: str, tokenizer: Any, tiny_model_dir: Path
) -> None:
    """Seeded sampling (the server samples each request with its own seed) and a stop string
    found in the free run: ids, text and finish reason equal the in-process engine's."""
    local = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu")
    try:
        prompt = local.renderer.prompt_ids(MESSAGES)
        free_params = SamplingParams(max_tokens=16, temperature=1.0, seed=11, logprobs=True)
        free = run(local, prompt, free_params)
        assert run(remote(lora_server, tokenizer), prompt, free_params).token_ids == free.token_ids
        text = free.text
        start = len(tokenizer.decode([free.token_ids[0]])) + 1  # a stop that leaves some tokens
        stop = next(text[i : i + 2] for i in range(start, len(text) - 1) if text.index(text[i : i + 2]) == i)
        cut_params = SamplingParams(max_tokens=16, temperature=1.0, seed=11, logprobs=True, stop=(stop,))
        want = run(local, prompt, cut_params)
        got = run(remote(lora_server, tokenizer), prompt, cut_params)
    finally:
        local.shutdown()
    assert (got.token_ids, got.text, got.finish_reason) == (want.token_ids, want.text, "stop")
    assert got.text == text[: text.index(stop)] and len(got.token_ids) < len(free.token_ids)
    assert list(got.logprobs_T) == pytest.approx(list(want.logprobs_T), abs=1e-4)


def test_a_loaded_adapter_generates_as_the_merged_model_and_reloads_in_place(
    lora_server: str, tokenizer: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    engine = remote(lora_server, tokenizer)
    prompt = engine.renderer.prompt_ids(MESSAGES)  # type: ignore[union-attr]
    greedy = SamplingParams(max_tokens=12, temperature=0)
    base = run(engine, prompt, greedy).token_ids
    outputs = []
    for version, seed in ((1, 1), (2, 2)):
        path = save_adapter(tiny_model_dir, tmp_path / f"v{version}", seed)
        engine = remote(lora_server, tokenizer)
        engine.load_lora_adapter("adapted", path)  # the second load replaces the first (in place)
        assert (engine.model, engine.adapters_loaded) == ("adapted", 1)
        merged = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), path
        ).merge_and_unload()
        local = TransformersEngine(merged.eval(), tokenizer)
        try:
            want = run(local, prompt, greedy).token_ids
        finally:
            local.shutdown()
        got = run(engine, prompt, greedy).token_ids
        assert got == want
        outputs.append(got)
        cards = {c["id"]: c for c in httpx.get(f"{lora_server}/models").json()["data"]}
        assert (cards["adapted"]["root"], cards["adapted"]["parent"]) == (str(path), "tiny")
    assert len({base, *outputs}) == 3, "each adapter changes the greedy reply"
    assert run(remote(lora_server, tokenizer), prompt, greedy).token_ids == base  # the base is untouched
    again = httpx.post(
        f"{lora_server}/load_lora_adapter", json={"lora_name": "adapted", "lora_path": str(path)}, timeout=60
    )
    assert again.status_code == 400 and "set load_inplace" in again.json()["error"]["message"]
    gone = httpx.post(f"{lora_server}/unload_lora_adapter", json={"lora_name": "adapted"}, timeout=60)
    assert gone.status_code == 200
    assert "adapted" not in {c["id"] for c in httpx.get(f"{lora_server}/models").json()["data"]}


@pytest.mark.parametrize(
    ("make_path", "status", "problem"),
    [
        (lambda tmp: tmp / "missing", 404, "no LoRA adapter at"),
        (lambda tmp: Path("relative/adapter"), 400, "lora_path must be absolute"),
        (lambda tmp: tmp, 400, "is not a peft adapter"),
    ],
    ids=["missing", "relative", "not-an-adapter"],
)
def test_a_bad_adapter_path_is_refused_with_its_reason(
    lora_server: str, tokenizer: Any, tmp_path: Path, make_path: Any, status: int, problem: str
) -> None:
    engine = remote(lora_server, tokenizer)
    with pytest.raises(EngineError, match=rf"\({status}\): .*{problem}"):
        engine.load_lora_adapter("bad", make_path(tmp_path))
    assert (engine.model, engine.adapters_loaded) == ("tiny", 0)


def test_an_adapter_made_for_another_model_is_refused(
    lora_server: str, tokenizer: Any, tmp_path: Path
) -> None:
    from conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "wider", hidden=128)
    path = save_adapter(other, tmp_path / "adapter", seed=0)
    with pytest.raises(EngineError, match=r"\(400\): .*does not fit the served model"):
        remote(lora_server, tokenizer).load_lora_adapter("wider", path)
    assert "wider" not in {c["id"] for c in httpx.get(f"{lora_server}/models").json()["data"]}


def test_a_server_without_runtime_lora_says_how_to_enable_it(
    model_server: str, tokenizer: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = save_adapter(tiny_model_dir, tmp_path / "a", seed=0)
    with pytest.raises(
        EngineError, match=r"\(404\).*runtime LoRA loading is off.*VLLM_ALLOW_RUNTIME_LORA_UPDATING"
    ):
        remote(model_server, tokenizer).load_lora_adapter("a", path)


def test_token_id_requests_are_validated(lora_server: str, tokenizer: Any) -> None:
    body: dict[str, Any] = {"prompt": [1, 2, 10**6], "max_tokens": 2, "logprobs": 0}
    outside = httpx.post(f"{lora_server}/completions", json=body, timeout=30)
    assert outside.status_code == 400 and "token id 1000000 is outside the vocabulary" in outside.text
    negative = httpx.post(f"{lora_server}/completions", json={**body, "prompt": [1, -2]}, timeout=30)
    assert negative.status_code == 400 and "greater than or equal to 0" in negative.text
    tops = {"prompt": [1, 2], "max_tokens": 2, "logprobs": 3, "return_tokens_as_token_ids": True}
    refused = httpx.post(f"{lora_server}/completions", json=tops, timeout=30)
    assert refused.status_code == 400 and "return_tokens_as_token_ids: Value error" in refused.text
    ids = {"prompt": [1, 2], "max_tokens": 3, "temperature": 0, "logprobs": 0, "return_token_ids": True}
    choice = httpx.post(
        f"{lora_server}/completions", json={**ids, "return_tokens_as_token_ids": True}
    ).json()["choices"][0]
    assert choice["prompt_token_ids"] == [1, 2]
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in choice["token_ids"]]


def test_a_server_that_ignores_return_tokens_as_token_ids_is_a_clear_error(
    scripted: ScriptedHTTPServer, tokenizer: Any
) -> None:
    """A scripted server (no model): a completions API without vLLM's extension writes tokens
    as text, which no real server here does."""
    choice = {"text": " 5", "finish_reason": "stop", "logprobs": {"tokens": [" 5"], "token_logprobs": [-0.5]}}
    scripted.reply(200, {"choices": [choice], "usage": {"completion_tokens": 1}})
    engine = remote(scripted.url + "/v1", tokenizer)
    with pytest.raises(EngineError, match="answered with token ' 5', not 'token_id:<id>'"):
        run(engine, [1, 5, 6], SamplingParams(max_tokens=2, stop=("\n",)))
    sent = scripted.bodies[0]
    assert (sent["prompt"], sent["logprobs"], sent["return_tokens_as_token_ids"]) == ([1, 5, 6], 0, True)
    assert (sent["top_k"], sent["min_p"], sent["repetition_penalty"]) == (-1, 0.0, 1.0)
    assert sent["stop"] == ["\n", "\nUser:"]  # the caller's stops, then the plain format's


def test_engine_without_a_tokenizer_or_taking_tensors_refuses_clearly(lora_server: str) -> None:
    with pytest.raises(EngineError, match="needs the served model's tokenizer"):
        run(OpenAIEngine(lora_server, "tiny"), [1, 2], SamplingParams(max_tokens=2))
    with pytest.raises(EngineError, match="takes LoRA adapters, not weights"):
        OpenAIEngine(lora_server, "tiny").update_weights([])


def tiny_remote_config(model_dir: Path, run_dir: Path, url: str, *overrides: str) -> TrainConfig:
    engine = ("engine.kind=openai", f"engine.base_url={url}", "engine.served_model=tiny")
    return tiny_lora_config(model_dir, run_dir, *engine, *overrides)


def test_lora_training_pushes_the_adapter_to_the_server_every_step(
    lora_server: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_remote_config(tiny_model_dir, run_dir, lora_server), progress=False)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["time/weight_sync"] > 0 for r in rows)
    # engine and trainer agree on the weights that generated each step: importance weights ~1
    assert all(abs(r["is_weight/mean"] - 1.0) < 1e-3 for r in rows), [r["is_weight/mean"] for r in rows]
    versions = run_dir / "engine_adapters"
    assert sorted(p.name for p in versions.iterdir()) == ["v000001", "v000002"]  # one per step
    lora_b = [
        max(
            t.abs().max().item()
            for k, t in load_file(versions / v / "adapter_model.safetensors").items()
            if "lora_B" in k
        )
        for v in ("v000001", "v000002")
    ]
    assert lora_b[0] == 0 and lora_b[1] > 0  # the initial adapter, then the one trained by step 1
    cards = {c["id"]: c for c in httpx.get(f"{lora_server}/models").json()["data"]}
    assert cards["rewardgym-policy"]["root"] == str((versions / "v000002").resolve())
    config = json.loads((versions / "v000002" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4


def test_remote_training_refuses_full_fine_tuning_and_a_server_without_the_model(
    lora_server: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainConfigError, match="only LoRA adapters can be pushed to a remote server"):
        tiny_remote_config(tiny_model_dir, tmp_path, lora_server, "lora.enabled=false")
    with pytest.raises(TrainConfigError, match="needs base_url and served_model"):
        TrainConfig.load(None, ["engine.kind=openai", "engine.served_model=tiny"])
    config = tiny_remote_config(tiny_model_dir, tmp_path / "run", lora_server, "engine.served_model=other")
    with pytest.raises(TrainConfigError, match=r"serves \['tiny'.*not 'other'"):
        train(config, progress=False)
