"""Environment step overhead on a trivial reward.

Baseline: scoring the same trivial reward directly (what step costs at the very least).
Ours: `MultiTurnEnv.astep` (what the evaluator and trainer call) and the sync `step`
(gymnasium scripts), each ending a single-turn episode with that reward. The overhead is
step time minus reward time. Target: under 50 microseconds per step.

    python bench/bench_env_step.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from envs import MultiTurnEnv, Task, TaskList
from rewards import FunctionReward, Sample

TASKS = TaskList([Task(id=f"t{i}", prompt=f"Say {i}.", answer=str(i)) for i in range(100)])
REPLY = "The answer is 42."


def make_env() -> MultiTurnEnv:
    return MultiTurnEnv(TASKS, FunctionReward(lambda s: 1.0, name="trivial"), system_prompt="Be brief.")


async def time_reward(steps: int) -> float:
    reward = FunctionReward(lambda s: 1.0, name="trivial")
    sample = Sample.from_completion(REPLY, "42")
    start = time.perf_counter()
    for _ in range(steps):
        await reward.score(sample)
    return (time.perf_counter() - start) / steps


async def time_astep(steps: int) -> float:
    env = make_env()
    spent = 0.0
    for i in range(steps):
        await env.areset(seed=i)
        start = time.perf_counter()
        await env.astep(REPLY, num_tokens=5)
        spent += time.perf_counter() - start
    return spent / steps


def time_step(steps: int) -> float:
    env = make_env()
    spent = 0.0
    for i in range(steps):
        env.reset(seed=i)
        start = time.perf_counter()
        env.step(REPLY, num_tokens=5)
        spent += time.perf_counter() - start
    env.close()
    return spent / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(time_astep(500))  # warm-up
    time_step(500)

    reward_us = asyncio.run(time_reward(args.steps)) * 1e6
    astep_us = asyncio.run(time_astep(args.steps)) * 1e6
    step_us = time_step(args.steps) * 1e6
    print(f"steps: {args.steps}")
    print(f"baseline  reward alone           : {reward_us:6.1f} us")
    print(f"rewardgym env.astep (async)      : {astep_us:6.1f} us   overhead {astep_us - reward_us:5.1f} us")
    print(f"rewardgym env.step  (sync)       : {step_us:6.1f} us   overhead {step_us - reward_us:5.1f} us")
    ratios = f"astep {astep_us / reward_us:.1f}x, step {step_us / reward_us:.1f}x"
    print(f"ratio step/reward: {ratios}   (target: overhead < 50 us)")


if __name__ == "__main__":
    main()
