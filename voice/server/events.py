"""Typed wire messages of the realtime protocol: one small dataclass per event type.

Client events have ``from_dict`` (strict: wrong types and unknown fields raise
:class:`ProtocolError`); server events have ``to_dict``. Both directions round-trip, so tests and
``scripts/ws_client.py`` can read server events with the same classes. Message order in a turn:

    input_audio_buffer.append*  ->  speech_started, speech_stopped, committed,
    conversation.item.input_audio_transcription.delta*/completed, response.created,
    (response.output_audio_transcript.delta | response.output_audio.delta)*,
    response.output_audio.done, response.output_audio_transcript.done, response.done, voice.metrics
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ProtocolError(Exception):
    """A client event cannot be accepted; becomes an ``error`` server event."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_request",
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.kind = kind


def _check(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against a simple annotation (str/int/float/bool/dict/list/None unions)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check(value, arg, name)
            except ProtocolError:
                continue
        raise ProtocolError(f"'{name}' has the wrong type", code="invalid_type", param=name)
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
    elif origin is list or tp is list:
        if isinstance(value, list):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    expected = getattr(tp, "__name__", str(tp))
    raise ProtocolError(
        f"'{name}' must be of type {expected}, got {type(value).__name__}", code="invalid_type", param=name
    )


class _Event:
    """Shared to/from dict for the event dataclasses below (``TYPE`` is the wire ``type``)."""

    TYPE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none", True):
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        if data.get("type") != cls.TYPE:
            raise ProtocolError(f"expected type {cls.TYPE!r}", code="invalid_type", param="type")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        try:
            for key, value in data.items():
                if key == "type":
                    continue
                if key not in fields:
                    raise ProtocolError(
                        f"unknown parameter '{key}' for {cls.TYPE}", code="unknown_parameter", param=key
                    )
                kwargs[key] = _check(value, hints[key], key)
            for name, f in fields.items():
                if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProtocolError(
                        f"missing required parameter '{name}' for {cls.TYPE}", code="missing_required_parameter", param=name
                    )
        except ProtocolError as err:
            err.event_id = event_id
            raise
        return cls(**kwargs)

    @classmethod
    def is_type(cls, event_type: str) -> bool:
        return event_type == cls.TYPE


# --------------------------------------------------------------------------- client events


@dataclass
class SessionUpdate(_Event):
    """Change instructions, voice, turn detection or audio formats (flat beta or GA shape)."""

    TYPE: ClassVar[str] = "session.update"
    session: dict[str, Any]
    event_id: str | None = None


@dataclass
class InputAudioBufferAppend(_Event):
    """Base64 PCM16 mono audio at the session's input rate."""

    TYPE: ClassVar[str] = "input_audio_buffer.append"
    audio: str
    event_id: str | None = None


@dataclass
class InputAudioBufferCommit(_Event):
    """End the user's turn now (push-to-talk, or turn_detection null)."""

    TYPE: ClassVar[str] = "input_audio_buffer.commit"
    event_id: str | None = None


@dataclass
class InputAudioBufferClear(_Event):
    """Drop audio appended since the last commit."""

    TYPE: ClassVar[str] = "input_audio_buffer.clear"
    event_id: str | None = None


@dataclass
class ConversationItemCreate(_Event):
    """Add a user text message (``item.content[].type == "input_text"``)."""

    TYPE: ClassVar[str] = "conversation.item.create"
    item: dict[str, Any]
    event_id: str | None = None
    previous_item_id: str | None = None


@dataclass
class ResponseCreate(_Event):
    """Ask for an answer to the last user item."""

    TYPE: ClassVar[str] = "response.create"
    event_id: str | None = None
    response: dict[str, Any] | None = None


@dataclass
class ResponseCancel(_Event):
    """Stop the answer in progress."""

    TYPE: ClassVar[str] = "response.cancel"
    event_id: str | None = None
    response_id: str | None = None


@dataclass
class ConversationItemTruncate(_Event):
    """The client played only ``audio_end_ms`` of an assistant item: memory keeps that part."""

    TYPE: ClassVar[str] = "conversation.item.truncate"
    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


CLIENT_EVENTS: dict[str, type[_Event]] = {
    c.TYPE: c
    for c in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ResponseCreate,
        ResponseCancel,
        ConversationItemTruncate,
    )
}


