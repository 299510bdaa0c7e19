"""A real tiny model calling a real tool: through the evaluator, through token-level
rollouts (where the tool result sits in the sequence, masked out of the loss), and through
a short training run that reports tool metrics.

The random tiny model never calls a tool by chance, so the module first teaches it one
episode by supervised steps (prompt -> `<python>print(6*7)</python>`, tool result ->
`\\boxed{42}`), saves it with `save_pretrained` and loads it back the way users load models.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from envs import Suite, SuiteMember, Task, TaskList, ToolEnv  # noqa: E402
from sandbox import Sandbox, make_sandbox  # noqa: E402
from trainer import TrainConfig, train  # noqa: E402
from trainer.engines import OpenAIEngine, SamplingParams, TransformersEngine  # noqa: E402
from trainer.engines.base import Generation  # noqa: E402
from trainer.engines.chat_format import ChatRenderer  # noqa: E402
from trainer.engines.stops import cut_at_stop  # noqa: E402
from trainer.evaluate import EvalTarget, evaluate  # noqa: E402
from trainer.metrics_log import read_metrics  # noqa: E402
from trainer.rollout import TokenLog, play_episode  # noqa: E402
from trainer.rollouts import RolloutCollector  # noqa: E402

from conftest import CHAT_TEMPLATE, ScriptedHTTPServer, build_tiny_model  # noqa: E402

SYSTEM = "Compute with <python>code</python>, then answer as \\boxed{answer}."
TASK = Task("six-sevens", "What is 6 * 7?", "42")
CALL = " <python>print(6*7)</python>"
ANSWER = " \\boxed{42}"
GREEDY = SamplingParams(max_tokens=48, temperature=0.0, logprobs=True)


def tool_env(sandbox: Sandbox | None = None, tasks: TaskList | str | None = None) -> ToolEnv:
    return ToolEnv(
        tasks or TaskList([TASK], name="six"),
        tools=["python"],
        prompt_style="tags",
        system_prompt=SYSTEM,
        sandbox=sandbox,
    )


def teach_tool_use(model_dir: Path, out_dir: Path) -> Path:
    """Supervised steps until greedy decoding reproduces the episode's two replies."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    renderer = ChatRenderer(tokenizer, "plain")
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    opening = tool_env().opening(TASK)
    call_ids = encode(CALL)
    reply = {"role": "assistant", "content": CALL.strip()}
    result = [{"role": "tool", "tool_call_id": "call_1_0", "name": "python", "content": "42\n"}]
    first_turn = renderer.prompt_ids(opening)
    examples = [  # (context, target): turn 1, and turn 2 as token continuation and as re-rendered text
        (first_turn, call_ids),
        (
            first_turn + call_ids + renderer.continuation_ids([*opening, reply], result, call_ids),
            encode(ANSWER),
        ),
        (renderer.prompt_ids([*opening, reply, *result]), encode(ANSWER)),
    ]
    examples = [
        (context, target + ([tokenizer.eos_token_id] if i else []))
        for i, (context, target) in enumerate(examples)
    ]
    return fit(model_dir, out_dir, examples)


