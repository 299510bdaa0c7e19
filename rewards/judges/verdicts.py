"""Reading verdicts out of judge replies: from token probabilities where given, else from text.

A judge asked "which is better, A or B?" answers with a token. When the endpoint returns
top logprobs, the probability mass on "A"-like and "B"-like tokens at the first position
that carries any of them is a soft verdict, which is more informative than the argmax
(and what the anchors throw away). Otherwise the text is parsed. A reply from which no
verdict can be read is *unparseable*: the judges count it and apply their stated policy;
it is never read as a score of 0.

Single-letter labels ("A", "B") are matched case-sensitively: the article "a" ("it's a
tie") is not a vote for A. Words ("tie", "yes", "no") match in any case.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PUNCT = " \t\n*_`'\"()[]{}.,:;!"


def _same_label(word: str, label: str) -> bool:
    """A single letter must match exactly (the article "a" is no verdict); words in any case."""
    return word == label if len(label) == 1 else word.lower() == label.lower()


def _label_of(token: str, labels: Sequence[str]) -> str | None:
    """The label a token spells (ignoring spaces and punctuation around it; see `_same_label`)."""
    word = token.strip(_PUNCT)
    for label in labels:
        if _same_label(word, label):
            return label
    return None


def label_distribution(
    top_logprobs_T: Sequence[Mapping[str, float]], labels: Sequence[str]
) -> dict[str, float] | None:
    """Probabilities of `labels` (renormalised over them) at the first position that is about them.

    Tokens that spell the same label (" A", "A", "**A") add up. A position counts only when
    the labels together outweigh every other single token there: a reply that starts with
    " " (tokenizers that split " A" into " " and "A") or with "Response" carries the verdict
    one position later, while the labels' small mass in the first position's tail is noise.
    None when no position qualifies: no usable probabilities for this question.
    """
    for top in top_logprobs_T:
        mass = dict.fromkeys(labels, 0.0)
        other = 0.0  # the most likely token that is not a label
        for token, logprob in top.items():
            if not math.isfinite(logprob):
                continue
            label = _label_of(token, labels)
            if label is None:
                other = max(other, math.exp(logprob))
            else:
                mass[label] += math.exp(logprob)
        total = sum(mass.values())
        if total > other:
            return {label: p / total for label, p in mass.items()}
    return None


def label_in_text(text: str, labels: Sequence[str]) -> str | None:
    """The first whole-word label in the reply ("A", "Response B", "**tie**"), or None."""
    alternatives = "|".join(
        re.escape(label) if len(label) == 1 else f"(?i:{re.escape(label)})"
        for label in sorted(labels, key=len, reverse=True)
    )
    match = re.search(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", text)
    if match is None:
        return None
    return _label_of(match.group(1), labels)


@dataclass(frozen=True)
class Choice:
    """A verdict among labels: the chosen label and, when logprobs gave them, probabilities."""

    label: str
    probabilities: Mapping[str, float] | None  # over the labels, summing to 1
    source: str  # "logprobs" or "text"


def read_choice(
    text: str, top_logprobs_T: Sequence[Mapping[str, float]], labels: Sequence[str]
) -> Choice | None:
    """The verdict in a reply: token probabilities first, the text as fallback; None if neither."""
    probabilities = label_distribution(top_logprobs_T, labels)
    if probabilities is not None:
        return Choice(max(probabilities, key=probabilities.__getitem__), probabilities, "logprobs")
    label = label_in_text(text, labels)
    if label is None:
        return None
    return Choice(label, None, "text")


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_DENOMINATOR = re.compile(r"(?:/|\bout of)\s*$", re.IGNORECASE)  # "7/10", "7 out of 10": not the 10
_ANSWER_WORD = re.compile(
    r"\b(?:score|rating|rated?|grade|give|gives|answer|verdict)\b(?:\s+(?:it|this|the response))?"
    r"(?:\s+(?:a|an|of))?\s*[:=]?\s*$",
    re.IGNORECASE,
)


def _scale_pattern(low: float, high: float) -> re.Pattern[str]:
    """The stated scale ("1 to 9", "1-9", "between 1 and 9"): its bounds are not a score."""
    bounds = [re.escape(f"{bound:g}") for bound in (low, high)]
    return re.compile(rf"(?<![\w.]){bounds[0]}\s*(?:to|-|–|and)\s*{bounds[1]}(?![\w.])", re.IGNORECASE)


def score_in_text(text: str, low: float, high: float) -> float | None:
    """The score a reply gives, in [low, high]; None if it gives none.

    The stated scale ("on a scale of 1 to 9") and denominators ("7/10") are not scores.
    Of the numbers left, in order of preference: the last one right after an answer word
    ("Score: 7", "I give it a 7"), one that opens the reply (the prompt ended with the
    answer prefix, so a reply leads with its answer), else the last one.
    """
    text = _scale_pattern(low, high).sub(" ", text)
    candidates: list[tuple[float, str, bool]] = []  # (value, text before it, opens the reply)
    for match in _NUMBER.finditer(text):
        before = text[: match.start()]
        value = float(match.group())
        if low <= value <= high and not _DENOMINATOR.search(before):
            candidates.append((value, before, not before.strip(_PUNCT)))
    if not candidates:
        return None
    answered = [value for value, before, _ in candidates if _ANSWER_WORD.search(before)]
    if answered:
        return answered[-1]
    if candidates[0][2]:
        return candidates[0][0]
    return candidates[-1][0]


def expected_score(
    top_logprobs_T: Sequence[Mapping[str, float]], low: int, high: int
) -> tuple[float, Mapping[str, float]] | None:
    """The probability-weighted mean score over single-digit score tokens at the first position
    that carries any; None if the range needs more than one digit or no position has one.

    Multi-digit scores ("10") are split into several tokens by most tokenizers, so their
    probability cannot be read from one position: the text is parsed instead.
    """
    if not (0 <= low <= high <= 9):
        return None
    labels = [str(s) for s in range(low, high + 1)]
    probabilities = label_distribution(top_logprobs_T, labels)
    if probabilities is None:
        return None
    return sum(int(label) * p for label, p in probabilities.items()), probabilities
