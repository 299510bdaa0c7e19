"""The tool environment driven by scripted replies: real sandboxed python, the real
calculator and BM25 search, user tools and task files, every failure kind, budgets,
native tool calls, and gymnasium's checker."""

from __future__ import annotations

import asyncio
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import Task, TaskList, ToolEnv
from envs.tools import ToolInfrastructureError, ToolState, tool
from sandbox import Sandbox, make_sandbox

from conftest import ScriptedHTTPServer

SEVEN_TIMES_SIX = TaskList([Task("t42", "What is 7 * 6?", "42")], name="tiny")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with make_sandbox("bubblewrap") as box:
        yield box


def python_call(code: str) -> str:
    return "<tool_call>" + json.dumps({"name": "python", "arguments": {"code": code}}) + "</tool_call>"


def play(env: ToolEnv, replies: list[Any], **reset: Any) -> list[tuple[Any, ...]]:
    """Reset, then step each reply; every step's result."""
    env.reset(seed=0, options=reset or {"task_index": 0})
    return [env.step(reply) for reply in replies]


def test_python_then_answer_scores_the_final_reply(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox)
    (obs, reward, terminated, truncated, _), last = play(
        env, [python_call("print(7 * 6)"), "So \\boxed{42}."]
    )
    assert obs[-1] == {"role": "tool", "tool_call_id": "call_1_0", "name": "python", "content": "42\n"}
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = last
    assert (reward, terminated, truncated, info["passed"]) == (1.0, True, False, True)
    metrics = info["metrics"]
    assert metrics["tool_calls"] == 1 and metrics["tool_errors"] == 0 and metrics["turns"] == 2
    assert metrics["num_tokens"] > 0 and metrics["tool_seconds"] > 0


def test_python_is_stateful_within_an_episode_only(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox)
    steps = play(env, [python_call("x = 6\ndef f(y):\n    return x * y"), python_call("f(7)")])
    assert steps[0][0][-1]["content"] == "(no output)"
    assert steps[1][0][-1]["content"] == "42\n"
    ((obs, *_),) = play(env, [python_call("print(x)")])  # a new episode starts clean
    assert "NameError: name 'x' is not defined" in obs[-1]["content"]

    stateless = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, python_stateful=False)
    steps = play(stateless, [python_call("x = 6"), python_call("print(x)")])
    assert "NameError" in steps[1][0][-1]["content"]


def test_every_failure_is_a_tool_message_and_counted(sandbox: Sandbox) -> None:
    env = ToolEnv(
        SEVEN_TIMES_SIX, tools=["python", "calculator"], sandbox=sandbox, max_tool_calls=10, max_turns=10
    )
    replies = [
        '<tool_call>{"name": "python", "arguments": {"code": 1/0}}</tool_call>',  # broken JSON
        '<tool_call>{"name": "shell", "arguments": {"cmd": "ls"}}</tool_call>',  # unknown tool
        '<tool_call>{"name": "calculator", "arguments": {"expression": 7}}</tool_call>',  # wrong type
        python_call("raise ValueError('boom')"),  # the code raises
        "<calculator>1/0</calculator>",  # the tool refuses
        "Finally \\boxed{42}",
    ]
    steps = play(env, replies)
    messages = [step[0][-1]["content"] for step in steps[:-1]]
    assert "could not read the tool call" in messages[0] and "not valid JSON" in messages[0]
    assert "there is no tool named 'shell'" in messages[1] and "python, calculator" in messages[1]
    assert "bad arguments for calculator" in messages[2] and "expression" in messages[2]
    assert "ValueError: boom" in messages[3] and 'File "<cell>", line 1' in messages[3]
    assert messages[4].startswith("Error:") and "zero" in messages[4].lower()
    _, reward, terminated, _, info = steps[-1]
    assert reward == 1.0 and terminated  # errors along the way do not spoil a right answer
    metrics = info["metrics"]
    assert metrics["tool_calls"] == 5 and metrics["tool_errors"] == 5
    assert metrics["tool_errors_malformed"] == 1 and metrics["tool_errors_unknown_tool"] == 1
    assert metrics["tool_errors_bad_arguments"] == 1 and metrics["tool_errors_raised"] == 2


