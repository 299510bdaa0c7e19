"""Reading verdicts out of judge replies: from token probabilities where given, else from text.

A judge asked "which is better, A or B?" answers with a token. When the endpoint returns
top logprobs, the probability mass on "A"-like and "B"-like tokens at the first position
that carries any of them is a soft verdict, which is more informative than the argmax
(and what the anchors throw away). Otherwise the text is parsed. A reply from which no
verdict can be read is *unparseable*: the judges count it and apply their stated policy;
it is never read as a score of 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PUNCT = " \t\n*_`'\"()[]{}.,:;!"


def _label_of(token: str, labels: Sequence[str]) -> str | None:
    """The label a token spells (case-insensitive, ignoring spaces and punctuation around it)."""
    word = token.strip(_PUNCT).upper()
    for label in labels:
        if word == label.upper():
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
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    match = re.search(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", text, flags=re.IGNORECASE)
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


def score_in_text(text: str, low: float, high: float) -> float | None:
    """The first number in the reply that lies in [low, high] ("7", "Score: 7/10", "8.5")."""
    for match in _NUMBER.finditer(text):
        value = float(match.group())
        if low <= value <= high:
            return value
    return None


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
