"""Sans-I/O core of the realtime protocol: client messages in, server events and commands out.

:class:`RealtimeProtocol` never touches a socket, a clock or a model. The asyncio shell
(:mod:`voice.server.session`) feeds it each WebSocket message with :meth:`receive` and gets back
server events to send plus :class:`Command` objects to carry out on the conversation pipeline;
pipeline progress goes back in through the ``on_*`` methods, which return the events to send.
Every bad message becomes an ``error`` event carrying the client's ``event_id``; nothing raises.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voice.pipeline.turns import PlaybackLedger
from voice.server import events as ev
from voice.server.events import ProtocolError
from voice.server.settings import SessionSettings, apply_session_update, check_instructions

#: Most PCM16 audio one session may hold uncommitted with turn detection off (seconds).
MAX_BUFFER_S = 120.0
#: A commit needs at least this much audio (OpenAI: 100 ms).
MIN_COMMIT_MS = 100
#: At most this many sources per answer in ``voice.metrics``, each with this many characters of text.
MAX_SOURCES = 8
MAX_SOURCE_TEXT = 300


def source_list(passages: Sequence[Any]) -> list[dict[str, Any]]:
    """One entry per source file (its best passage), best first, bounded by the limits above."""
    best: dict[str, Any] = {}
    for p in passages:
        if p.source not in best or p.score > best[p.source].score:
            best[p.source] = p
    ranked = sorted(best.values(), key=lambda p: -p.score)[:MAX_SOURCES]
    return [{"source": p.source, "score": round(float(p.score), 3), "text": " ".join(p.text.split())[:MAX_SOURCE_TEXT]}
            for p in ranked]


def decode_client_event(text: str, max_bytes: int) -> tuple[dict[str, Any], str | None, Any]:
    """A text message -> (its JSON object, its event_id, its client event class), or ProtocolError."""
    if len(text) > max_bytes:
        raise ProtocolError("message too large", code="message_too_large")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ProtocolError("a client event must be a JSON object", code="invalid_event")
    event_id = data.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolError("'event_id' must be a string", code="invalid_type", param="event_id")
    if event_id is not None and len(event_id) > 512:
        raise ProtocolError("'event_id' is too long", code="invalid_value", param="event_id")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing or invalid 'type'", code="invalid_event", param="type", event_id=event_id)
    cls = ev.CLIENT_EVENTS.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown or unsupported event type {kind[:80]!r}", code="unknown_event",
                            param="type", event_id=event_id)
    return data, event_id, cls


def parse_user_item(item: dict[str, Any], prefix: str) -> tuple[str | None, str]:
    """A client's user message item -> (its id, None = make one; its text), or ProtocolError."""
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise ProtocolError("only user messages can be created (item.type=message, item.role=user)",
                            code="invalid_value", param="item")
    for key in item:
        if key not in ("type", "role", "content", "id", "object", "status"):
            raise ProtocolError(f"unknown parameter 'item.{key}'", code="unknown_parameter", param=f"item.{key}")
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise ProtocolError("'item.content' must be a non-empty list", code="invalid_value", param="item.content")
    parts: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(part.get("text"), str):
            raise ProtocolError("only input_text content parts are supported", code="invalid_value",
                                param=f"item.content[{i}]")
        parts.append(part["text"])
    text = " ".join(p.strip() for p in parts).strip()
    if not text:
        raise ProtocolError("the message text is empty", code="invalid_value", param="item.content")
    if len(text) > 8192:
        raise ProtocolError("the message text is too long (max 8192 characters)", code="invalid_value",
                            param="item.content")
    given = item.get("id")
    if isinstance(given, str) and re.fullmatch(rf"item_{re.escape(prefix)}\d+", given):
        # the server makes ids of this form: taking one would give two items the same id
        raise ProtocolError("'item.id' must not be of the form the server uses for its own items",
                            code="invalid_value", param="item.id")
    return (given if isinstance(given, str) and 0 < len(given) <= 64 else None), text


