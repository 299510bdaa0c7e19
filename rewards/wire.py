"""Samples and scores as JSON: the one wire format of the reward server and its client.

A sample on the wire is `{"completion": str, "messages"?: [chat message], "prompt"?: str,
"reference"?: any, "task_id"?: str, "info"?: {}, "num_tokens"?: int}`; without `messages`,
the conversation is the optional `prompt` as a user turn plus the completion. A score is
`{"value": float | null, "components": {name: float | null}, "passed": bool | null,
"error": str | null, "info": {}}`, where null stands for NaN (JSON has no NaN): an error
item has a null value, never a 0.

Plain functions over dicts, no pydantic, so the client needs nothing beyond httpx.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

from rewards.types import Message, Sample, Score


def jsonable(value: Any) -> Any:
    """`value` made JSON-safe: NaN and infinities become None, dataclasses dicts, tuples
    lists, anything unknown its `str`. Reward `info` may hold any of these."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _one_turn_fields(sample: Sample) -> dict[str, str] | None:
    """`{}` or `{"prompt": ...}` when the transcript is just (a user prompt and) the
    completion, which the wire then carries once instead of twice; None otherwise."""
    messages = sample.messages
    if not messages or messages[-1] != {"role": "assistant", "content": sample.completion}:
        return None
    if len(messages) == 1:
        return {}
    first = messages[0]
    if len(messages) == 2 and first.keys() == {"role", "content"} and first["role"] == "user":
        return {"prompt": first["content"]} if isinstance(first["content"], str) else None
    return None


def sample_to_json(sample: Sample) -> dict[str, Any]:
    """The wire form of a sample (fields at their defaults are left out)."""
    data: dict[str, Any] = {"completion": sample.completion}
    one_turn = _one_turn_fields(sample)
    if one_turn is None:
        data["messages"] = jsonable(list(sample.messages))
    else:
        data.update(one_turn)
    if sample.reference is not None:
        data["reference"] = jsonable(sample.reference)
    if sample.task_id:
        data["task_id"] = sample.task_id
    if sample.info:
        data["info"] = jsonable(sample.info)
    if sample.num_tokens is not None:
        data["num_tokens"] = sample.num_tokens
    return data


def sample_from_json(data: Mapping[str, Any]) -> Sample:
    """A sample from its (already validated) wire form."""
    completion = data["completion"]
    messages: list[Message] | None = data.get("messages")
    if messages is None:
        messages = []
        if data.get("prompt") is not None:
            messages.append({"role": "user", "content": data["prompt"]})
        messages.append({"role": "assistant", "content": completion})
    return Sample(
        messages=tuple(messages),
        completion=completion,
        reference=data.get("reference"),
        task_id=data.get("task_id") or "",
        info=data.get("info") or {},
        num_tokens=data.get("num_tokens"),
    )


def score_to_json(score: Score) -> dict[str, Any]:
    return {
        "value": None if math.isnan(score.value) else score.value,
        "components": {k: (v if math.isfinite(v) else None) for k, v in score.components.items()},
        "passed": score.passed,
        "error": score.error,
        "info": jsonable(score.info),
    }


def score_from_json(data: Mapping[str, Any]) -> Score:
    value = data.get("value")
    components = data.get("components") or {}
    return Score(
        value=math.nan if value is None else float(value),
        components={k: (math.nan if v is None else float(v)) for k, v in components.items()},
        passed=data.get("passed"),
        error=data.get("error"),
        info=data.get("info") or {},
    )
