"""Pull a final answer out of free-form model text.

Models state answers as `\\boxed{...}`, as an `Answer: ...` line, or inside `<answer>`
tags. Each extractor returns the last such answer (models often restate), or None.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

AnswerFormat = Literal["boxed", "answer_line", "answer_tag"]
DEFAULT_FORMATS: tuple[AnswerFormat, ...] = ("boxed", "answer_line")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is)?\s*[:：]\s*(?P<answer>[^\n]*)",
    re.IGNORECASE,
)
_TAG_CACHE: dict[str, re.Pattern[str]] = {}


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (braces balanced), or None."""
    result = None
    for match in _BOXED.finditer(text):
        depth = 1
        for i in range(match.end(), len(text)):
            char = text[i]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    result = text[match.end() : i].strip()
                    break
    return result


def extract_answer_line(text: str) -> str | None:
    """The rest of the line after the last `Answer:` / `Final answer:`, or None."""
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group("answer").strip()
    answer = answer.strip("*").strip()  # markdown bold: **Answer:** 42
    answer = answer.rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$").strip()
    return answer or None


def extract_tag(text: str, tag: str = "answer") -> str | None:
    """Content of the last `<tag>...</tag>`, or None."""
    pattern = _TAG_CACHE.get(tag)
    if pattern is None:
        pattern = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL)
        _TAG_CACHE[tag] = pattern
    matches = pattern.findall(text)
    return matches[-1].strip() if matches else None


def extract_answer(text: str, formats: Sequence[AnswerFormat] = DEFAULT_FORMATS) -> str | None:
    """The first format (in the given order of preference) that yields an answer."""
    for fmt in formats:
        if fmt == "boxed":
            answer = extract_boxed(text)
        elif fmt == "answer_line":
            answer = extract_answer_line(text)
        elif fmt == "answer_tag":
            answer = extract_tag(text, "answer")
        else:
            raise ValueError(f"unknown answer format {fmt!r}; use one of boxed, answer_line, answer_tag")
        if answer:
            return answer
    return None