# --------------------------------------------------------------------------- commands


@dataclass
class Command:
    """Something the shell must do on the pipeline."""


@dataclass
class AppendAudio(Command):
    pcm: bytes
    sample_rate: int


@dataclass
class CommitAudio(Command):
    item_id: str
    #: Ask for an answer right away (server VAD on and create_response).
    respond: bool


@dataclass
class ClearAudio(Command):
    pass


@dataclass
class UserText(Command):
    item_id: str
    text: str


@dataclass
class CreateResponse(Command):
    response_id: str
    item_id: str
    instructions: str | None = None


@dataclass
class CancelResponse(Command):
    response_id: str


@dataclass
class TruncateAssistant(Command):
    item_id: str
    audio_end_ms: int
    spoken_text: str


@dataclass
class UpdateSettings(Command):
    settings: SessionSettings


Outgoing = ev.ServerEvent | bytes


@dataclass
class _Response:
    response_id: str
    item_id: str
    transcript: list[str] = field(default_factory=list)


@dataclass
class _Spoken:
    """The last assistant item, for conversation.item.truncate: its audio is what the answer
    wrote to the sink (``played``: samples at ``rate`` and the text they speak)."""

    item_id: str
    played: PlaybackLedger
    rate: int

    @property
    def audio_ms(self) -> float:
        return self.played.written * 1000 / self.rate


