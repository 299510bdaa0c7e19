"""Engines: one interface for generating replies, several backends.

`TransformersEngine` imports torch only when constructed, so importing this package stays light.
"""

from trainer.engines.base import Engine, EngineError, Generation, SamplingParams
from trainer.engines.chat_format import PLAIN_STOP, ChatFormat, ChatRenderer, render_plain
from trainer.engines.openai_engine import OpenAIEngine
from trainer.engines.transformers_engine import TransformersEngine

__all__ = [
    "PLAIN_STOP",
    "ChatFormat",
    "ChatRenderer",
    "Engine",
    "EngineError",
    "Generation",
    "OpenAIEngine",
    "SamplingParams",
    "TransformersEngine",
    "render_plain",
]
