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
import numbers
from collections.abc import Mapping
from typing import Any

from rewards.types import Message, Sample, Score


def jsonable(value: Any) -> Any:
    """`value` made JSON-safe: NaN and infinities become None, numpy (or torch) numbers and
    arrays plain numbers and lists, dataclasses dicts, tuples lists, anything unknown its
    `str`. Reward `info` may hold any of these."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, numbers.Integral):  # numpy integers register here
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return jsonable(float(value))
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
    tolist = getattr(value, "tolist", None)  # numpy's bool_ and arrays, torch tensors
    if callable(tolist):
        try:
            return jsonable(tolist())
        except Exception:  # a look-alike with another tolist: fall back to str
            pass
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


def _number(what: str, x: Any) -> float:
    if isinstance(x, str | bytes):
        raise ValueError(f"{what} is {x!r}, not a number")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {x!r} ({type(x).__name__}), not a number") from None


def plain_score(score: Any) -> Score:
    """`score` with plain Python numbers in `value`, `components` and `passed` (a reward may
    hand back numpy's, which JSON cannot take), so it can go on the wire as it is.

    Raises ValueError naming the field for what cannot be a score: an infinite value (NaN
    is "no value" and stays), a value or component that is not a number, a `passed` that
    is not a bool, or something that is not a `Score` at all.
    """
    if not isinstance(score, Score):
        raise ValueError(f"returned {type(score).__name__}, not a Score")
    value, components, passed, error = score.value, score.components, score.passed, score.error
    if (
        type(value) is float
        and not math.isinf(value)
        and (passed is None or type(passed) is bool)
        and (error is None or type(error) is str)
        and all(type(k) is str and type(v) is float for k, v in components.items())
    ):
        return score  # already plain: the common case costs one pass over the fields
    value = _number("the value", value)
    if math.isinf(value):
        raise ValueError(f"returned the non-finite value {value!r}")
    plain_components = {str(k): _number(f"component {k!r}", v) for k, v in components.items()}
    if passed is not None:
        try:
            is_bool = passed in (True, False)  # numpy's bool_ too
        except Exception:  # an array, whose truth is ambiguous
            is_bool = False
        if not is_bool:
            raise ValueError(f"passed is {passed!r} ({type(passed).__name__}), not a bool")
        passed = bool(passed)
    return dataclasses.replace(
        score,
        value=value,
        components=plain_components,
        passed=passed,
        error=None if error is None else str(error),
    )


def score_to_json(score: Score) -> dict[str, Any]:
    """The wire form of a score; non-finite numbers travel as null (see `plain_score` for
    scores that may hold numpy types)."""
    return {
        "value": score.value if math.isfinite(score.value) else None,
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
