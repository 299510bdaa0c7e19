"""Cutting a sampled completion at a stop string, in text and in token ids alike.

Engines stop generating once a stop string appears, but the last token sampled may run
past it. Training keeps token ids, not text, so the ids must be cut to match the text:
every engine that samples ids (transformers, vLLM) shares this one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cut_at_stop(
    tokenizer: Any, ids: Sequence[int], stop: Sequence[str], stop_after: Sequence[str] = ()
) -> tuple[str, list[int], bool]:
    """The completion's text and ids up to the first stop string, and whether one was hit.

    A string of `stop` is cut off with what follows; a string of `stop_after` (a tool
    call's closing tag) is kept, and only what follows it is cut.
    """
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.index(s), 0, s) for s in stop if s in text]
    hits += [(text.index(s) + len(s), 1, s) for s in stop_after if s in text]
    if not hits:
        return text, ids, False
    end, keep, _ = min(hits)
    if not keep:
        text = text[:end]
        return text, ids_before(tokenizer, ids, text), True
    kept = ids_through(tokenizer, ids, end)
    return tokenizer.decode(kept, skip_special_tokens=True), kept, True


def ids_before(tokenizer: Any, ids: Sequence[int], text: str) -> list[int]:
    """The longest prefix of `ids` that decodes within `text` (the reply cut at a stop string).

    The stop string's own tokens are dropped, so a training sequence continues with the
    format's next turn instead of a half-written one.
    """
    keep = len(ids)
    while keep > 0 and len(tokenizer.decode(list(ids[:keep]), skip_special_tokens=True)) > len(text):
        keep -= 1
    return list(ids[:keep])


def ids_through(tokenizer: Any, ids: Sequence[int], chars: int) -> list[int]:
    """The shortest prefix of `ids` whose text reaches `chars` characters (a kept stop string
    ends inside its last token, which stays whole: the ids are what was sampled)."""
    keep = 1
    while keep < len(ids) and len(tokenizer.decode(list(ids[:keep]), skip_special_tokens=True)) < chars:
        keep += 1
    return list(ids[:keep])
