"""A CPU-bound test reward for the server's process executor
(`rewardgym serve --import tests/cpu_rewards.py --reward spin --executor process`)."""

from __future__ import annotations

import os
import time

from rewards import Reward, Sample, Score, register_reward


class Spin(Reward):
    """Busy-loops for `info["spin_s"]` seconds without ever awaiting (it would stall an
    event loop), then scores 1 and reports the pid of the process that ran it."""

    name = "spin"

    async def compute(self, sample: Sample) -> Score:
        end = time.monotonic() + float(sample.info.get("spin_s", 0.0))
        while time.monotonic() < end:
            pass
        return Score(value=1.0, info={"pid": os.getpid()})


register_reward("spin", Spin)