def fit(model_dir: Path, out_dir: Path, examples: list[tuple[list[int], list[int]]]) -> Path:
    """Train the model at `model_dir` until greedy decoding gives each target after its
    context; save it (and its tokenizer) to `out_dir`."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(400):
        learned = True
        for context, target in examples:
            ids = torch.tensor([context + target])
            labels = ids.clone()
            labels[0, : len(context)] = -100
            out = model(input_ids=ids, labels=labels)
            out.loss.backward()
            predicted = out.logits[0, len(context) - 1 : -1].argmax(-1).tolist()
            learned = learned and predicted == target
        if learned:
            break
        optimizer.step()
        optimizer.zero_grad()
    assert learned, "the tiny model did not learn its examples"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tool_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=1)
    return teach_tool_use(base, tmp_path_factory.mktemp("tool-model"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with make_sandbox("bubblewrap") as box:
        yield box


@pytest.fixture(scope="module")
def engine(tool_model_dir: Path) -> Iterator[TransformersEngine]:
    e = TransformersEngine.from_pretrained(tool_model_dir, device="cpu", max_batch_size=4)
    yield e
    e.shutdown()


def test_a_kept_stop_string_ends_the_reply_right_after_it(engine: TransformersEngine) -> None:
    tokenizer = engine.tokenizer
    ids = tokenizer(" <python>x</python> and more </python>", add_special_tokens=False).input_ids
    text, kept, hit = cut_at_stop(tokenizer, ids, stop=("\nUser:",), stop_after=("</python>",))
    assert hit and text == " <python>x</python>" and kept == ids[: len(kept)]
    text, _, hit = cut_at_stop(tokenizer, ids, stop=(" and",), stop_after=("more",))
    assert hit and text == " <python>x</python>"  # the earliest stop wins, whichever kind


def test_the_evaluator_runs_tool_episodes_with_a_real_model(
    engine: TransformersEngine, sandbox: Sandbox, tmp_path: Path
) -> None:
    target = EvalTarget("tool", lambda: tool_env(sandbox))
    report = asyncio.run(
        evaluate(
            [target],
            engine,
            num_tasks=1,
            samples_per_task=2,
            params=GREEDY,
            out_dir=tmp_path,
            show_progress=False,
        )
    )
    (summary,) = report.summaries
    assert summary.mean_reward == 1.0 and summary.mean_turns == 2.0
    assert summary.metrics["tool_calls"] == 1.0 and summary.metrics["tool_errors"] == 0.0
    record = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert record["messages"][2]["content"] == "<python>print(6*7)</python>"  # stopped at the tag
    assert record["messages"][3]["content"] == "42\n" and record["metrics"]["tool_calls"] == 1


def test_token_log_marks_where_the_tool_result_sits(engine: TransformersEngine, sandbox: Sandbox) -> None:
    log = TokenLog(engine.renderer)  # type: ignore[arg-type]
    episode = asyncio.run(
        play_episode(tool_env(sandbox), engine, GREEDY, task=TASK, env_name="tool", tokens=log)
    )
    assert episode.reward == 1.0 and episode.turns == 2
    assert len(log.env_spans) == 1 and len(log.tool_spans) == 1
    (begin, end), (first, second) = log.env_spans[0], episode.generations
    result_begin, result_end = log.tool_spans[0]
    p = log.prompt_length
    assert engine.tokenizer.decode(list(first.token_ids)).endswith("</python>")
    assert log.token_ids[p:begin] == list(first.token_ids)
    assert "Tool: 42\nAssistant:" in engine.tokenizer.decode(log.token_ids[begin:end])
    assert begin < result_begin < result_end < end  # the result's own tokens, inside the insertion
    assert engine.tokenizer.decode(log.token_ids[result_begin:result_end]).strip() == "42"
    assert log.token_ids[end:] == list(second.token_ids)  # the model resumes right at `end`
    assert not any(log.loss_mask[:p]) and not any(log.loss_mask[begin:end])
    assert all(log.loss_mask[p:begin]) and all(log.loss_mask[end:])


def test_rollouts_and_training_carry_tool_spans_and_metrics(tool_model_dir: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "six.jsonl"
    tasks.write_text(json.dumps({"id": TASK.id, "prompt": TASK.prompt, "answer": TASK.answer}) + "\n")
    env_kwargs = {"tasks": str(tasks), "tools": ["python"], "prompt_style": "tags", "system_prompt": SYSTEM}
    engine = TransformersEngine.from_pretrained(tool_model_dir, device="cpu")
    suite = Suite("tools", (SuiteMember("rewardgym/ToolMath-v0", kwargs=env_kwargs),))
    collector = RolloutCollector(suite, engine, GREEDY, group_size=2, groups_per_step=1, seed=0)
    try:
        rollouts = asyncio.run(collector.collect(step=0))
    finally:
        collector.close()
        engine.shutdown()
    (group,) = rollouts.groups
    for trajectory in group.trajectories:
        ((begin, end),), ((result_begin, result_end),) = trajectory.env_spans, trajectory.tool_spans
        assert begin < result_begin < result_end < end
        assert trajectory.episode.metrics["tool_calls"] == 1

    config = TrainConfig.load(
        None,
        [
            f"model.name={tool_model_dir}",
            f"run_dir={tmp_path / 'run'}",
            "rollout.env=rewardgym/ToolMath-v0",
            f"rollout.env_kwargs={json.dumps(env_kwargs)}",
            "rollout.group_size=2",
            "rollout.groups_per_step=1",
            "rollout.max_tokens=48",
            "rollout.temperature=0.05",  # near-greedy: the taught episode, sampled
            "lora.enabled=false",
            "tensorboard=false",
            "steps=1",
        ],
    )
    train(config, progress=False)
    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert row["env_metric/tool_calls/mean"] == 1.0 and row["env_metric/tool_errors/mean"] == 0.0


def play_scripted(scripted: ScriptedHTTPServer, env: ToolEnv, choices: list[dict[str, Any]]) -> Any:
    """An episode whose replies come from a scripted chat endpoint (not a model): no server here
    turns a model's output into native `tool_calls` (vLLM's parsers need a tool-trained model),
    so the scripted one plays that part, over real HTTP."""
    for choice in choices:
        scripted.reply(200, {"choices": [choice], "usage": {"completion_tokens": 5}})

    async def go() -> Any:
        engine = OpenAIEngine(scripted.url + "/v1", "scripted")
        try:
            return await play_episode(env, engine, SamplingParams(max_tokens=64), task=TASK, env_name="e")
        finally:
            await engine.close()

    return asyncio.run(go())


def test_native_tool_calls_over_an_openai_compatible_endpoint(
    sandbox: Sandbox, scripted: ScriptedHTTPServer
) -> None:
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "python", "arguments": '{"code": "6*7"}'},
    }
    env = ToolEnv(TaskList([TASK], name="six"), tools=["python"], prompt_style="native", sandbox=sandbox)
    choices = [
        {
            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "finish_reason": "tool_calls",
        },
        {"message": {"role": "assistant", "content": "\\boxed{42}"}, "finish_reason": "stop"},
    ]
    episode = play_scripted(scripted, env, choices)
    assert episode.reward == 1.0 and episode.metrics["tool_calls"] == 1
    first, second = scripted.bodies
    assert first["tools"] == env.toolbox.schemas and "stop" not in first
    assert second["messages"][-2]["tool_calls"] == [call]
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_x",
        "name": "python",
        "content": "42\n",
    }


def test_a_servers_named_stop_string_is_put_back_on_the_reply(
    sandbox: Sandbox, scripted: ScriptedHTTPServer
) -> None:
    choices = [  # vLLM cuts the stop string from the text and names it in `stop_reason`
        {"message": {"role": "assistant", "content": "<python>print(6*7)"}, "stop_reason": "</python>"},
        {"message": {"role": "assistant", "content": "\\boxed{42}"}, "finish_reason": "stop"},
    ]
    episode = play_scripted(scripted, tool_env(sandbox), choices)
    assert "</python>" in scripted.bodies[0]["stop"] and "tools" not in scripted.bodies[0]
    assert episode.messages[2]["content"] == "<python>print(6*7)</python>"
    assert episode.messages[3]["content"] == "42\n" and episode.reward == 1.0


def test_a_sandbox_failure_fails_the_episode_instead_of_training_on_it(scripted: ScriptedHTTPServer) -> None:
    """The closed sandbox really fails its run; the episode ends with an environment error and
    no reward (its group is skipped), and the model is never shown a made-up tool error."""
    broken = make_sandbox("bubblewrap")
    broken.close()
    choices = [{"message": {"role": "assistant", "content": CALL.strip()}, "finish_reason": "stop"}]
    episode = play_scripted(scripted, tool_env(broken), choices)
    assert episode.error == "env: ToolInfrastructureError: the sandbox failed: the sandbox is closed"
    assert math.isnan(episode.reward) and episode.passed is None
    assert [m["role"] for m in episode.messages] == ["system", "user"]  # no tool message was made


TOOL_CHAT_CALL = '<tool_call>{"name": "python", "arguments": {"code": "print(6*7)"}}</tool_call>'
INVENTED = "<|tool|>99\n"  # what a model that is not stopped goes on to write: a made-up result


@pytest.fixture(scope="module")
def native_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat-template model taught to write a native-style call as text and then, like an
    unstopped model, to invent the tool's reply."""
    base = build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_template=CHAT_TEMPLATE, seed=2)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    env = native_env()
    context = ChatRenderer(tokenizer).prompt_ids(env.opening(TASK), tools=env.policy_tools)
    target = tokenizer(TOOL_CHAT_CALL + INVENTED, add_special_tokens=False).input_ids
    return fit(base, tmp_path_factory.mktemp("native-model"), [(context, target)])