def test_hanging_code_times_out_and_huge_output_is_cut(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox)
    env.toolbox.tools["python"] = envs.tools.python_tool(sandbox, timeout_s=1.0, max_output_chars=2000)
    replies = [
        python_call("while True:\n    pass"),
        python_call("print('y' * 10**6)"),
        python_call("while True:\n    print('flood')"),
        "\\boxed{1}",
    ]
    steps = play(env, replies)
    assert "ran past the time limit of 1 s" in steps[0][0][-1]["content"]
    flood = steps[1][0][-1]["content"]
    assert len(flood) <= 2000 and "characters cut" in flood
    endless = steps[2][0][-1]["content"]
    assert endless.startswith("Error: the code printed too much output") and len(endless) < 1000
    metrics = steps[-1][4]["metrics"]
    assert metrics["tool_errors_timeout"] == 1 and metrics["tool_truncated"] == 1
    assert metrics["tool_errors_raised"] == 1
    assert steps[-1][1] == 0.0  # a wrong answer, scored


def test_tool_budget_ends_the_episode_truncated(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, max_tool_calls=2)
    steps = play(env, [python_call("1"), python_call("2"), python_call("3")])
    assert [s[2:4] for s in steps] == [(False, False), (False, False), (False, True)]
    metrics = steps[-1][4]["metrics"]
    assert metrics["tool_calls"] == 2 and metrics["tool_errors_budget"] == 1
    assert steps[-1][1] == 0.0 and steps[-1][4]["passed"] is False


def test_turn_limit_truncates_without_running_the_last_calls(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, max_turns=2)
    steps = play(env, [python_call("1"), python_call("2")])
    assert steps[-1][3] is True and steps[-1][4]["metrics"]["tool_calls"] == 1


def test_end_on_chosen_error_kinds(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, end_on_errors=["unknown_tool"])
    steps = play(env, [python_call("1/0"), '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'])
    assert steps[0][2] is False  # a raised error does not end it
    assert steps[1][2] is True and steps[1][4]["metrics"]["tool_errors_unknown_tool"] == 1
    with pytest.raises(ValueError, match="unknown tool error kind"):
        ToolEnv(SEVEN_TIMES_SIX, tools=["python"], end_on_errors=["exploded"])  # type: ignore[list-item]


def test_native_tool_calls_are_answered_by_id(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, prompt_style="native")
    assert env.policy_tools == env.toolbox.schemas and env.reply_stops == ()
    assert env.local_reply_stops == ("</tool_call>", "</python>")  # for engines sampling tokens here
    reply = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "python", "arguments": '{"code": "6*7"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "python", "arguments": '{"code": "1+1"}'},
            },
        ],
    }
    ((obs, *_),) = play(env, [reply])
    assert [(m["tool_call_id"], m["content"]) for m in obs[-2:]] == [("call_a", "42\n"), ("call_b", "2\n")]
    assert obs[0] == {  # the schemas go natively (policy_tools), not into the prompt
        "role": "system",
        "content": "Use the tools you are given when they help (up to 6 calls). When you know the "
        "answer, reply without a tool call and give the final answer as \\boxed{answer}.",
    }


def test_tags_prompt_style_and_reply_stops() -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python", "calculator"], prompt_style="tags")
    system = env.reset(seed=0)[0][0]["content"]
    assert "<python>code</python>" in system and "<calculator>expression</calculator>" in system
    assert env.reply_stops == ("</tool_call>", "</python>", "</calculator>")
    assert env.local_reply_stops == ()  # reply_stops already apply to every engine


def test_a_sandbox_failure_is_an_environment_error_not_a_tool_message() -> None:
    """A closed sandbox really fails every run (status sandbox-error): that says nothing about
    the model's code, so it is no tool message to train on; the step raises instead."""
    broken = make_sandbox("bubblewrap")
    broken.close()
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=broken)
    env.reset(seed=0)
    with pytest.raises(ToolInfrastructureError, match="the sandbox failed: the sandbox is closed"):
        env.step(python_call("print(6 * 7)"))