# --------------------------------------------------------------------------- server events


@dataclass
class SessionCreated(_Event):
    TYPE: ClassVar[str] = "session.created"
    event_id: str
    session: dict[str, Any]


@dataclass
class SessionUpdated(_Event):
    TYPE: ClassVar[str] = "session.updated"
    event_id: str
    session: dict[str, Any]


@dataclass
class InputSpeechStarted(_Event):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_started"
    event_id: str
    item_id: str
    audio_start_ms: int


@dataclass
class InputSpeechStopped(_Event):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_stopped"
    event_id: str
    item_id: str
    audio_end_ms: int


@dataclass
class InputAudioBufferCommitted(_Event):
    TYPE: ClassVar[str] = "input_audio_buffer.committed"
    event_id: str
    item_id: str
    previous_item_id: str | None = None


@dataclass
class InputAudioBufferCleared(_Event):
    TYPE: ClassVar[str] = "input_audio_buffer.cleared"
    event_id: str


@dataclass
class InputTranscriptionDelta(_Event):
    TYPE: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    event_id: str
    item_id: str
    delta: str
    content_index: int = 0


@dataclass
class InputTranscriptionCompleted(_Event):
    TYPE: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    event_id: str
    item_id: str
    transcript: str
    content_index: int = 0
    usage: dict[str, Any] = field(default_factory=lambda: {"type": "duration", "seconds": 0.0})


@dataclass
class ConversationItemCreated(_Event):
    TYPE: ClassVar[str] = "conversation.item.created"
    event_id: str
    item: dict[str, Any]
    previous_item_id: str | None = None


@dataclass
class ConversationItemTruncated(_Event):
    TYPE: ClassVar[str] = "conversation.item.truncated"
    event_id: str
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass
class ResponseCreated(_Event):
    TYPE: ClassVar[str] = "response.created"
    event_id: str
    response: dict[str, Any]


@dataclass
class ResponseOutputAudioDelta(_Event):
    TYPE: ClassVar[str] = "response.output_audio.delta"
    event_id: str
    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0


@dataclass
class ResponseOutputAudioDone(_Event):
    TYPE: ClassVar[str] = "response.output_audio.done"
    event_id: str
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


@dataclass
class ResponseTranscriptDelta(_Event):
    TYPE: ClassVar[str] = "response.output_audio_transcript.delta"
    event_id: str
    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0


@dataclass
class ResponseTranscriptDone(_Event):
    TYPE: ClassVar[str] = "response.output_audio_transcript.done"
    event_id: str
    response_id: str
    item_id: str
    transcript: str
    output_index: int = 0
    content_index: int = 0


@dataclass
class ResponseDone(_Event):
    TYPE: ClassVar[str] = "response.done"
    event_id: str
    response: dict[str, Any]


@dataclass
class VoiceMetrics(_Event):
    """voice extension: per-turn latencies in milliseconds (``null`` where a stage did not run) and
    the knowledge-base ``sources`` the answer used (``[{source, score, text}]``; omitted when none)."""

    TYPE: ClassVar[str] = "voice.metrics"
    event_id: str
    response_id: str
    metrics: dict[str, Any]
    sources: list[dict[str, Any]] | None = None


@dataclass
class ErrorEvent(_Event):
    TYPE: ClassVar[str] = "error"
    event_id: str
    error: dict[str, Any]


SERVER_EVENTS: dict[str, type[_Event]] = {
    c.TYPE: c
    for c in (
        SessionCreated,
        SessionUpdated,
        InputSpeechStarted,
        InputSpeechStopped,
        InputAudioBufferCommitted,
        InputAudioBufferCleared,
        InputTranscriptionDelta,
        InputTranscriptionCompleted,
        ConversationItemCreated,
        ConversationItemTruncated,
        ResponseCreated,
        ResponseOutputAudioDelta,
        ResponseOutputAudioDone,
        ResponseTranscriptDelta,
        ResponseTranscriptDone,
        ResponseDone,
        VoiceMetrics,
        ErrorEvent,
    )
}

ServerEvent = _Event