def native_env(sandbox: Sandbox | None = None) -> ToolEnv:
    return ToolEnv(TaskList([TASK], name="six"), tools=["python"], prompt_style="native", sandbox=sandbox)


def test_native_calls_written_as_text_stop_at_the_closing_tag_on_a_local_engine(
    native_model_dir: Path, sandbox: Sandbox
) -> None:
    engine = TransformersEngine.from_pretrained(native_model_dir, device="cpu")
    try:
        params = SamplingParams(max_tokens=160, temperature=0.0)  # the JSON call is long in this vocabulary
        episode = asyncio.run(play_episode(native_env(sandbox), engine, params, task=TASK, env_name="native"))
    finally:
        engine.shutdown()
    assert episode.error is None and episode.finish_reasons[0] == "stop"
    assert episode.messages[2] == {"role": "assistant", "content": TOOL_CHAT_CALL}  # nothing invented
    assert episode.messages[3]["role"] == "tool" and episode.messages[3]["content"] == "42\n"
    assert episode.metrics["tool_calls"] == 1 and episode.metrics["tool_errors"] == 0


def test_two_results_of_one_reply_get_a_span_each(tiny_chat_model_dir: Path, sandbox: Sandbox) -> None:
    """A chat template with a tool role, a reply making two calls: one span per result,
    each covering that result's text, in order, inside the one insertion."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    renderer = ChatRenderer(tokenizer, "template")
    env = ToolEnv(TaskList([TASK], name="six"), tools=["python", "calculator"], sandbox=sandbox)
    reply = TOOL_CHAT_CALL + " <calculator>2**10</calculator>"
    reply_ids = [*tokenizer(reply, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    generation = Generation(reply, len(reply_ids), "stop", token_ids=tuple(reply_ids))
    log = TokenLog(renderer)

    async def go() -> list[dict[str, Any]]:
        opening, _ = await env.areset(options={"task": TASK})
        log.start(opening)
        log.add_reply(generation)
        messages, *_ = await env.astep(reply)
        log.add_environment(messages[: len(opening) + 1], messages[len(opening) + 1 :], generation)
        return messages

    messages = asyncio.run(go())
    assert [(m["role"], m["content"]) for m in messages[-2:]] == [("tool", "42\n"), ("tool", "1024")]
    ((begin, end),) = log.env_spans
    (first_begin, first_end), (second_begin, second_end) = log.tool_spans
    assert begin < first_begin < first_end < second_begin < second_end < end
    decode = lambda a, b: tokenizer.decode(log.token_ids[a:b])  # noqa: E731
    assert (
        decode(first_begin, first_end).strip() == "42" and decode(second_begin, second_end).strip() == "1024"
    )
    assert "<|tool|>" in decode(first_end, second_begin)  # the second result's own opening lies between
    assert decode(second_end, end).strip() == "<|assistant|>"  # then the model's turn opens
    assert not any(log.loss_mask[begin:end])
