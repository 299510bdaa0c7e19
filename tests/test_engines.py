"""The transformers engine on a real tiny model loaded with from_pretrained."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer import EngineError, SamplingParams, TransformersEngine
from trainer.engines import render_plain

from conftest import assert_same_top, expected_top

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    e = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu", max_batch_size=8)
    yield e
    e.shutdown()


def test_plain_format_for_a_model_without_chat_template(engine: TransformersEngine) -> None:
    assert engine.chat_format == "plain"
    text = render_plain(
        [*MESSAGES, {"role": "assistant", "content": "5"}, {"role": "user", "content": "Sure?"}]
    )
    assert text == "Be brief.\n\nUser: What is 2 + 3?\nAssistant: 5\n\nUser: Sure?\nAssistant:"
    ids, stop = engine.render(MESSAGES)
    assert engine.tokenizer.decode(ids, skip_special_tokens=True) == render_plain(MESSAGES)
    assert stop == ("\nUser:",)


def test_chat_template_is_used_when_the_tokenizer_has_one(tiny_chat_model_dir: Path) -> None:
    engine = TransformersEngine.from_pretrained(tiny_chat_model_dir, device="cpu")
    try:
        assert engine.chat_format == "template"
        ids, stop = engine.render(MESSAGES)
        assert engine.tokenizer.decode(ids) == "<|system|>Be brief.\n<|user|>What is 2 + 3?\n<|assistant|>"
        assert stop == ()
        generation = asyncio.run(engine.generate(MESSAGES, SamplingParams(max_tokens=4, temperature=0)))
        assert generation.prompt_token_ids == tuple(ids)
    finally:
        engine.shutdown()


def test_greedy_generation_is_deterministic_and_respects_max_tokens(engine: TransformersEngine) -> None:
    params = SamplingParams(max_tokens=12, temperature=0)
    first = asyncio.run(engine.generate(MESSAGES, params))
    second = asyncio.run(engine.generate(MESSAGES, params))
    assert first == second
    assert 1 <= first.num_tokens == len(first.token_ids) <= 12
    assert first.finish_reason in ("stop", "length")
    if first.finish_reason == "length":
        assert first.num_tokens == 12
    assert first.prompt_token_ids == tuple(engine.render(MESSAGES)[0])


def test_stop_strings_cut_the_text_before_the_stop(engine: TransformersEngine) -> None:
    prompt = "The quick brown fox"
    free = asyncio.run(engine.complete(prompt, SamplingParams(max_tokens=24, temperature=0)))
    assert len(free.text) >= 6, "the tiny model should produce some text"
    stop = free.text[4:6]
    cut = asyncio.run(engine.complete(prompt, SamplingParams(max_tokens=24, temperature=0, stop=(stop,))))
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.num_tokens <= free.num_tokens


def test_concurrent_requests_are_batched(engine: TransformersEngine) -> None:
    params = SamplingParams(max_tokens=6, temperature=0)
    before_batches, before_requests = engine.batches_run, engine.requests_served

    async def many() -> list:
        return list(await asyncio.gather(*(engine.generate(MESSAGES, params) for _ in range(8))))

    results = asyncio.run(many())
    assert len({r.text for r in results}) == 1  # same prompt, same greedy answer, in one padded batch
    assert engine.requests_served - before_requests == 8
    assert engine.batches_run - before_batches < 8


def test_sampling_logprobs_match_a_separate_forward_pass(engine: TransformersEngine) -> None:
    import torch

    params = SamplingParams(max_tokens=6, temperature=0.7, seed=123, logprobs=True)
    generation = asyncio.run(engine.generate(MESSAGES, params))
    assert len(generation.logprobs_T) == len(generation.token_ids) > 0
    ids = list(generation.prompt_token_ids) + list(generation.token_ids)
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    expected = [
        torch.log_softmax(logits[len(generation.prompt_token_ids) - 1 + t] / 0.7, dim=-1)[token].item()
        for t, token in enumerate(generation.token_ids)
    ]
    assert generation.logprobs_T == pytest.approx(expected, abs=1e-4)
    again = asyncio.run(engine.generate(MESSAGES, params))
    assert again.token_ids == generation.token_ids  # the seed makes sampling repeatable


def test_sampling_uses_the_whole_distribution(engine: TransformersEngine) -> None:
    """No hidden top-k: transformers fills an unset top_k with 50, which would cap this at 50.

    The random tiny model spreads its next-token probability over ~384 tokens, so 200 draws
    of one token give far more than 50 distinct tokens unless something truncates them.
    """
    params = [SamplingParams(max_tokens=1, temperature=1.0, seed=seed) for seed in range(200)]

    async def draws() -> list:
        return list(await asyncio.gather(*(engine.complete("The", p) for p in params)))

    first_tokens = {g.token_ids[0] for g in asyncio.run(draws())}
    assert len(first_tokens) > 60


def test_a_closed_engine_refuses_work(tiny_model_dir: Path) -> None:
    engine = TransformersEngine.from_pretrained(tiny_model_dir, device="cpu")
    engine.shutdown()
    with pytest.raises(EngineError, match="is closed"):
        asyncio.run(engine.generate(MESSAGES, SamplingParams(max_tokens=2)))


def test_sampling_params_are_validated() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    for k in (-1, 21):
        with pytest.raises(ValueError, match=r"top_logprobs must be in \[0, 20\]"):
            SamplingParams(top_logprobs=k)


def test_batched_sampling_logprobs_match_each_row(engine: TransformersEngine) -> None:
    """Rows of one padded batch, of different prompt lengths, each get their own logprobs."""
    import torch

    prompts = [[{"role": "user", "content": "hi " * n}] for n in (1, 5, 9, 2)]
    params = SamplingParams(max_tokens=5, temperature=1.0, seed=7, logprobs=True)

    async def batch() -> list:
        return list(await asyncio.gather(*(engine.generate(p, params) for p in prompts)))

    for generation in asyncio.run(batch()):
        ids = list(generation.prompt_token_ids) + list(generation.token_ids)
        with torch.no_grad():
            logits = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
        start = len(generation.prompt_token_ids) - 1
        expected = [
            torch.log_softmax(logits[start + t], dim=-1)[token].item()
            for t, token in enumerate(generation.token_ids)
        ]
        assert generation.logprobs_T == pytest.approx(expected, abs=1e-4)


def test_a_stop_string_cuts_the_token_ids_too(engine: TransformersEngine) -> None:
    prompt_ids = engine.tokenizer("The quick brown fox").input_ids
    free = asyncio.run(engine.generate_ids(prompt_ids, SamplingParams(max_tokens=24, temperature=0)))
    assert len(free.text) >= 6, "the tiny model should produce some text"
    stop = free.text[4:6]
    params = SamplingParams(max_tokens=24, temperature=0, stop=(stop,), logprobs=True)
    cut = asyncio.run(engine.generate_ids(prompt_ids, params))
    assert cut.finish_reason == "stop"
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    decoded = engine.tokenizer.decode(list(cut.token_ids), skip_special_tokens=True)
    assert cut.text.startswith(decoded) and stop not in decoded
    assert len(cut.logprobs_T) == len(cut.token_ids)


def test_plain_continuation_rebuilds_the_plain_transcript(engine: TransformersEngine) -> None:
    renderer = engine.renderer
    reply = {"role": "assistant", "content": "It is 5."}
    feedback = [{"role": "user", "content": "Are you sure?"}]
    reply_ids = engine.tokenizer(" It is 5.", add_special_tokens=False).input_ids
    sequence = renderer.prompt_ids(MESSAGES) + reply_ids
    sequence += renderer.continuation_ids([*MESSAGES, reply], feedback, reply_ids)
    text = engine.tokenizer.decode(sequence, skip_special_tokens=True)
    assert text == render_plain([*MESSAGES, reply, *feedback])


def test_template_continuation_closes_the_turn_once(tiny_chat_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from trainer.engines import ChatRenderer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    tokenizer.chat_template = (  # like most chat models: the end-of-sequence token closes a reply
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
        "{{ '</s>' if m['role'] == 'assistant' else '' }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    renderer = ChatRenderer(tokenizer, "template")
    assert renderer.turn_end == "</s>\n"
    reply = {"role": "assistant", "content": "5"}
    feedback = [{"role": "user", "content": "Sure?"}]
    expected = tokenizer.apply_chat_template(
        [*MESSAGES, reply, *feedback], add_generation_prompt=True, tokenize=False
    )
    for reply_ids in (  # ended by the end-of-sequence token, or cut by the length limit
        [*tokenizer("5", add_special_tokens=False).input_ids, tokenizer.eos_token_id],
        tokenizer("5", add_special_tokens=False).input_ids,
    ):
        sequence = renderer.prompt_ids(MESSAGES) + reply_ids
        sequence += renderer.continuation_ids([*MESSAGES, reply], feedback, reply_ids)
        assert tokenizer.decode(sequence) == expected


def test_a_seeded_request_samples_the_same_alone_or_in_any_batch(engine: TransformersEngine) -> None:
    """Rollouts are reproducible (exact resume) although batches form by arrival time."""
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=42)
    alone = asyncio.run(engine.generate(MESSAGES, params))
    others = [SamplingParams(max_tokens=8, temperature=1.0, seed=s) for s in range(5)]

    async def crowded() -> list:
        calls = [engine.generate([{"role": "user", "content": "x " * s}], p) for s, p in enumerate(others)]
        return list(await asyncio.gather(*calls, engine.generate(MESSAGES, params)))

    results = asyncio.run(crowded())
    assert results[-1].token_ids == alone.token_ids
    assert len({r.token_ids for r in results[:-1]}) > 1  # different seeds, different samples


def test_greedy_top_logprobs_are_the_models_own_distribution(engine: TransformersEngine) -> None:
    """At temperature 0 the sampled token is the argmax: the first key, with the largest logprob."""
    import torch

    params = SamplingParams(max_tokens=8, temperature=0, top_logprobs=5)
    generation = asyncio.run(engine.complete("The quick brown fox", params))
    assert generation.logprobs_T == ()  # not asked for
    assert len(generation.top_logprobs_T) == len(generation.token_ids) > 0
    ids = list(generation.prompt_token_ids) + list(generation.token_ids)
    with torch.no_grad():
        logits_TV = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    start = len(generation.prompt_token_ids) - 1
    for t, (token, top) in enumerate(zip(generation.token_ids, generation.top_logprobs_T, strict=True)):
        values = list(top.values())
        assert next(iter(top)) == engine.tokenizer.decode([token])
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        expected = expected_top(engine.tokenizer, torch.log_softmax(logits_TV[start + t], dim=-1), 5)
        assert list(top) == list(expected)  # k entries, fewer only where texts merge
        assert values == pytest.approx(list(expected.values()), abs=1e-4)


def test_top_logprobs_describe_the_distribution_sampled_from_in_each_batch_row(
    engine: TransformersEngine,
) -> None:
    """Temperature and top-p shape the reported top tokens, per row of one padded batch; a request
    that did not ask for them, batched alongside, gets none."""
    import torch
    from transformers import TopPLogitsWarper

    prompts = ["The quick", "0 1 2 3 4 5 6 7", "That is not right. Check"]
    params = SamplingParams(max_tokens=6, temperature=0.7, top_p=0.9, seed=5, logprobs=True, top_logprobs=20)
    plain = SamplingParams(max_tokens=6, temperature=0.7, top_p=0.9, seed=5, logprobs=True)

    async def batch() -> list:
        return list(
            await asyncio.gather(
                *(engine.complete(p, params) for p in prompts), engine.complete(prompts[0], plain)
            )
        )

    *generations, without = asyncio.run(batch())
    assert without.top_logprobs_T == () and len(without.logprobs_T) == without.num_tokens
    for generation in generations:
        assert len(generation.top_logprobs_T) == len(generation.token_ids)
        ids = list(generation.prompt_token_ids) + list(generation.token_ids)
        start = len(generation.prompt_token_ids) - 1
        with torch.no_grad():
            scores_TV = engine.model(input_ids=torch.tensor([ids])).logits[0, start:-1].float() / 0.7
        logprobs_TV = torch.log_softmax(TopPLogitsWarper(0.9)(None, scores_TV), dim=-1)
        for t, (token, top) in enumerate(zip(generation.token_ids, generation.top_logprobs_T, strict=True)):
            assert_same_top(top, expected_top(engine.tokenizer, logprobs_TV[t], 20))
            assert 0 < len(top) <= 20 and all(v > -math.inf for v in top.values())
            assert generation.logprobs_T[t] <= max(top.values()) + 1e-6
            text = engine.tokenizer.decode([token])
            if text in top:
                assert top[text] >= generation.logprobs_T[t] - 1e-4
