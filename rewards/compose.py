"""Weighted composition of rewards."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from rewards.base import Reward
from rewards.types import Sample, Score


class WeightedSum(Reward):
    """value = sum of weight * term value; every term's value and components are reported.

    Components are named after the terms (`math`, `format`, and `math/<component>` for a
    term's own components). A term with weight 0 is a diagnostic: it is reported but never
    moves the value, and its failure does not make the total fail. A failing weighted term
    makes the total an error (NaN value), with the other terms still reported.
    """

    def __init__(self, terms: Sequence[tuple[Reward, float]], name: str = "weighted_sum") -> None:
        if not terms:
            raise ValueError("WeightedSum needs at least one (reward, weight) term")
        names = [reward.name for reward, _ in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"WeightedSum terms must have distinct names; repeated: {duplicates}. "
                "Give each reward instance its own `name`."
            )
        for reward, weight in terms:
            if not math.isfinite(weight):
                raise ValueError(f"weight of {reward.name!r} must be finite, got {weight}")
        self.terms = tuple((reward, float(weight)) for reward, weight in terms)
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        scores = await asyncio.gather(*(reward.score(sample) for reward, _ in self.terms))
        components: dict[str, float] = {}
        info: dict[str, object] = {}
        errors: list[str] = []
        verdicts: list[bool] = []
        value = 0.0
        for (reward, weight), score in zip(self.terms, scores, strict=True):
            components[reward.name] = score.value
            for key, part in score.components.items():
                components[f"{reward.name}/{key}"] = part
            if score.info:
                info[reward.name] = dict(score.info)
            if weight == 0.0:
                if score.error:
                    info.setdefault("diagnostic_errors", []).append(score.error)  # type: ignore[union-attr]
                continue
            if score.error:
                errors.append(score.error)
            else:
                value += weight * score.value
            if score.passed is not None:
                verdicts.append(score.passed)
        passed = all(verdicts) if verdicts else None
        if errors:
            return Score(
                value=math.nan,
                components=components,
                passed=None,
                error="; ".join(errors),
                info=info,
            )
        return Score(value=value, components=components, passed=passed, info=info)
