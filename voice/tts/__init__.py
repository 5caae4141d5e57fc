"""Text to speech: one engine interface (piper, chattts, chatterbox) and the speech chunker.

See :mod:`voice.tts.base` for the contract engines follow.
"""

from __future__ import annotations

from voice.tts.base import (
    ENGINES,
    AudioChunk,
    CancelToken,
    TTSEngine,
    create_engine,
    engine_names,
    synthesize,
)

__all__ = [
    "ENGINES",
    "AudioChunk",
    "CancelToken",
    "TTSEngine",
    "create_engine",
    "engine_names",
    "synthesize",
]
