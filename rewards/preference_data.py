"""Judge-labelled preference pairs: the record format between the judge and the reward model.

Indirect RLAIF in three steps: a judge compares two responses to one prompt, the verdicts
are written here as JSONL (one `PreferenceRecord` per line), and a Bradley–Terry reward
model (`rewards.preference_model`) is trained on them. This module has no torch import, so
collectors and tools can write and read records on a light install.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["A", "B", "tie"]
VERDICTS: tuple[str, ...] = ("A", "B", "tie")
_REQUIRED = ("prompt", "response_a", "response_b", "p_a", "verdict", "consistent")


SOURCES: tuple[str, ...] = ("logprobs", "text", "neutral")


class PreferenceFileError(ValueError):
    """A preference file or record is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class OrderRecord:
    """The judge's answer with the responses shown in one order, stated for the record's A.

    `source` is how it was read: "logprobs" (token probabilities), "text", or "neutral":
    a stand-in tie the judge never gave (its replies could not be read and the
    unparseable policy was "neutral").
    """

    p_a: float
    source: str
    swapped: bool  # B was shown first

    @property
    def stand_in(self) -> bool:
        return self.source == "neutral"


@dataclass(frozen=True)
class PreferenceRecord:
    """One judged pair: which of two responses to `prompt` the judge prefers, and how surely.

    `p_a` is the judge's probability that A is better (a tie counts half), or None when the
    verdict failed; then `error` says why. `consistent` says whether both position orders
    (A first, B first) agreed, or None when only one order was asked. `orders` keeps each
    order's probability and how it was read; a record with a stand-in order (`stand_in`)
    carries no judgement of its own and is not a training label.
    """

    prompt: str
    response_a: str
    response_b: str
    p_a: float | None
    verdict: Verdict | None
    consistent: bool | None
    judge: str = ""
    error: str | None = None
    task_id: str = ""
    orders: tuple[OrderRecord, ...] = ()

    def __post_init__(self) -> None:
        problem = _check(self)
        if problem:
            raise PreferenceFileError(problem)

    @property
    def ok(self) -> bool:
        """Usable as a training label: no error and a probability to learn from."""
        return self.error is None and self.p_a is not None

    @property
    def stand_in(self) -> bool:
        """Some order's verdict was a stand-in (an unreadable reply taken as a tie), not the judge's."""
        return any(o.stand_in for o in self.orders)

    @property
    def winner(self) -> Verdict | None:
        """The judge's decision: `verdict` when given, else read off `p_a` (None if neither)."""
        if self.verdict is not None:
            return self.verdict
        if self.p_a is None:
            return None
        return "A" if self.p_a > 0.5 else "B" if self.p_a < 0.5 else "tie"

    def swapped(self) -> PreferenceRecord:
        """The same judgement with A and B exchanged (for position-bias checks and augmentation)."""
        verdict = {"A": "B", "B": "A", "tie": "tie", None: None}[self.verdict]
        return PreferenceRecord(
            prompt=self.prompt,
            response_a=self.response_b,
            response_b=self.response_a,
            p_a=None if self.p_a is None else 1.0 - self.p_a,
            verdict=verdict,  # type: ignore[arg-type]
            consistent=self.consistent,
            judge=self.judge,
            error=self.error,
            task_id=self.task_id,
            orders=tuple(OrderRecord(1.0 - o.p_a, o.source, not o.swapped) for o in self.orders),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One JSONL line (no trailing newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "record") -> PreferenceRecord:
        """A record from parsed JSON; unknown keys are ignored, problems raise naming `where`."""
        if not isinstance(data, Mapping):
            raise PreferenceFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise PreferenceFileError(f"{where}: missing field(s) {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("judge", "task_id"):
            if values.get(name) is None:
                values.pop(name, None)
        p_a = values["p_a"]
        if isinstance(p_a, int) and not isinstance(p_a, bool):
            values["p_a"] = float(p_a)
        if values.get("orders") is None:
            values.pop("orders", None)
        else:
            values["orders"] = _orders(values["orders"], where)
        try:
            return cls(**values)
        except PreferenceFileError as exc:
            raise PreferenceFileError(f"{where}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, where: str = "record") -> PreferenceRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PreferenceFileError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        return cls.from_dict(data, where=where)


def _orders(raw: Any, where: str) -> tuple[OrderRecord, ...]:
    """`orders` from JSON: a list of {p_a, source, swapped} objects."""
    if not isinstance(raw, list | tuple):
        raise PreferenceFileError(f"{where}: orders must be a list, got {type(raw).__name__}")
    orders = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"p_a", "source", "swapped"}:
            raise PreferenceFileError(f"{where}: orders[{i}] must be an object with p_a, source and swapped")
        p_a = item["p_a"]
        orders.append(
            OrderRecord(
                float(p_a) if isinstance(p_a, int) and not isinstance(p_a, bool) else p_a,
                item["source"],
                item["swapped"],
            )
        )
    return tuple(orders)


def _check(record: PreferenceRecord) -> str | None:
    """What is wrong with a record, or None."""
    for name in ("prompt", "response_a", "response_b", "judge", "task_id"):
        value = getattr(record, name)
        if not isinstance(value, str):
            return f"{name} must be a string, got {type(value).__name__}"
    p_a = record.p_a
    if p_a is not None:
        if isinstance(p_a, bool) or not isinstance(p_a, float | int):
            return f"p_a must be a number in [0, 1] or null, got {type(p_a).__name__}"
        if math.isnan(p_a) or not 0.0 <= p_a <= 1.0:
            return f"p_a must be in [0, 1], got {p_a!r}"
    if record.verdict is not None and record.verdict not in VERDICTS:
        return f"verdict must be one of 'A', 'B', 'tie' or null, got {record.verdict!r}"
    if record.consistent is not None and not isinstance(record.consistent, bool):
        return f"consistent must be true, false or null, got {record.consistent!r}"
    if record.error is not None and not isinstance(record.error, str):
        return f"error must be a string or null, got {type(record.error).__name__}"
    for i, order in enumerate(record.orders):
        if not isinstance(order, OrderRecord):
            return f"orders[{i}] must be an OrderRecord, got {type(order).__name__}"
        if isinstance(order.p_a, bool) or not isinstance(order.p_a, float) or not 0.0 <= order.p_a <= 1.0:
            return f"orders[{i}].p_a must be a number in [0, 1], got {order.p_a!r}"
        if order.source not in SOURCES:
            return f"orders[{i}].source must be one of {SOURCES}, got {order.source!r}"
        if not isinstance(order.swapped, bool):
            return f"orders[{i}].swapped must be true or false, got {order.swapped!r}"
    return None


def write_preferences(
    path: str | os.PathLike[str], records: Iterable[PreferenceRecord], *, append: bool = False
) -> int:
    """Write records as JSONL, one per line; returns how many were written.

    `append=True` adds to an existing file, so a collector can write as verdicts arrive.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        for record in records:
            if not isinstance(record, PreferenceRecord):
                raise TypeError(f"expected PreferenceRecord, got {type(record).__name__}")
            handle.write(record.to_json() + "\n")
            count += 1
    return count


def read_preferences(path: str | os.PathLike[str]) -> list[PreferenceRecord]:
    """All records in a JSONL file (blank lines skipped); a bad line raises naming file:line."""
    # Imported here, not at module top: envs imports rewards, so a top-level import would
    # make `rewards` depend on `envs` being importable first.
    from envs.tasks import jsonl_lines

    path = Path(path)
    if not path.is_file():
        raise PreferenceFileError(f"preference file not found: {path}")
    return [
        PreferenceRecord.from_dict(data, where=where)
        for where, _, data in jsonl_lines(path, PreferenceFileError)
    ]


def _prompt_rank(prompt: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x00{prompt}".encode()).hexdigest()


def split_by_prompt(
    records: Sequence[PreferenceRecord], eval_fraction: float, seed: int = 0
) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """(train, eval) with every prompt on exactly one side, so eval measures unseen prompts.

    Prompts are ordered by a seeded hash and the first `round(eval_fraction * n_prompts)` go
    to eval (at least one, and at least one left for training, when there are two or more
    prompts and the fraction is above 0). Deterministic for a given seed, independent of
    record order, and adding prompts moves few old ones across the split.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    prompts = sorted({r.prompt for r in records}, key=lambda p: _prompt_rank(p, seed))
    n_eval = round(eval_fraction * len(prompts))
    if eval_fraction > 0 and len(prompts) >= 2:
        n_eval = min(max(n_eval, 1), len(prompts) - 1)
    held_out = set(prompts[:n_eval])
    train = [r for r in records if r.prompt not in held_out]
    evaluation = [r for r in records if r.prompt in held_out]
    return train, evaluation
