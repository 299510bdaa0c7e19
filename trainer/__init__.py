"""Rollouts, engines, evaluation, and GRPO-family training.

The training names (`train`, `TrainConfig`, ...) need torch; they are imported on first use,
so `import trainer` stays light for the evaluator against OpenAI-compatible endpoints.
"""

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

_TRAINING = {
    "TrainConfig": "trainer.config",
    "TrainConfigError": "trainer.config",
    "train": "trainer.grpo",
    "TrainResult": "trainer.grpo",
    "TrainingError": "trainer.grpo",
    "RolloutCollector": "trainer.rollouts",
    "RolloutGroup": "trainer.rollouts",
    "Trajectory": "trainer.rollouts",
    "TokenLog": "trainer.rollout",
    "group_advantages": "trainer.advantages",
    "LossSettings": "trainer.losses",
    "policy_loss": "trainer.losses",
    "token_weights": "trainer.losses",
    "Learner": "trainer.learner",
    "TrainSequence": "trainer.learner",
    "Checkpoints": "trainer.checkpoint",
    "CheckpointError": "trainer.checkpoint",
}


def __getattr__(name: str) -> object:
    if name in _TRAINING:
        import importlib

        return getattr(importlib.import_module(_TRAINING[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")


__all__ = [
    *_TRAINING,
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