def test_builtin_tool_limits_are_set_through_make(sandbox: Sandbox) -> None:
    env = envs.make(
        "rewardgym/ToolMath-v0", sandbox=sandbox, tool_timeout_s=1.0, tool_max_output_chars=300
    ).unwrapped
    calculator = env.toolbox.tools["calculator"]
    assert (calculator.timeout_s, calculator.max_output_chars) == (1.0, 300)
    steps = play(env, [python_call("import time\ntime.sleep(3)"), python_call("print('y' * 5000)")])
    assert "ran past the time limit of 1 s" in steps[0][0][-1]["content"]
    cut = steps[1][0][-1]["content"]
    assert len(cut) <= 300 and "characters cut" in cut
    default = envs.make("rewardgym/ToolMath-v0", sandbox=sandbox).unwrapped
    assert default.toolbox.tools["calculator"].timeout_s == 2.0  # None keeps each tool's own


def test_a_judge_scores_the_final_answer(scripted: ScriptedHTTPServer) -> None:
    """answer="judge" with judge settings, as a TOML table or --env-arg would give them. The
    judge endpoint is scripted (a real HTTP server on loopback answering from a script, not a
    model): it says "yes" with P(yes) = 0.8 in its token logprobs."""
    top = {"yes": math.log(0.8), "no": math.log(0.2)}
    content = [
        {
            "token": "yes",
            "logprob": top["yes"],
            "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()],
        }
    ]
    scripted.reply(
        200,
        {
            "choices": [
                {"message": {"role": "assistant", "content": "yes"}, "logprobs": {"content": content}}
            ],
            "usage": {"completion_tokens": 1},
        },
    )
    judge = {"base_url": f"{scripted.url}/v1", "model": "scripted", "max_attempts": 1, "few_shot": False}
    env = envs.make("rewardgym/ToolMath-v0", tasks=SEVEN_TIMES_SIX, answer="judge", judge=judge).unwrapped
    try:
        ((_, reward, terminated, _, info),) = play(env, ["Six sevens make forty-two."])
    finally:
        env.close()
    assert terminated and reward == pytest.approx(0.8) and info["passed"] is True
    assert info["reward_components"]["judge_reference"] == pytest.approx(0.8)
    (body,) = scripted.bodies
    asked = json.dumps(body["messages"])
    assert "Reference answer: 42" in asked and "Response: Six sevens make forty-two." in asked
    with pytest.raises(ValueError, match="answer='judge' needs judge settings"):
        ToolEnv(SEVEN_TIMES_SIX, answer="judge")
    with pytest.raises(ValueError, match="only used with answer='judge'"):
        ToolEnv(SEVEN_TIMES_SIX, answer="exact", judge=judge)
    with pytest.raises(ValueError, match="unknown judge settings"):
        ToolEnv(SEVEN_TIMES_SIX, answer="judge", judge={**judge, "modle": "x"})


def test_user_tools_and_task_files(tmp_path: Path) -> None:
    inventory = {"apples": 3, "pears": 5}

    @tool(timeout_s=2)
    async def stock(item: str, state: ToolState) -> int:
        """How many of an item are in stock.

        Args:
            item: the item's name
        """
        state["asked"] = state.get("asked", 0) + 1
        if item not in inventory:
            raise KeyError(item)
        return inventory[item]

    def reverse(text: str) -> str:
        """Reverse a text."""
        return text[::-1]

    tasks = tmp_path / "shop.jsonl"
    tasks.write_text(json.dumps({"id": "s1", "prompt": "How many pears?", "answer": "5"}) + "\n")
    env = ToolEnv(str(tasks), tools=[stock, reverse], answer="exact")
    assert [s["function"]["name"] for s in env.policy_tools or env.toolbox.schemas] == ["stock", "reverse"]
    steps = play(
        env,
        [
            '<tool_call>{"name": "stock", "arguments": {"item": "plums"}}</tool_call>',
            "<stock>pears</stock>",
            "<reverse>sraep</reverse>",
            "There are \\boxed{5}",
        ],
    )
    assert steps[0][0][-1]["content"] == "Error: KeyError: 'plums'"
    assert steps[1][0][-1]["content"] == "5" and steps[2][0][-1]["content"] == "pears"
    assert steps[-1][1] == 1.0 and env.episode is not None
    assert env.episode.state["tool_use"].states["stock"]["asked"] == 2


