"""Rule verifiers: string match, regex and answer formats, JSON-schema validity, length penalty."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from rewards.base import Reward
from rewards.extract import AnswerFormat, check_formats, extract_answer, extract_boxed, extract_tag
from rewards.types import Sample, Score

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _references(reference: Any) -> list[str]:
    if reference is None:
        raise ValueError("this sample has no reference answer to compare with")
    if isinstance(reference, str):
        return [reference]
    if isinstance(reference, Sequence):
        return [str(r) for r in reference]
    return [str(reference)]


class ExactMatch(Reward):
    """1.0 when the answer equals the reference (or any of a list of references).

    With `formats`, the answer is first extracted from the completion (`\\boxed{}`,
    `Answer:` line, `<answer>` tag); with `normalize`, both sides are SQuAD-normalised.
    """

    def __init__(
        self,
        normalize: bool = True,
        formats: Sequence[AnswerFormat] = (),
        name: str = "exact_match",
    ) -> None:
        self.normalize = normalize
        self.formats = check_formats(formats)
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        references = _references(sample.reference)
        if self.formats:
            answer = extract_answer(sample.completion, self.formats)
            if answer is None:
                return Score(value=0.0, passed=False, info={"answer": None})
        else:
            answer = sample.completion.strip()
        prepare: Callable[[str], str] = normalize_text if self.normalize else str.strip
        matched = prepare(answer) in {prepare(r) for r in references}
        return Score(value=float(matched), passed=matched, info={"answer": answer})


class RegexMatch(Reward):
    """1.0 when the completion matches `pattern` (search by default, or full match)."""

    def __init__(
        self,
        pattern: str,
        fullmatch: bool = False,
        ignore_case: bool = False,
        dotall: bool = True,
        name: str = "regex",
    ) -> None:
        flags = (re.IGNORECASE if ignore_case else 0) | (re.DOTALL if dotall else 0)
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        self.fullmatch = fullmatch
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        text = sample.completion
        matched = bool(self.pattern.fullmatch(text) if self.fullmatch else self.pattern.search(text))
        return Score(value=float(matched), passed=matched)


_THINK_TO_ANSWER = re.compile(r"</think>\s*+<answer>")


def is_think_answer(text: str) -> bool:
    """Whether the text is exactly `<think>...</think><answer>...</answer>` (whitespace around
    and between allowed). Plain string checks, not one backtracking regex: linear on any reply."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    middle = text[len("<think>") : len(text) - len("</answer>")]
    return _THINK_TO_ANSWER.search(middle) is not None


_FORMAT_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "boxed": lambda text: bool(extract_boxed(text)),
    "answer_tag": lambda text: bool(extract_tag(text, "answer")),
    "think_answer": is_think_answer,
}


class FormatReward(Reward):
    """1.0 when the completion states its answer in the required format.

    Formats: `boxed` (a non-empty `\\boxed{}`), `answer_tag` (`<answer>...</answer>`),
    `think_answer` (exactly `<think>...</think><answer>...</answer>`, as in R1-style RL).
    """

    def __init__(self, format: str = "boxed", name: str = "format") -> None:
        if format not in _FORMAT_CHECKS:
            raise ValueError(f"unknown format {format!r}; choose from {sorted(_FORMAT_CHECKS)}")
        self.format = format
        self.check = _FORMAT_CHECKS[format]
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        ok = self.check(sample.completion)
        return Score(value=float(ok), passed=ok)


# The whitespace up to the last newline after the fence, taken possessively: `\s*\n` backtracked
# through every newline of a long blank run, rescanning the rest each time (quadratic).
_FENCE = re.compile(r"```(?:json)?(?:[^\S\n]*+\n)++(.*?)```", re.DOTALL)


class JsonSchemaReward(Reward):
    """1.0 when the completion is JSON (bare or in a ```json fence) valid under `schema`."""

    def __init__(self, schema: Mapping[str, Any], name: str = "json_schema") -> None:
        validator_cls = jsonschema.validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from None
        self.validator = validator_cls(schema)
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        text = sample.completion.strip()
        fenced = _FENCE.search(text)
        if fenced:
            text = fenced.group(1).strip()
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            return Score(
                value=0.0,
                components={"valid_json": 0.0, "valid_schema": 0.0},
                passed=False,
                info={"reason": f"not JSON: {exc.msg} at line {exc.lineno}"},
            )
        problem = jsonschema.exceptions.best_match(self.validator.iter_errors(document))
        valid = problem is None
        info = {} if valid else {"reason": f"schema violation: {problem.message}"}
        return Score(
            value=float(valid),
            components={"valid_json": 1.0, "valid_schema": float(valid)},
            passed=valid,
            info=info,
        )


class SoftOverlongPenalty(Reward):
    """DAPO's soft overlong penalty on the completion's token count.

    0 up to `max_length - cache_length` tokens, then linear down to -1 at `max_length`,
    and -1 beyond. Needs `Sample.num_tokens` (the policy's own count).
    """

    def __init__(self, max_length: int, cache_length: int, name: str = "overlong") -> None:
        if not 0 < cache_length <= max_length:
            raise ValueError(f"need 0 < cache_length <= max_length, got {cache_length=} {max_length=}")
        self.max_length = max_length
        self.cache_length = cache_length
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        if sample.num_tokens is None:
            raise ValueError("needs the completion's token count (Sample.num_tokens is None)")
        return Score(value=soft_overlong_penalty(sample.num_tokens, self.max_length, self.cache_length))


def soft_overlong_penalty(num_tokens: int, max_length: int, cache_length: int) -> float:
    """0 up to `max_length - cache_length` tokens, linear to -1 at `max_length`, -1 beyond."""
    start = max_length - cache_length
    if num_tokens <= start:
        return 0.0
    if num_tokens <= max_length:
        return (start - num_tokens) / cache_length
    return -1.0
