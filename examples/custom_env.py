"""Writing a new environment: one small file, then it is registered, checked and evaluable.

A two-turn "reverse the word" game: the model must spell a word backwards; if it fails,
it is shown the word letter by letter and gets one more try.

    python examples/custom_env.py
"""

from __future__ import annotations

import gymnasium
from gymnasium.utils.env_checker import check_env

from envs import Episode, GeneratedTasks, MultiTurnEnv, Reaction, Task, register_env
from rewards import ExactMatch

WORDS = ["python", "reward", "gymnasium", "policy", "sandbox", "gradient", "token", "judge"]


def make_task(index: int) -> Task:
    word = WORDS[index % len(WORDS)]
    return Task(
        id=f"reverse-{index}", prompt=f"Spell '{word}' backwards.", answer=word[::-1], info={"word": word}
    )


class ReverseWordEnv(MultiTurnEnv):
    """Spell a word backwards; one hint and a second try on a miss."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(
            GeneratedTasks(make_task, size=len(WORDS), name="reverse-words"),
            ExactMatch(normalize=True, name="reversed"),
            system_prompt="Answer with the reversed word only.",
            render_mode=render_mode,
        )

    async def react(self, episode: Episode) -> Reaction:
        score = await self.score(episode)
        if score.passed or episode.turns >= 2:
            return Reaction(done=True, score=score)
        letters = " ".join(episode.task.info["word"])
        return Reaction(
            messages=({"role": "user", "content": f"Not quite. The letters are: {letters}"},), score=score
        )


register_env("examples/ReverseWord-v0", ReverseWordEnv, description="spell a word backwards, two tries")


if __name__ == "__main__":
    env = gymnasium.make("examples/ReverseWord-v0")
    check_env(env.unwrapped, skip_render_check=True)  # gymnasium's own checker
    obs, info = env.reset(options={"task_id": "reverse-1"})
    print(obs[-1]["content"])
    obs, reward, terminated, truncated, info = env.step("drawr")  # a scripted policy's first try
    print(obs[-1]["content"], "| reward", reward)
    obs, reward, terminated, truncated, info = env.step("DRAWER")
    print("second try: reward", reward, "terminated", terminated, "components", info["reward_components"])
