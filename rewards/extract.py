"""Pull a final answer out of free-form model text.

Models state answers as `\\boxed{...}`, as an `Answer: ...` line, or inside `<answer>`
tags. Each extractor returns the last such answer (models often restate), or None.

Every extractor runs in time linear in the text: they run in the caller's process, outside
any worker deadline, on replies that may be megabytes of adversarial junk (`\\boxed{`
repeated, `<answer>` repeated, a million spaces after "answer").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, get_args

AnswerFormat = Literal["boxed", "answer_line", "answer_tag"]
ANSWER_FORMATS: tuple[AnswerFormat, ...] = get_args(AnswerFormat)
DEFAULT_FORMATS: tuple[AnswerFormat, ...] = ("boxed", "answer_line")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*+\{")
_BRACE = re.compile(r"[{}]")
# Possessive quantifiers: backtracking over the whitespace runs made this quadratic.
_ANSWER_LINE = re.compile(
    r"(?:final\s++answer|answer)\s*+(?:is)?\s*+[:：]\s*+(?P<answer>[^\n]*+)",
    re.IGNORECASE,
)


def check_formats(formats: Sequence[AnswerFormat] | str) -> tuple[AnswerFormat, ...]:
    """The formats as a tuple, or a ValueError naming an unknown one (a lone string is one format)."""
    chosen = (formats,) if isinstance(formats, str) else tuple(formats)
    for fmt in chosen:
        if fmt not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {fmt!r}; use one of {', '.join(ANSWER_FORMATS)}")
    return chosen  # type: ignore[return-value]


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance, or None.

    One pass with a stack of open braces, over only the stretch that can matter: from the
    first box to the last `}`. An unclosed `\\boxed{` costs nothing more.
    """
    box_starts = {m.end() - 1: m.end() for m in _BOXED.finditer(text)}  # its `{` -> content start
    if not box_starts:
        return None
    first, last = min(box_starts), text.rfind("}")
    stack: list[int] = []  # content start of an open box, or -1 for a plain `{`
    best_start, best_end = -1, -1
    for brace in _BRACE.finditer(text, first, last + 1):
        at = brace.start()
        if brace.group() == "{":
            stack.append(box_starts.get(at, -1))
        elif stack:
            start = stack.pop()
            if start > best_start:  # the box opened last wins, as when scanning box by box
                best_start, best_end = start, at
    return text[best_start:best_end].strip() if best_start >= 0 else None


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
    """Content of the last `<tag>...</tag>` (each opening tag closed by the first closing tag
    after it, pairs taken left to right), or None."""
    opening, closing = f"<{tag}>", f"</{tag}>"
    found = None
    pos = 0
    while (start := text.find(opening, pos)) != -1:
        end = text.find(closing, start + len(opening))
        if end == -1:
            break  # no closing tag after this one, so none after any later opening either
        found = (start + len(opening), end)
        pos = end + len(closing)
    return text[found[0] : found[1]].strip() if found else None


def extract_answer(text: str, formats: Sequence[AnswerFormat] = DEFAULT_FORMATS) -> str | None:
    """The first format (in the given order of preference) that yields an answer."""
    for fmt in check_formats(formats):
        if fmt == "boxed":
            answer = extract_boxed(text)
        elif fmt == "answer_line":
            answer = extract_answer_line(text)
        else:
            answer = extract_tag(text, "answer")
        if answer:
            return answer
    return None


_FENCE_TAG = re.compile(r"[ \t]*+(?P<tag>[\w+#.-]*+)")
_LANGUAGE_TAGS = {
    "python": {"python", "python3", "py", "py3"},
    "c": {"c"},
    "cpp": {"cpp", "c++", "cxx", "cc"},
}


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(lowercased tag, body) of every ``` block; a block left open runs to the end."""
    blocks = []
    pos = 0
    while (start := text.find("```", pos)) != -1:
        newline = text.find("\n", start + 3)
        if newline == -1:
            break  # a fence needs its own line; no later one can have it either
        tag_match = _FENCE_TAG.match(text, start + 3, newline)
        tag = tag_match.group("tag").lower() if tag_match else ""
        end = text.find("```", newline + 1)
        if end == -1:
            blocks.append((tag, text[newline + 1 :]))
            break
        blocks.append((tag, text[newline + 1 : end]))
        pos = end + 3
    return blocks


def extract_code(text: str, language: str = "python") -> str:
    """The program in a reply: the last fenced block tagged with `language`, else the last
    untagged block, else the last block of any kind, else the whole text. A block left open
    at the end (a reply cut off mid-program) counts up to the end."""
    tags = _LANGUAGE_TAGS.get(language, {language})
    blocks = _fenced_blocks(text)
    for wanted in (lambda tag: tag in tags, lambda tag: not tag, lambda tag: True):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1]
    return text
