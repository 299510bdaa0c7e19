"""Giving a tool environment your own tool: a typed function, its docstring, that is all.

A unit-conversion tool next to the built-in calculator; the episode below is played by
scripted replies (swap them for a policy with `rewardgym eval` or the trainer).

    python examples/custom_tool.py
"""

from __future__ import annotations

from typing import Literal

from envs import Task, TaskList, ToolEnv
from envs.tools import ToolError, tool

FACTORS = {("mi", "km"): 1.609344, ("km", "mi"): 1 / 1.609344, ("ft", "m"): 0.3048, ("m", "ft"): 1 / 0.3048}


@tool(timeout_s=2)
def convert(
    value: float, source: Literal["mi", "km", "ft", "m"], target: Literal["mi", "km", "ft", "m"]
) -> str:
    """Convert a length between units.

    Args:
        value: the length to convert
        source: the unit it is given in
        target: the unit wanted
    """
    if source == target:
        return f"{value:g} {target}"
    if (source, target) not in FACTORS:
        raise ToolError(f"cannot convert {source} to {target}")  # the model reads this message
    return f"{value * FACTORS[source, target]:.4f} {target}"


TASKS = TaskList([Task("marathon", "How many km is 26.2 miles, to one decimal place?", "42.2")], name="units")


def main() -> None:
    env = ToolEnv(TASKS, tools=[convert, "calculator"], prompt_style="json", answer="math")
    print(env.toolbox.schemas[0]["function"]["parameters"]["properties"]["source"])
    env.reset(seed=0)
    call = '<tool_call>{"name": "convert", "arguments": {"value": 26.2, "source": "mi", "target": "%s"}}'
    call += "</tool_call>"
    replies = [
        call % "kg",  # not a unit the tool knows: the model is told why
        call % "km",
        "<calculator>round(42.1648128, 1)</calculator>",
        "A marathon is \\boxed{42.2} km.",
    ]
    for reply in replies:
        obs, reward, terminated, truncated, info = env.step(reply)
        if not (terminated or truncated):
            print(f"tool: {obs[-1]['content']}")
    metrics = info["metrics"]
    print(f"reward {reward} | tool calls {metrics['tool_calls']}, errors {metrics['tool_errors']}")


if __name__ == "__main__":
    main()
