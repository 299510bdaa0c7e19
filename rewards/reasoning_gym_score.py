"""reasoning-gym's own verifiers as a Reward (for tasks made by its generators)."""

from __future__ import annotations

from collections.abc import Sequence

from rewards.base import Reward
from rewards.extract import AnswerFormat, check_formats, extract_answer
from rewards.types import Sample, Score

DEFAULT_RG_FORMATS: tuple[AnswerFormat, ...] = ("answer_tag", "boxed", "answer_line")


class ReasoningGymScore(Reward):
    """Score the extracted answer with the generator's `score_answer` (1.0 = correct).

    Needs the generated entry in `Sample.info["entry"]` (as `ReasoningGymTasks` provides).
    Some generators give partial credit; `passed` means a full score.
    """

    def __init__(
        self, formats: Sequence[AnswerFormat] = DEFAULT_RG_FORMATS, name: str = "reasoning_gym"
    ) -> None:
        self.formats = check_formats(formats)
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        import reasoning_gym

        entry = sample.info.get("entry")
        if not isinstance(entry, dict) or "metadata" not in entry:
            raise ValueError("needs the reasoning-gym entry in Sample.info['entry']")
        answer = extract_answer(sample.completion, self.formats)
        if answer is None:
            return Score(value=0.0, passed=False, info={"answer": None, "reason": "no answer found"})
        score_fn = reasoning_gym.get_score_answer_fn(entry["metadata"]["source_dataset"])
        value = float(score_fn(answer, entry))
        return Score(value=value, passed=value >= 1.0, info={"answer": answer})
