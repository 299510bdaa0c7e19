"""Cutting a sampled completion at a stop string, in text and in token ids alike.

Engines stop generating once a stop string appears, but the last token sampled may run
past it. Training keeps token ids, not text, so the ids must be cut to match the text:
every engine that samples ids (transformers, vLLM) shares this one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cut_at_stop(tokenizer: Any, ids: Sequence[int], stop: Sequence[str]) -> tuple[str, list[int], bool]:
    """The completion's text before the first stop string, its ids, and whether a stop string was hit."""
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [text.index(s) for s in stop if s in text]
    if not hits:
        return text, ids, False
    text = text[: min(hits)]
    return text, ids_before(tokenizer, ids, text), True


def ids_before(tokenizer: Any, ids: Sequence[int], text: str) -> list[int]:
    """The longest prefix of `ids` that decodes within `text` (the reply cut at a stop string).

    The stop string's own tokens are dropped, so a training sequence continues with the
    format's next turn instead of a half-written one.
    """
    keep = len(ids)
    while keep > 0 and len(tokenizer.decode(list(ids[:keep]), skip_special_tokens=True)) > len(text):
        keep -= 1
    return list(ids[:keep])
