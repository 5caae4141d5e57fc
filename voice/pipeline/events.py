"""Typed pipeline events. Every event carries the ``turn_id`` it belongs to.

A turn starts when the user starts speaking (or types a line) and ends when the assistant's
answer has been played, cancelled or failed. Order within one turn::

    UserSpeechStarted -> UserSpeechStopped -> TranscriptFinal -> LlmDelta* -> TtsChunk* / AudioOut*
    -> PlaybackStarted -> LlmDone -> PlaybackDone -> TurnMetrics
    (BargeIn -> TurnCancelled may end a turn early; Error may appear anywhere)

``StatusChanged`` tells a UI whether the assistant is listening, thinking or speaking. Times
(``t``) are ``time.monotonic()`` seconds when the event was made. Events are frozen: consumers
(terminal UI, WebSocket server, tests) may keep them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Status = Literal["listening", "thinking", "speaking", "muted", "stopped"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class: the turn this belongs to and when it happened."""

    turn_id: int
    t: float = field(default_factory=time.monotonic, compare=False)

    @property
    def type(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, kw_only=True)
class StatusChanged(Event):
    status: Status


@dataclass(frozen=True, kw_only=True)
class UserSpeechStarted(Event):
    """The VAD heard the user start speaking."""


@dataclass(frozen=True, kw_only=True)
class UserSpeechStopped(Event):
    """The VAD decided the user's turn ended (after the silence hang-over)."""

    duration_s: float


@dataclass(frozen=True, kw_only=True)
class TranscriptFinal(Event):
    """What the user said (or typed: ``source == "text"``)."""

    text: str
    source: Literal["speech", "text"] = "speech"
    language: str | None = None


@dataclass(frozen=True, kw_only=True)
class LlmDelta(Event):
    text: str


@dataclass(frozen=True, kw_only=True)
class LlmDone(Event):
    """The whole answer as generated (what was spoken may be less: see PlaybackDone)."""

    text: str


@dataclass(frozen=True, kw_only=True)
class TtsChunk(Event):
    """A piece of speech synthesized for ``text``."""

    text: str
    index: int
    samples: int
    sample_rate: int


@dataclass(frozen=True, kw_only=True)
class AudioOut(Event):
    """Audio handed to the sink, at the sink's sample rate."""

    audio: np.ndarray = field(compare=False, repr=False)
    sample_rate: int
    text: str


@dataclass(frozen=True, kw_only=True)
class PlaybackStarted(Event):
    """The sink played the first sample of this turn's answer."""


@dataclass(frozen=True, kw_only=True)
class PlaybackDone(Event):
    """Everything written for this turn has been played."""

    spoken_text: str


@dataclass(frozen=True, kw_only=True)
class BargeIn(Event):
    """The user spoke over the assistant: output was cleared at ``t``."""

    played_text: str


@dataclass(frozen=True, kw_only=True)
class TurnCancelled(Event):
    """The turn's answer was stopped; memory keeps only ``spoken_text``."""

    reason: str
    spoken_text: str


@dataclass(frozen=True, kw_only=True)
class TurnMetrics(Event):
    """Latencies of one turn in seconds (None = did not happen). The headline is
    ``from_silence_s``: the user's last voiced frame (before the VAD's hang-over) -> the first
    answer sample reaching the device or the socket (None for typed turns and push-to-talk). The
    others run from the end of the user's turn (the VAD's decision, ``vad.min_silence_ms`` after
    the last voiced frame, or a typed line submitted); ``voice_to_voice_s`` is that decision ->
    the first sample, the secondary figure."""

    transcript_s: float | None
    first_token_s: float | None
    first_audio_s: float | None
    voice_to_voice_s: float | None
    total_s: float | None
    source: Literal["speech", "text"] = "speech"
    #: The last voiced frame as heard (before the hang-over) -> first sample played.
    from_silence_s: float | None = None
    #: Stage durations measured inside this turn.
    asr_s: float | None = None
    llm_first_token_s: float | None = None
    tts_first_chunk_s: float | None = None
    #: llama.cpp's timings of the answer: prompt tokens evaluated (prefilled) and reused from
    #: the slot's cache (None when the server sent none). A warm conversation prefills only
    #: the new tokens: the question (and its context), the previous answer's end.
    llm_prompt_tokens: int | None = None
    llm_cached_tokens: int | None = None
    llm_prompt_s: float | None = None
    cancelled: bool = False
    #: The answer was generated during the VAD's hang-over, before the turn was confirmed, and
    #: released when it was (its first token and first audio then count as 0 after the end).
    preemptive: bool = False

    def as_dict(self) -> dict[str, float | int | str | bool | None]:
        return {
            "turn_id": self.turn_id,
            "source": self.source,
            "transcript_s": self.transcript_s,
            "first_token_s": self.first_token_s,
            "first_audio_s": self.first_audio_s,
            "voice_to_voice_s": self.voice_to_voice_s,
            "total_s": self.total_s,
            "from_silence_s": self.from_silence_s,
            "asr_s": self.asr_s,
            "llm_first_token_s": self.llm_first_token_s,
            "tts_first_chunk_s": self.tts_first_chunk_s,
            "llm_prompt_tokens": self.llm_prompt_tokens,
            "llm_cached_tokens": self.llm_cached_tokens,
            "llm_prompt_s": self.llm_prompt_s,
            "cancelled": self.cancelled,
            "preemptive": self.preemptive,
        }


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """A stage failed for this turn; the conversation goes on."""

    stage: str
    message: str


class Listeners:
    """Callbacks called synchronously with every event, in the order added (keep them quick);
    one that raises is logged and the others still get the event."""

    def __init__(self) -> None:
        self._fns: list[Callable[[Event], None]] = []

    def add(self, fn: Callable[[Event], None]) -> None:
        self._fns.append(fn)

    def send(self, event: Event) -> None:
        if log.isEnabledFor(logging.DEBUG) and not isinstance(event, (AudioOut, LlmDelta)):
            log.debug("event %r", event)
        for fn in self._fns:
            try:
                fn(event)
            except Exception:  # a broken listener must not stop the conversation
                log.exception("event listener failed")
