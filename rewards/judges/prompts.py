"""Judge prompts: instructions, few-shot examples, and the question, as text or chat messages.

Instruction-tuned judges get chat messages (instructions as the system message, each
example as a user/assistant exchange). Base models cannot follow instructions, but they
continue patterns: the same pieces rendered as one text, examples first, end with the
answer prefix ("Better response:"), and the next token is the verdict. That is the
Constitutional-AI-from-a-base-model set-up, and how the embedded Gemma 270M judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rewards.types import Message, Sample, last_user_text, message


@dataclass(frozen=True)
class JudgeExample:
    """One solved judging question: the filled-in query and the judge's answer."""

    query: str
    answer: str


@dataclass(frozen=True)
class JudgePrompt:
    """Instructions, few-shot examples, and the prefix the judge's answer follows."""

    instructions: str
    answer_prefix: str
    examples: tuple[JudgeExample, ...] = ()

    def text(self, query: str) -> str:
        """A plain-text prompt for a base model (completions API); the answer comes next."""
        shots = [f"{ex.query}\n{self.answer_prefix} {ex.answer}" for ex in self.examples]
        return "\n\n".join([self.instructions, *shots, f"{query}\n{self.answer_prefix}"])

    def messages(self, query: str) -> list[Message]:
        """Chat messages for an instruction-tuned judge."""
        turns: list[Message] = [message("system", self.instructions)]
        for ex in self.examples:
            turns += [message("user", f"{ex.query}\n{self.answer_prefix}"), message("assistant", ex.answer)]
        turns.append(message("user", f"{query}\n{self.answer_prefix}"))
        return turns

    def render(self, query: str, *, chat: bool) -> str | list[Message]:
        return self.messages(query) if chat else self.text(query)


def prompt_text(sample: Sample) -> str:
    """The instruction a response answers: the last user message before the final reply."""
    return last_user_text(sample.messages)


def pair_query(prompt: str, response_a: str, response_b: str) -> str:
    return f"Instruction: {prompt}\n\nResponse A: {response_a}\n\nResponse B: {response_b}"


def single_query(prompt: str, response: str) -> str:
    return f"Instruction: {prompt}\n\nResponse: {response}"


def reference_query(prompt: str, response: str, reference: str) -> str:
    return f"Question: {prompt}\n\nReference answer: {reference}\n\nResponse: {response}"


DEFAULT_CONSTITUTION = (
    "Choose the response that follows the instruction better: helpful, honest and harmless, "
    "on topic, clear and concise."
)

_PAIR_SHOTS = (
    JudgeExample(pair_query("Name a fruit that is yellow.", "A banana.", "I like cars a lot."), "A"),
    JudgeExample(
        pair_query(
            "Write one sentence about the sea.",
            "sea sea sea sea sea sea",
            "The sea shimmered silver under the morning sun.",
        ),
        "B",
    ),
    JudgeExample(
        pair_query(
            "Give a tip for sleeping well.",
            "Keep a regular bedtime and avoid screens for an hour before bed.",
            "Sleep is when you are asleep.",
        ),
        "A",
    ),
    JudgeExample(pair_query("What is 2 + 2?", "2 + 2 is 5.", "2 + 2 = 4."), "B"),
)

_SCORE_SHOTS = (
    JudgeExample(single_query("Name a fruit that is yellow.", "A banana."), "9"),
    JudgeExample(single_query("Write one sentence about the sea.", "sea sea sea sea"), "1"),
    JudgeExample(
        single_query("Give a tip for sleeping well.", "Sleep more, I guess, or do not, whatever."), "4"
    ),
    JudgeExample(single_query("What is the capital of France?", "Paris is the capital of France."), "9"),
)

_REFERENCE_SHOTS = (
    JudgeExample(reference_query("What is 7 * 6?", "The product is 42.", "42"), "yes"),
    JudgeExample(reference_query("Capital of Italy?", "Milan.", "Rome"), "no"),
    JudgeExample(reference_query("How many legs has a spider?", "Spiders have eight legs.", "8"), "yes"),
)


def pairwise_prompt(
    constitution: str = DEFAULT_CONSTITUTION, *, few_shot: bool = True, ties: bool = True
) -> JudgePrompt:
    """Which of two responses is better, by a principle (a constitution) or rubric."""
    options = "A, B, or tie" if ties else "A or B"
    return JudgePrompt(
        instructions=f"Compare two responses to an instruction. {constitution} Answer with {options}.",
        answer_prefix="Better response:",
        examples=_PAIR_SHOTS if few_shot else (),
    )


def pointwise_prompt(
    rubric: str = DEFAULT_CONSTITUTION, low: int = 1, high: int = 9, *, few_shot: bool = True
) -> JudgePrompt:
    """A score from `low` to `high` for one response, by a rubric or constitution."""
    shots = _SCORE_SHOTS if few_shot and (low, high) == (1, 9) else ()
    return JudgePrompt(
        instructions=f"Rate the response to the instruction from {low} (worst) to {high} (best). {rubric}",
        answer_prefix=f"Score ({low}-{high}):",
        examples=shots,
    )


def reference_prompt(*, few_shot: bool = True) -> JudgePrompt:
    """Does a response agree with a gold answer? Answered yes or no."""
    return JudgePrompt(
        instructions="Decide whether the response gives the same final answer as the reference answer. "
        "Answer yes or no.",
        answer_prefix="Same answer:",
        examples=_REFERENCE_SHOTS if few_shot else (),
    )


def with_examples(prompt: JudgePrompt, examples: Sequence[JudgeExample]) -> JudgePrompt:
    """The same prompt with your own few-shot examples instead of the built-in ones."""
    return JudgePrompt(prompt.instructions, prompt.answer_prefix, tuple(examples))