class RealtimeProtocol:
    """One realtime session's protocol state (see docs/protocol.md)."""

    def __init__(
        self,
        *,
        settings: SessionSettings | None = None,
        voices: Sequence[str] = ("default",),
        max_message_bytes: int = 1 << 20,
        max_instructions: int = 4096,
        id_prefix: str = "",
    ) -> None:
        self.settings = settings or SessionSettings(voice=voices[0] if voices else "default")
        self.voices = tuple(voices)
        self.max_message_bytes = max_message_bytes
        self.max_instructions = max_instructions
        self._prefix = id_prefix
        self._counter = 0
        self._buffered_bytes = 0
        self._user_item: str | None = None  # item id announced by speech_started
        self._last_user_item: str | None = None
        self._pending_user_item: str | None = None  # committed or created, not yet answered
        self._response: _Response | None = None
        self._spoken: dict[str, _Spoken] = {}
        self._audio_started = False
        self.errors = 0

    # ------------------------------------------------------------------ ids and helpers

    def _id(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}_{self._prefix}{self._counter}"

    def error(self, message: str, *, code: str = "invalid_request", param: str | None = None,
              event_id: str | None = None, kind: str = "invalid_request_error") -> ev.ErrorEvent:
        """An ``error`` server event (also used by the shell for server-side failures)."""
        self.errors += 1
        err: dict[str, Any] = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
        return ev.ErrorEvent(event_id=self._id("event"), error=err)

    def _bytes_per_ms_in(self) -> float:
        return self.settings.input_rate * 2 / 1000.0

    @property
    def response_active(self) -> bool:
        return self._response is not None

    @property
    def response_id(self) -> str | None:
        return self._response.response_id if self._response else None

    # ------------------------------------------------------------------ client -> server

    def start(self) -> list[Outgoing]:
        """The first event of every session."""
        return [ev.SessionCreated(event_id=self._id("event"), session=self.settings.to_dict())]

    def receive(self, message: str | bytes) -> list[Outgoing | Command]:
        """One WebSocket message (text = JSON event, bytes = raw PCM16 when negotiated)."""
        try:
            if isinstance(message, bytes):
                return self._receive_binary(message)
            return self._receive_text(message)
        except ProtocolError as err:
            return [self.error(err.message, code=err.code, param=err.param, event_id=err.event_id, kind=err.kind)]

    def _receive_binary(self, data: bytes) -> list[Outgoing | Command]:
        if not self.settings.binary_audio:
            raise ProtocolError(
                "binary frames need session.voice_binary_audio = true (or the voice.pcm16 subprotocol)",
                code="binary_not_negotiated",
            )
        return self._append(data)

    def _receive_text(self, text: str) -> list[Outgoing | Command]:
        data, event_id, cls = decode_client_event(text, self.max_message_bytes)
        try:
            event = cls.from_dict(data)
            return self._handle(event)
        except ProtocolError as err:
            err.event_id = event_id
            raise

    def _handle(self, event: Any) -> list[Outgoing | Command]:
        if isinstance(event, ev.InputAudioBufferAppend):
            return self._append_b64(event.audio)
        if isinstance(event, ev.SessionUpdate):
            self.settings = apply_session_update(
                self.settings, event.session, voices=self.voices, audio_started=self._audio_started,
                max_instructions=self.max_instructions,
            )
            return [ev.SessionUpdated(event_id=self._id("event"), session=self.settings.to_dict()),
                    UpdateSettings(self.settings)]
        if isinstance(event, ev.InputAudioBufferCommit):
            return self._commit()
        if isinstance(event, ev.InputAudioBufferClear):
            self._buffered_bytes = 0
            return [ev.InputAudioBufferCleared(event_id=self._id("event")), ClearAudio()]
        if isinstance(event, ev.ConversationItemCreate):
            return self._create_item(event)
        if isinstance(event, ev.ResponseCreate):
            return self._create_response(event)
        if isinstance(event, ev.ResponseCancel):
            if self._response is None:
                raise ProtocolError("there is no response in progress to cancel", code="response_cancel_not_active")
            if event.response_id is not None and event.response_id != self._response.response_id:
                raise ProtocolError("'response_id' is not the response in progress", code="invalid_value",
                                    param="response_id")
            return [CancelResponse(self._response.response_id)]
        if isinstance(event, ev.ConversationItemTruncate):
            return self._truncate(event)
        raise ProtocolError("unsupported event", code="unknown_event")  # pragma: no cover - table above

    def _append_b64(self, audio: str) -> list[Outgoing | Command]:
        if len(audio) > self.max_message_bytes:
            raise ProtocolError("audio chunk too large", code="message_too_large", param="audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("'audio' is not valid base64", code="invalid_value", param="audio") from None
        return self._append(pcm)

    def _append(self, pcm: bytes) -> list[Outgoing | Command]:
        if len(pcm) % 2:
            raise ProtocolError("PCM16 audio must have an even number of bytes", code="invalid_audio", param="audio")
        if not pcm:
            return []
        limit = MAX_BUFFER_S * 1000 * self._bytes_per_ms_in()
        if self.settings.turn_detection is None and self._buffered_bytes + len(pcm) > limit:
            raise ProtocolError(f"input audio buffer is full ({MAX_BUFFER_S:.0f} s); commit or clear it",
                                code="input_audio_buffer_full")
        self._buffered_bytes += len(pcm)
        return [AppendAudio(pcm, self.settings.input_rate)]

    def _commit(self) -> list[Outgoing | Command]:
        if self._buffered_bytes < MIN_COMMIT_MS * self._bytes_per_ms_in():
            raise ProtocolError(
                f"buffer too small: at least {MIN_COMMIT_MS} ms of audio must be appended before a commit",
                code="input_audio_buffer_commit_empty",
            )
        self._buffered_bytes = 0
        item_id = self._user_item or self._id("item")
        self._user_item = None
        out: list[Outgoing | Command] = [self._committed(item_id)]
        td = self.settings.turn_detection
        out.append(CommitAudio(item_id, respond=bool(td and td.create_response)))
        return out

    def _committed(self, item_id: str) -> ev.InputAudioBufferCommitted:
        prev = self._last_user_item
        self._last_user_item = item_id
        self._pending_user_item = item_id
        return ev.InputAudioBufferCommitted(event_id=self._id("event"), item_id=item_id, previous_item_id=prev)

    def _create_item(self, event: ev.ConversationItemCreate) -> list[Outgoing | Command]:
        item_id, text = parse_user_item(event.item, self._prefix)
        item_id = item_id or self._id("item")
        prev = self._last_user_item
        self._last_user_item = item_id
        self._pending_user_item = item_id
        created = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                   "content": [{"type": "input_text", "text": text}]}
        return [ev.ConversationItemCreated(event_id=self._id("event"), item=created, previous_item_id=prev),
                UserText(item_id, text)]

    def _create_response(self, event: ev.ResponseCreate) -> list[Outgoing | Command]:
        if self._response is not None:
            raise ProtocolError("conversation already has an active response",
                                code="conversation_already_has_active_response")
        instructions = None
        if event.response is not None:
            for key in event.response:
                if key not in ("instructions", "output_modalities", "modalities", "conversation", "metadata",
                               "audio", "max_output_tokens"):
                    raise ProtocolError(f"unknown parameter 'response.{key}'", code="unknown_parameter",
                                        param=f"response.{key}")
            if "instructions" in event.response:
                instructions = check_instructions(event.response["instructions"], self.max_instructions,
                                                  "response.instructions")
        if self._pending_user_item is None:
            raise ProtocolError("nothing to respond to: commit audio or create a user message first",
                                code="no_user_input")
        item_id = self._pending_user_item
        self._pending_user_item = None
        response_id = self._id("resp")
        return [CreateResponse(response_id, item_id, instructions)]

    def _truncate(self, event: ev.ConversationItemTruncate) -> list[Outgoing | Command]:
        spoken = self._spoken.get(event.item_id)
        if spoken is None:
            raise ProtocolError(f"no assistant audio item with id {event.item_id[:64]!r}",
                                code="item_truncate_invalid_item_id", param="item_id")
        if event.content_index != 0:
            raise ProtocolError("'content_index' must be 0", code="invalid_value", param="content_index")
        if event.audio_end_ms < 0 or event.audio_end_ms > spoken.audio_ms + 1:
            raise ProtocolError("'audio_end_ms' is beyond the item's audio", code="invalid_value", param="audio_end_ms")
        # in the sink's counter; a piece starting before that sample was heard
        played = spoken.played.start + math.ceil(event.audio_end_ms * spoken.rate / 1000)
        text = spoken.played.spoken_text(played, whole_started=True)
        return [ev.ConversationItemTruncated(event_id=self._id("event"), item_id=event.item_id, content_index=0,
                                             audio_end_ms=event.audio_end_ms),
                TruncateAssistant(event.item_id, event.audio_end_ms, text)]

    # ------------------------------------------------------------------ pipeline -> client

    def on_speech_started(self, audio_start_ms: int) -> list[Outgoing]:
        self._user_item = self._id("item")
        return [ev.InputSpeechStarted(event_id=self._id("event"), item_id=self._user_item, audio_start_ms=audio_start_ms)]

    def on_speech_stopped(self, audio_end_ms: int) -> list[Outgoing]:
        """Server VAD ended the turn: speech_stopped + committed (the user item now exists)."""
        item_id = self._user_item or self._id("item")
        self._user_item = None
        self._buffered_bytes = 0
        return [ev.InputSpeechStopped(event_id=self._id("event"), item_id=item_id, audio_end_ms=audio_end_ms),
                self._committed(item_id)]

    def on_transcript(self, text: str, *, final: bool = True, duration_s: float = 0.0,
                      item_id: str | None = None) -> list[Outgoing]:
        item = item_id or self._last_user_item or self._id("item")
        if not final:
            return [ev.InputTranscriptionDelta(event_id=self._id("event"), item_id=item, delta=text)]
        return [ev.InputTranscriptionCompleted(event_id=self._id("event"), item_id=item, transcript=text,
                                               usage={"type": "duration", "seconds": round(duration_s, 3)})]

    def on_response_started(self, response_id: str | None = None) -> list[Outgoing]:
        """The pipeline started an answer (on its own after VAD, or for a CreateResponse)."""
        if self._response is not None:
            return []
        if self._pending_user_item is not None and response_id is None:
            self._pending_user_item = None
        rid = response_id or self._id("resp")
        self._response = _Response(rid, self._id("item"))
        return [ev.ResponseCreated(event_id=self._id("event"),
                                   response=response_object(self._response, self.settings, self._prefix, "in_progress"))]

    def on_text(self, delta: str) -> list[Outgoing]:
        r = self._response
        if r is None or not delta:
            return []
        r.transcript.append(delta)
        return [ev.ResponseTranscriptDelta(event_id=self._id("event"), response_id=r.response_id,
                                           item_id=r.item_id, delta=delta)]

    def on_audio(self, pcm: bytes) -> list[Outgoing]:
        """Output PCM16 at the session's output rate."""
        r = self._response
        if r is None or not pcm:
            return []
        self._audio_started = True
        if self.settings.binary_audio:
            return [pcm]
        return [ev.ResponseOutputAudioDelta(event_id=self._id("event"), response_id=r.response_id, item_id=r.item_id,
                                            delta=base64.b64encode(pcm).decode("ascii"))]

    def on_response_done(self, status: str = "completed", reason: str | None = None, error: str | None = None,
                         *, played: PlaybackLedger | None = None, rate: int | None = None) -> list[Outgoing]:
        """status: completed, cancelled (reason turn_detected / client_cancelled), incomplete, failed.
        ``played``: the answer's ledger of what it wrote to the sink, in samples at ``rate``
        (default: the output rate); None = no audio. conversation.item.truncate reads it."""
        r = self._response
        if r is None:
            return []
        self._response = None
        transcript = "".join(r.transcript)
        self._spoken = {r.item_id: _Spoken(r.item_id, played if played is not None else PlaybackLedger(start=0),
                                           rate or self.settings.output_rate)}
        out: list[Outgoing] = [
            ev.ResponseOutputAudioDone(event_id=self._id("event"), response_id=r.response_id, item_id=r.item_id),
            ev.ResponseTranscriptDone(event_id=self._id("event"), response_id=r.response_id, item_id=r.item_id,
                                      transcript=transcript),
        ]
        obj = response_object(r, self.settings, self._prefix, status, transcript)
        details: dict[str, Any] = {"type": status}
        if reason:
            details["reason"] = reason
        if error:
            details["error"] = {"type": "server_error", "message": error}
        obj["status_details"] = details
        out.append(ev.ResponseDone(event_id=self._id("event"), response=obj))
        return out

    def on_metrics(self, response_id: str, metrics: dict[str, Any],
                   sources: Sequence[Any] = ()) -> list[Outgoing]:
        """``voice.metrics``; ``sources`` = the answer's retrieved passages (``.source``, ``.score``, ``.text``)."""
        return [ev.VoiceMetrics(event_id=self._id("event"), response_id=response_id, metrics=metrics,
                               sources=source_list(sources) or None)]


def response_object(r: _Response, settings: SessionSettings, prefix: str, status: str,
                    transcript: str | None = None) -> dict[str, Any]:
    """The ``response`` object of response.created / response.done."""
    output: list[dict[str, Any]] = []
    if transcript is not None:
        output.append({"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                       "status": "completed" if status == "completed" else "incomplete",
                       "content": [{"type": "output_audio", "transcript": transcript}]})
    return {
        "id": r.response_id,
        "object": "realtime.response",
        "status": status,
        "output": output,
        "output_modalities": ["audio"],
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": settings.output_rate},
                             "voice": settings.voice}},
        "conversation_id": "conv_" + prefix.rstrip("_") if prefix else "conv_default",
    }
