"""Which judge to ask and how: one settings object for configs, the CLI and the reward server.

A training config, an environment's keyword arguments or `rewardgym serve` name a judge
as a plain mapping (`{base_url = "...", model = "...", api = "completions"}`); this turns
it into a client and judges, with unknown keys rejected by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rewards.judges.asking import Unparseable, check_policy
from rewards.judges.client import JudgeClient, JudgeSampling
from rewards.judges.pairwise import PairwiseJudge
from rewards.judges.pointwise import PointwiseJudge, ReferenceJudge
from rewards.judges.prompts import DEFAULT_CONSTITUTION, pairwise_prompt


@dataclass(frozen=True)
class JudgeConfig:
    """An OpenAI-compatible judge endpoint and how to question it.

    `api="completions"` with `few_shot=True` is the set-up for base models (the embedded
    Gemma 270M behind `rewardgym serve-model`); an instruction-tuned judge (vLLM serve, a
    hosted API) uses `api="chat"`.
    """

    base_url: str
    model: str
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the bearer token, if any
    timeout_s: float = 60.0  # per HTTP attempt
    max_attempts: int = 4
    max_concurrency: int = 16
    cache_dir: str | None = None  # on-disk cache of replies; None: no cache
    constitution: str = DEFAULT_CONSTITUTION  # the principle (or rubric) the judge applies
    few_shot: bool = True
    ties: bool = True
    top_logprobs: int = 10  # 0: never ask for token probabilities; at most 20 (the OpenAI API's cap)
    temperature: float = 0.0  # greedy: the same question, the same verdict (and cacheable)
    max_tokens: int = 8  # a verdict is a token or two; chat judges that explain need more
    seed: int | None = None  # with temperature > 0, a fixed seed keeps verdicts reproducible and cached
    on_unparseable: Unparseable = "resample"
    resamples: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must be an http(s) URL, got {self.base_url!r}")
        if self.api not in ("chat", "completions"):
            raise ValueError(f"judge api must be 'chat' or 'completions', got {self.api!r}")
        _check_int("top_logprobs", self.top_logprobs, low=0, high=20)
        _check_int("max_tokens", self.max_tokens, low=1)
        _check_int("max_concurrency", self.max_concurrency, low=1)
        _check_int("max_attempts", self.max_attempts, low=1)
        _check_int("resamples", self.resamples, low=0)
        if self.seed is not None:
            _check_int("seed", self.seed, low=0)
        _check_number("temperature", self.temperature, positive=False)
        _check_number("timeout_s", self.timeout_s, positive=True)
        check_policy(self.on_unparseable, self.resamples)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "judge") -> JudgeConfig:
        """From a config table; unknown or missing keys are named in the error."""
        if isinstance(data, JudgeConfig):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a table of judge settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown judge settings {unknown}; known: {sorted(known)}")
        missing = sorted({"base_url", "model"} - set(data))
        if missing:
            raise ValueError(f"{where}: missing judge settings {missing}")
        return cls(**data)

    @property
    def sampling(self) -> JudgeSampling:
        return JudgeSampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_logprobs=self.top_logprobs,
            seed=self.seed,
        )

    def client(self) -> JudgeClient:
        return JudgeClient.from_endpoint(
            self.base_url,
            self.model,
            api=self.api,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            max_concurrency=self.max_concurrency,
            cache_dir=self.cache_dir,
        )

    def pairwise(self, client: JudgeClient | None = None) -> PairwiseJudge:
        return PairwiseJudge(
            client or self.client(),
            prompt=pairwise_prompt(self.constitution, few_shot=self.few_shot, ties=self.ties),
            ties=self.ties,
            sampling=self.sampling,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )

    def pointwise(self, *, low: int = 1, high: int = 9, client: JudgeClient | None = None) -> PointwiseJudge:
        return PointwiseJudge(
            client or self.client(),
            rubric=self.constitution,
            low=low,
            high=high,
            few_shot=self.few_shot,
            sampling=self.sampling,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )

    def reference(self, client: JudgeClient | None = None) -> ReferenceJudge:
        return ReferenceJudge(
            client or self.client(),
            few_shot=self.few_shot,
            sampling=self.sampling,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )


def _check_int(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    """A whole number in [low, high]; the error names the setting and the allowed range."""
    allowed = f"from {low} to {high}" if high is not None else f"{low} or more"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"judge {name} must be a whole number {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"judge {name} must be {allowed}, got {value}")


def _check_number(name: str, value: Any, *, positive: bool) -> None:
    """A finite number, > 0 when `positive`, else >= 0."""
    allowed = "a number > 0" if positive else "a number >= 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"judge {name} must be {allowed}, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"judge {name} must be {allowed}, got {value}")
