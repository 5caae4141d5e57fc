"""What a transcriber returns, and the interface every speech recogniser implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Segment:
    """A stretch of recognised text with its start and end in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """The text of one piece of audio. Silence gives ``text == ""`` and no segments."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None
    duration_s: float = 0.0
    model: str = ""
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text. ``audio`` is float32 mono at 16 kHz.

    ``live=True`` asks for the low-latency settings used for conversation turns; the default
    asks for the accurate settings used for files. ``language`` overrides the configured one.
    """

    async def transcribe(
        self, audio: np.ndarray, *, live: bool = False, language: str | None = None
    ) -> Transcript: ...

    def transcribe_sync(
        self, audio: np.ndarray, *, live: bool = False, language: str | None = None
    ) -> Transcript: ...
