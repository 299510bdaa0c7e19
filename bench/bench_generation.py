"""Generation throughput: the in-process vLLM engine vs transformers `generate`.

Gemma 3 270M (base model, plain transcript format), N Math-v0 prompts x G samples each,
temperature 1.0, up to 128 tokens: every sample is its own `Engine.generate_ids` coroutine,
all submitted at once as the trainer's rollouts do. Baseline: TransformersEngine with a
batch size that takes them all, generating on the main thread as the trainer drives it
(matrix products in side threads run single-threaded here). Ours: VLLMEngine. Each engine
is warmed up first and its start-up is reported apart from generation. Target: vLLM >= 3x
the baseline's tokens/s.

    python bench/bench_generation.py [--prompts 8] [--samples 8] [--max-tokens 128]

Needs vLLM, which lives in its own virtual environment (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trainer.engines import Engine, SamplingParams


def prompts(n: int) -> list[list[dict[str, str]]]:
    """The first n Math-v0 openings, with two worked examples (a base model needs them)."""
    from envs import make

    env = make("rewardgym/Math-v0", few_shot=2)
    return [env.opening(env.tasks[i]) for i in range(n)]


async def generate_all(engine: Engine, conversations: list[Any], samples: int, max_tokens: int) -> int:
    """Every sample as its own concurrent request; returns the tokens generated."""
    assert engine.renderer is not None
    prompt_ids = [engine.renderer.prompt_ids(messages) for messages in conversations]
    requests = [
        engine.generate_ids(ids, SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=p * samples + s))
        for p, ids in enumerate(prompt_ids)
        for s in range(samples)
    ]
    generations = await asyncio.gather(*requests)
    return sum(g.num_tokens for g in generations)


def run_requests(engine: Engine, conversations: list[Any], samples: int, max_tokens: int) -> int:
    """Run `generate_all`; a transformers engine generates on this (the main) thread meanwhile."""
    from trainer.engines.transformers_engine import TransformersEngine

    if not isinstance(engine, TransformersEngine):
        return asyncio.run(generate_all(engine, conversations, samples, max_tokens))
    with ThreadPoolExecutor(1) as requests_thread:
        done = requests_thread.submit(asyncio.run, generate_all(engine, conversations, samples, max_tokens))
        engine.drive(done)
        return done.result()


def measure(
    name: str, start_engine: Any, conversations: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    started = time.perf_counter()
    engine = start_engine()
    start_s = time.perf_counter() - started
    run_requests(engine, conversations[:2], 1, 8)  # warm-up
    started = time.perf_counter()
    tokens = run_requests(engine, conversations, args.samples, args.max_tokens)
    seconds = time.perf_counter() - started
    asyncio.run(engine.close())
    del engine
    return {"name": name, "start_s": start_s, "seconds": seconds, "tokens": tokens, "rate": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8, help="G samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--vllm-dtype", default="auto", help="vLLM weights dtype (transformers: float32)")
    parser.add_argument("--skip-transformers", action="store_true", help="only run vLLM")
    args = parser.parse_args()

    from trainer.models import resolve_model

    path = resolve_model(args.model)
    conversations = prompts(args.prompts)
    batch = args.prompts * args.samples
    results = []
    if not args.skip_transformers:
        from trainer.engines.transformers_engine import TransformersEngine

        def start_transformers() -> Engine:
            return TransformersEngine.from_pretrained(
                path, chat_format="plain", max_batch_size=batch, threaded=False
            )

        results.append(measure("transformers generate", start_transformers, conversations, args))
    from trainer.engines.vllm_engine import VLLMEngine

    def start_vllm() -> Engine:
        return VLLMEngine.from_pretrained(path, chat_format="plain", dtype=args.vllm_dtype)

    results.append(measure(f"vLLM in-process ({args.vllm_dtype})", start_vllm, conversations, args))

    print(
        f"\n{args.model}: {args.prompts} prompts x {args.samples} samples, max_tokens {args.max_tokens}, "
        f"temperature 1.0, cpu cores: {os.cpu_count()}"
    )
    print(f"{'engine':28s} {'start s':>8s} {'generate s':>11s} {'tokens':>7s} {'tokens/s':>9s}")
    for r in results:
        print(f"{r['name']:28s} {r['start_s']:8.1f} {r['seconds']:11.1f} {r['tokens']:7d} {r['rate']:9.1f}")
    if len(results) == 2:
        print(f"ratio vLLM/transformers: {results[1]['rate'] / results[0]['rate']:.2f}x   (target >= 3x)")


if __name__ == "__main__":  # vLLM may start worker processes, which re-import this module
    main()
