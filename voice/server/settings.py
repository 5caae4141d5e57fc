"""Session settings of a realtime session and the strict parser of ``session.update``.

Accepts both the GA shape (``session.type = "realtime"``, ``session.audio.input.format`` /
``turn_detection``, ``session.audio.output.voice``) and the flat beta shape (``voice``,
``turn_detection``, ``input_audio_format = "pcm16"``). Clients name voices from an allow-list only;
nothing they send is ever used as a file path or code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voice.server.events import ProtocolError

#: OpenAI's built-in voice names: accepted and mapped to the server's default voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
#: Input/output PCM16 sample rates accepted (OpenAI accepts 24000 only).
SAMPLE_RATES = (16000, 24000, 48000)
#: Keys OpenAI defines that voice accepts and ignores (documented in docs/protocol.md).
IGNORED_KEYS = frozenset(
    {
        "model",
        "tool_choice",
        "include",
        "tracing",
        "truncation",
        "prompt",
        "temperature",
        "max_response_output_tokens",
        "max_output_tokens",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "parallel_tool_calls",
        "reasoning",
        "client_secret",
        "expires_at",
        "id",
        "object",
    }
)


@dataclass
class TurnDetection:
    """Server VAD parameters (``None`` in :class:`SessionSettings` = turn detection off)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 600
    create_response: bool = True
    interrupt_response: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"type": "server_vad", **dataclasses.asdict(self)}


@dataclass
class SessionSettings:
    """The effective configuration of one session."""

    instructions: str = ""
    voice: str = "default"
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    input_rate: int = 24000
    output_rate: int = 24000
    speed: float = 1.0
    #: voice extension: audio travels as raw binary PCM16 WebSocket frames (negotiated).
    binary_audio: bool = False
    model: str = "voice"

    def to_dict(self) -> dict[str, Any]:
        """The GA ``session`` object shown in session.created / session.updated."""
        return {
            "type": "realtime",
            "object": "realtime.session",
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.input_rate},
                    "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
                    "transcription": {"model": "voice-asr"},
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": self.output_rate},
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "voice_binary_audio": self.binary_audio,
        }


def _typed(value: Any, tp: type | tuple[type, ...], param: str) -> Any:
    if isinstance(value, bool) and bool not in (tp if isinstance(tp, tuple) else (tp,)):
        raise ProtocolError(f"'{param}' has the wrong type", code="invalid_type", param=param)
    if not isinstance(value, tp):
        raise ProtocolError(f"'{param}' has the wrong type", code="invalid_type", param=param)
    return value


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    _typed(value, (int, float), param)
    if not lo <= value <= hi:
        raise ProtocolError(f"'{param}' must be between {lo} and {hi}", code="invalid_value", param=param)
    return float(value)


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    _typed(value, int, param)
    if not lo <= value <= hi:
        raise ProtocolError(f"'{param}' must be between {lo} and {hi}", code="invalid_value", param=param)
    return int(value)


def _keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed and key not in IGNORED_KEYS:
            raise ProtocolError(f"unknown parameter '{where}.{key}'", code="unknown_parameter", param=f"{where}.{key}")


def check_instructions(value: Any, limit: int, param: str) -> str:
    """Instructions replace the system prompt; longer than ``limit`` they would crowd the model's
    context (a 16,384-character prompt took a 92 s turn)."""
    text: str = _typed(value, str, param)
    if len(text) > limit:
        raise ProtocolError(f"'{param}' is too long: {len(text)} characters, at most {limit} fit the model's context",
                            code="instructions_too_long", param=param)
    return text


def parse_turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    _typed(value, dict, param)
    _keys(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                  "interrupt_response", "idle_timeout_ms", "eagerness"}, param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError(f"'{param}.type' must be server_vad or semantic_vad", code="invalid_value", param=f"{param}.type")
    td = dataclasses.replace(current) if current else TurnDetection()
    if "threshold" in value:
        td.threshold = _number(value["threshold"], f"{param}.threshold", 0.0, 1.0)
    if "prefix_padding_ms" in value:
        td.prefix_padding_ms = _int(value["prefix_padding_ms"], f"{param}.prefix_padding_ms", 0, 5000)
    if "silence_duration_ms" in value:
        td.silence_duration_ms = _int(value["silence_duration_ms"], f"{param}.silence_duration_ms", 100, 10000)
    for flag in ("create_response", "interrupt_response"):
        if flag in value:
            setattr(td, flag, _typed(value[flag], bool, f"{param}.{flag}"))
    if value.get("idle_timeout_ms") is not None:
        _int(value["idle_timeout_ms"], f"{param}.idle_timeout_ms", 0, 3_600_000)
    if "eagerness" in value:
        _typed(value["eagerness"], str, f"{param}.eagerness")
    return td


