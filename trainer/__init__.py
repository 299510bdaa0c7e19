"""Rollouts, engines, evaluation (and, with the trainer issue, GRPO-family learning)."""

from trainer.engines import (
    Engine,
    EngineError,
    Generation,
    OpenAIEngine,
    SamplingParams,
    TransformersEngine,
)
from trainer.evaluate import (
    EnvSummary,
    EvalReport,
    EvalTarget,
    evaluate,
    report_table,
    targets_from_ids,
    targets_from_suite,
)
from trainer.models import DEFAULT_MODEL, ModelNotFoundError, cache_dir, ensure_default_model, resolve_model
from trainer.rollout import EpisodeResult, play_episode

__all__ = [
    "DEFAULT_MODEL",
    "Engine",
    "EngineError",
    "EnvSummary",
    "EpisodeResult",
    "EvalReport",
    "EvalTarget",
    "Generation",
    "ModelNotFoundError",
    "OpenAIEngine",
    "SamplingParams",
    "TransformersEngine",
    "cache_dir",
    "ensure_default_model",
    "evaluate",
    "play_episode",
    "report_table",
    "resolve_model",
    "targets_from_ids",
    "targets_from_suite",
]
