"""The wire format: samples and scores survive JSON exactly, and a one-turn sample does not
carry its completion twice."""

from __future__ import annotations

import json
import math

import pytest

from rewards import Sample, Score
from rewards.wire import sample_from_json, sample_to_json, score_from_json, score_to_json

SAMPLES = [
    Sample.from_completion("a"),
    Sample.from_completion("a", "r", prompt="p", task_id="t"),
    Sample(messages=({"role": "user", "content": ""}, {"role": "assistant", "content": "a"}), completion="a"),
    Sample(
        messages=(
            {"role": "system", "content": "s"},
            {"role": "user", "content": "p"},
            {"role": "assistant", "content": "a"},
        ),
        completion="a",
    ),
    Sample(
        messages=({"role": "user", "content": "p"}, {"role": "assistant", "content": "b"}), completion="a"
    ),
    Sample(messages=(), completion="a", num_tokens=3, info={"x": [1, 2]}, reference={"tests": ["t"]}),
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_samples_round_trip_through_json(sample: Sample) -> None:
    data = json.loads(json.dumps(sample_to_json(sample)))
    assert sample_from_json(data) == sample


def test_a_one_turn_sample_sends_its_completion_once() -> None:
    data = sample_to_json(Sample.from_completion("the answer", prompt="the question"))
    assert data == {"completion": "the answer", "prompt": "the question"}


def test_scores_round_trip_and_nan_travels_as_null() -> None:
    score = Score(value=0.5, components={"a": 1.0, "b": math.nan}, passed=False, info={"k": (1, 2)})
    data = json.loads(json.dumps(score_to_json(score), allow_nan=False))
    assert data["components"]["b"] is None
    back = score_from_json(data)
    assert back.value == 0.5 and back.passed is False and math.isnan(back.components["b"])
    failed = score_from_json(json.loads(json.dumps(score_to_json(Score.failure("boom")), allow_nan=False)))
    assert failed.error == "boom" and math.isnan(failed.value)