def test_tool_use_shaping_adds_components(sandbox: Sandbox) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox, tool_bonus=0.1, tool_error_penalty=0.05)
    steps = play(env, [python_call("1/0"), python_call("6*7"), "\\boxed{42}"])
    info = steps[-1][4]
    assert info["reward_components"]["tool_use"] == pytest.approx(0.1 - 0.05)
    assert steps[-1][1] == pytest.approx(1.0 + 0.05)
    plain = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox)
    assert "tool_use" not in play(plain, ["\\boxed{42}"])[-1][4]["reward_components"]


def test_math_with_python_tasks_are_solvable_with_the_tool(sandbox: Sandbox) -> None:
    """The registered env: a reply computing the answer with python, then giving it, passes."""
    env = envs.make("rewardgym/ToolMath-v0", sandbox=sandbox)
    _, info = env.reset(seed=3)
    task = env.tasks.find(info["task_id"])
    steps = [env.step(python_call(f"print({task.answer!r})"))]
    answer = steps[0][0][-1]["content"].strip()
    steps.append(env.step(f"The result is \\boxed{{{answer}}}"))
    assert steps[-1][1] == 1.0 and steps[-1][4]["metrics"]["tool_calls"] == 1


def test_retrieval_qa_with_real_bm25_search() -> None:
    pytest.importorskip("bm25s", reason="the search tool needs the tools extra (bm25s)")
    env = envs.make("rewardgym/RetrievalQA-v0")
    _, info = env.reset(seed=0, options={"task_index": 0})
    task = env.tasks.find(info["task_id"])
    ((obs, *_),) = [env.step(f"<search>{task.prompt}</search>")]
    assert task.info["doc_id"] in obs[-1]["content"]  # BM25 found the document with the answer
    answer = task.answer[0] if isinstance(task.answer, list) else task.answer
    _, reward, terminated, _, info = env.step(f"\\boxed{{{answer}}}")
    assert reward == 1.0 and terminated and info["metrics"]["tool_calls"] == 1


def test_async_api_and_concurrent_episodes(sandbox: Sandbox) -> None:
    async def episode(i: int) -> float:
        env = ToolEnv(SEVEN_TIMES_SIX, tools=["python"], sandbox=sandbox)
        await env.areset(seed=i)
        await env.astep(python_call(f"print(6 * 7 + {i} - {i})"))
        *_, info = await env.astep("\\boxed{42}")
        return info["score"]

    async def many() -> list[float]:
        return list(await asyncio.gather(*(episode(i) for i in range(6))))

    assert asyncio.run(many()) == [1.0] * 6


@pytest.mark.parametrize("env_id", ["rewardgym/ToolMath-v0", "rewardgym/RetrievalQA-v0"])
def test_gymnasium_checker_passes(env_id: str) -> None:
    if env_id.endswith("RetrievalQA-v0"):
        pytest.importorskip("bm25s", reason="the search tool needs the tools extra (bm25s)")
    env = gymnasium.make(env_id).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    env.close()


def test_bad_configuration_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown built-in tool 'shell'"):
        ToolEnv(SEVEN_TIMES_SIX, tools=["shell"])
    with pytest.raises(TypeError, match="must be a list"):
        ToolEnv(SEVEN_TIMES_SIX, tools="python")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt_style"):
        ToolEnv(SEVEN_TIMES_SIX, prompt_style="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="answer must be"):
        ToolEnv(SEVEN_TIMES_SIX, answer="fuzzy")  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["json", "tags", "native"])
def test_few_shot_demonstration_matches_the_call_format(style: str) -> None:
    env = ToolEnv(SEVEN_TIMES_SIX, tools=["python", "calculator"], prompt_style=style, few_shot=1)  # type: ignore[arg-type]
    obs, _ = env.reset(seed=0)
    assert [m["role"] for m in obs] == ["system", "user", "assistant", "tool", "assistant", "user"]
    (call,) = env.parser.parse(obs[2])  # the demo's call is one the environment itself reads
    assert (call.name, call.arguments) == ("python", {"code": "print(123456 * 654321)"})
    assert obs[3]["content"].strip() == str(123456 * 654321) and obs[-1]["content"] == "What is 7 * 6?"
    with pytest.raises(ValueError, match="uses the python tool"):
        ToolEnv(SEVEN_TIMES_SIX, tools=["calculator"], few_shot=1)
