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


_FENCE = re.compile(r"```[ \t]*(?P<tag>[\w+#.-]*)[^\n]*\n(?P<body>.*?)(?:```|\Z)", re.DOTALL)
_LANGUAGE_TAGS = {
    "python": {"python", "python3", "py", "py3"},
    "c": {"c"},
    "cpp": {"cpp", "c++", "cxx", "cc"},
}


def extract_code(text: str, language: str = "python") -> str:
    """The program in a reply: the last fenced block tagged with `language`, else the last
    untagged block, else the last block of any kind, else the whole text. A block left open
    at the end (a reply cut off mid-program) counts up to the end."""
    tags = _LANGUAGE_TAGS.get(language, {language})
    blocks = [(m.group("tag").lower(), m.group("body")) for m in _FENCE.finditer(text)]
    for wanted in (lambda tag: tag in tags, lambda tag: not tag, lambda tag: True):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1]
    return text