def parse_format(value: Any, param: str) -> int:
    """A GA format object or a beta format string -> the PCM16 sample rate."""
    if value == "pcm16":
        return 24000
    if isinstance(value, str):
        raise ProtocolError(f"'{param}' {value!r} is not supported (pcm16 only)", code="unsupported_format", param=param)
    _typed(value, dict, param)
    _keys(value, {"type", "rate"}, param)
    if value.get("type", "audio/pcm") != "audio/pcm":
        raise ProtocolError(f"'{param}.type' must be audio/pcm", code="unsupported_format", param=f"{param}.type")
    rate = value.get("rate", 24000)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError(f"'{param}.rate' must be one of {SAMPLE_RATES}", code="invalid_value", param=f"{param}.rate")
    return rate


def parse_voice(value: Any, voices: Sequence[str], param: str) -> str:
    if isinstance(value, dict):
        raise ProtocolError("custom voice objects are not supported", code="invalid_value", param=param)
    _typed(value, str, param)
    if value in voices:
        return str(value)
    if value in OPENAI_VOICES:
        return voices[0] if voices else "default"
    allowed = ", ".join([*voices, *OPENAI_VOICES])
    raise ProtocolError(f"unknown voice {value[:64]!r}; allowed: {allowed}", code="invalid_value", param=param)


def apply_session_update(
    current: SessionSettings, session: Mapping[str, Any], *, voices: Sequence[str], audio_started: bool,
    max_instructions: int = 4096,
) -> SessionSettings:
    """A new :class:`SessionSettings` from a ``session.update`` body, or :class:`ProtocolError`.
    ``max_instructions``: longest ``instructions`` in characters (``llm.max_instructions_chars()``)."""
    new = dataclasses.replace(current)
    flat = {"type", "instructions", "voice", "turn_detection", "input_audio_format", "output_audio_format",
            "modalities", "output_modalities", "audio", "tools", "speed", "voice_binary_audio"}
    _keys(session, flat, "session")
    if "type" in session and session["type"] != "realtime":
        raise ProtocolError("'session.type' must be 'realtime'", code="invalid_value", param="session.type")
    if "instructions" in session:
        new.instructions = check_instructions(session["instructions"], max_instructions, "session.instructions")
    for key in ("modalities", "output_modalities"):
        if key in session:
            mods = _typed(session[key], list, f"session.{key}")
            if "audio" not in mods or any(m not in ("audio", "text") for m in mods):
                raise ProtocolError(f"'session.{key}' must include 'audio' (text-only output is not supported)",
                                    code="invalid_value", param=f"session.{key}")
    if "tools" in session and _typed(session["tools"], list, "session.tools"):
        raise ProtocolError("tools are not supported", code="invalid_value", param="session.tools")
    voice_param = None
    voice_value: Any = None
    if "voice" in session:
        voice_param, voice_value = "session.voice", session["voice"]
    if "turn_detection" in session:
        new.turn_detection = parse_turn_detection(session["turn_detection"], current.turn_detection, "session.turn_detection")
    if "input_audio_format" in session:
        new.input_rate = parse_format(session["input_audio_format"], "session.input_audio_format")
    if "output_audio_format" in session:
        new.output_rate = parse_format(session["output_audio_format"], "session.output_audio_format")
    if "speed" in session:
        new.speed = _number(session["speed"], "session.speed", 0.25, 1.5)
    if "voice_binary_audio" in session:
        new.binary_audio = _typed(session["voice_binary_audio"], bool, "session.voice_binary_audio")
    if "audio" in session:
        audio = _typed(session["audio"], dict, "session.audio")
        _keys(audio, {"input", "output"}, "session.audio")
        if "input" in audio:
            inp = _typed(audio["input"], dict, "session.audio.input")
            _keys(inp, {"format", "turn_detection", "transcription", "noise_reduction"}, "session.audio.input")
            if "format" in inp:
                new.input_rate = parse_format(inp["format"], "session.audio.input.format")
            if "turn_detection" in inp:
                new.turn_detection = parse_turn_detection(
                    inp["turn_detection"], current.turn_detection, "session.audio.input.turn_detection"
                )
        if "output" in audio:
            out = _typed(audio["output"], dict, "session.audio.output")
            _keys(out, {"format", "voice", "speed"}, "session.audio.output")
            if "format" in out:
                new.output_rate = parse_format(out["format"], "session.audio.output.format")
            if "voice" in out:
                voice_param, voice_value = "session.audio.output.voice", out["voice"]
            if "speed" in out:
                new.speed = _number(out["speed"], "session.audio.output.speed", 0.25, 1.5)
    if voice_param is not None:
        voice = parse_voice(voice_value, voices, voice_param)
        if voice != current.voice and audio_started:
            raise ProtocolError("voice cannot change after the assistant has spoken", code="cannot_update_voice",
                                param=voice_param)
        new.voice = voice
    return new
