"""OpenAI's audio API (``/v1/audio/*``, ``/v1/models``) without I/O: errors, the names OpenAI
clients hard-code, request parsing and validation (multipart forms, JSON), response rendering
and server-sent-event framing. The shell (:mod:`voice.server.audio_api`) feeds it bytes and
sends what it returns.

Name mapping (docs/server.md): ``whisper-1``, ``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``
(and their dated variants) mean the configured ASR model; ``tts-1``, ``tts-1-hd``,
``gpt-4o-mini-tts`` (and dated variants) the configured TTS engine; OpenAI's voices (``alloy``,
``echo``, ...) the configured voice. The configured names themselves work too, and so does any
voice the engine has.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from voice.asr.base import Transcript

#: Model names OpenAI clients send for speech to text.
ASR_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
#: Model names OpenAI clients send for text to speech.
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
#: OpenAI's built-in voices: all mean the configured voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                 "verse", "marin", "cedar")
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac",
                        "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
#: Most parts one multipart form may have (OpenAI's form has eight fields plus repeats).
MAX_FORM_PARTS = 64
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 405: "invalid_request_error", 408: "timeout_error",
                413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
                500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """An OpenAI-shaped error response: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _ERROR_TYPES.get(status, "invalid_request_error")

    def body(self) -> bytes:
        return json_bytes({"error": {"message": self.message, "type": self.type, "param": self.param,
                                     "code": self.code}})

    @property
    def reason(self) -> str:
        return HTTPStatus(self.status).phrase


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# --------------------------------------------------------------------------- names


def _alias(name: str, aliases: Sequence[str]) -> bool:
    """``name`` is one of ``aliases`` or a dated variant of one (``gpt-4o-mini-tts-2025-12-15``)."""
    return any(name == a or name.startswith(a + "-") for a in aliases)


@dataclass(frozen=True)
class Names:
    """What the server has, under its own names; the aliases resolve to these."""

    asr_model: str
    asr_names: tuple[str, ...]
    tts_model: str
    voices: tuple[str, ...]
    multilingual: bool = False

    def asr(self, name: str) -> str:
        if name in self.asr_names or _alias(name, ASR_ALIASES):
            return self.asr_model
        known = ", ".join((*ASR_ALIASES, *self.asr_names))
        raise ApiError(400, f"model '{name}' is not served here for speech to text (use one of: {known})",
                       param="model", code="model_not_found")

    def tts(self, name: str) -> str:
        if name == self.tts_model or _alias(name, TTS_ALIASES):
            return self.tts_model
        known = ", ".join((*TTS_ALIASES, self.tts_model))
        raise ApiError(400, f"model '{name}' is not served here for text to speech (use one of: {known})",
                       param="model", code="model_not_found")

    def voice(self, name: str) -> str | None:
        """None = the configured voice (OpenAI's names); an engine voice by its own name."""
        if name.lower() in OPENAI_VOICES:
            return None
        if name in self.voices:
            return name
        raise bad(f"voice '{name}' is not available (OpenAI's voices ({', '.join(OPENAI_VOICES[:6])}, ...) "
                  f"mean the configured voice; this engine's voices: {', '.join(self.voices) or 'none'})",
                  "voice")

    def models(self, created: int) -> dict[str, Any]:
        """``GET /v1/models``: every name the audio endpoints accept."""
        ids = [self.asr_model, *ASR_ALIASES, self.tts_model, *TTS_ALIASES]
        seen: list[str] = []
        for i in ids:
            if i not in seen:
                seen.append(i)
        return {"object": "list", "data": [{"id": i, "object": "model", "created": created, "owned_by": "voice"}
                                           for i in seen]}


# --------------------------------------------------------------------------- forms


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytearray = field(default_factory=bytearray)


class FormReader:
    """A multipart/form-data body, fed chunk by chunk (python-multipart's streaming parser).

    ``max_field_chars`` bounds each text field, ``max_parts`` the number of parts; the total is
    bounded by the shell's body limit. Fields named like ``timestamp_granularities[]`` keep the
    last value; ``file`` becomes an :class:`Upload`.
    """

    def __init__(self, content_type: str, *, max_field_chars: int, max_parts: int = MAX_FORM_PARTS) -> None:
        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data":
            raise ApiError(415, f"Content-Type must be multipart/form-data, not '{content_type[:100]}'",
                           code="unsupported_media_type")
        boundary = params.get(b"boundary")
        if not boundary:
            raise bad("multipart/form-data without a boundary", code="invalid_multipart")
        self.max_field_chars = max_field_chars
        self.max_parts = max_parts
        self.fields: dict[str, str] = {}
        self.file: Upload | None = None
        self._parts = 0
        self._ended = False
        self._headers: dict[str, str] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._value = bytearray()
        self._name: str | None = None
        self._upload: Upload | None = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }, max_header_count=16, max_header_size=4096)

    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except MultipartParseError as err:
            raise bad(f"malformed multipart body: {err}", code="invalid_multipart") from None

    def finish(self) -> None:
        if not self._ended:
            raise bad("multipart body ends before its closing boundary", code="invalid_multipart")

    # parser callbacks
    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.max_parts:
            raise bad(f"more than {self.max_parts} form fields", code="invalid_multipart")
        self._headers = {}
        self._value = bytearray()
        self._name = None
        self._upload = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._hname.decode("latin-1").strip().lower()] = self._hvalue.decode("utf-8", "replace").strip()
        self._hname = bytearray()
        self._hvalue = bytearray()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name")
        if name is None:
            raise bad("a form part has no name (Content-Disposition: form-data; name=...)", code="invalid_multipart")
        self._name = name.decode("utf-8", "replace")
        filename = params.get(b"filename")
        if self._name == "file" or filename is not None:
            if self._name != "file":
                raise bad(f"unexpected file in form field '{self._name[:64]}' (the audio goes in 'file')",
                          self._name[:64], code="unexpected_file")
            if self.file is not None:
                raise bad("more than one 'file' in the form", "file")
            self._upload = Upload((filename or b"").decode("utf-8", "replace")[:256],
                                  self._headers.get("content-type", "")[:128])

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._upload is not None:
            self._upload.data += data[start:end]
            return
        self._value += data[start:end]
        if len(self._value) > 4 * self.max_field_chars:
            raise self._too_long()

    def _part_end(self) -> None:
        if self._upload is not None:
            self.file = self._upload
            return
        assert self._name is not None
        try:
            text = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"form field '{self._name[:64]}' is not UTF-8 text", self._name[:64]) from None
        if len(text) > self.max_field_chars:
            raise self._too_long()
        self.fields[self._name.removesuffix("[]")] = text

    def _end(self) -> None:
        self._ended = True

    def _too_long(self) -> ApiError:
        name = (self._name or "?")[:64]
        return bad(f"form field '{name}' is longer than {self.max_field_chars} characters "
                   "(server.http_max_field_chars)", name, code="string_above_max_length")


# --------------------------------------------------------------------------- parameters


def _float(fields: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise bad(f"'{name}' must be a number from {lo} to {hi}, got {str(raw)[:40]!r}", name) from None
    if isinstance(raw, bool) or not math.isfinite(value) or not lo <= value <= hi:
        raise bad(f"'{name}' must be a number from {lo} to {hi}, got {str(raw)[:40]!r}", name)
    return value


def _bool(fields: dict[str, Any], name: str) -> bool:
    raw = fields.get(name)
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if str(raw).lower() in ("true", "1"):
        return True
    if str(raw).lower() in ("false", "0", ""):
        return False
    raise bad(f"'{name}' must be true or false, got {str(raw)[:40]!r}", name)


def _choice(fields: dict[str, Any], name: str, choices: Sequence[str], default: str) -> str:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise bad(f"'{name}' must be one of {', '.join(choices)}; got {str(raw)[:40]!r}", name)
    return str(raw)


def _text(fields: dict[str, Any], name: str, max_chars: int, *, required: bool = False) -> str | None:
    raw = fields.get(name)
    if raw is None or raw == "":
        if required:
            raise bad(f"'{name}' is required", name, code="missing_required_parameter")
        return None
    if not isinstance(raw, str):
        raise bad(f"'{name}' must be a string", name, code="invalid_type")
    if len(raw) > max_chars:
        raise bad(f"'{name}' is longer than {max_chars} characters", name, code="string_above_max_length")
    return raw


@dataclass(frozen=True)
class TranscriptionRequest:
    audio: bytes | bytearray
    filename: str
    model: str
    language: str | None
    prompt: str | None
    response_format: str
    temperature: float | None
    stream: bool
    translate: bool


def transcription_request(form: FormReader, names: Names, *, translate: bool) -> TranscriptionRequest:
    """Validate a transcription (or translation) form; ApiError 400 naming the bad parameter."""
    f = form.fields
    if form.file is None:
        raise bad("'file' is required: the audio to transcribe, as a multipart file field", "file",
                  code="missing_required_parameter")
    if not form.file.data:
        raise bad("'file' is empty", "file")
    model = names.asr(_text(f, "model", 128, required=True) or "")
    if translate and not names.multilingual:
        raise bad(f"translation needs a multilingual Whisper model; '{names.asr_model}' is English-only "
                  "(set asr.model to one such as whisper-base)", "model", code="model_not_supported")
    language = None if translate else _text(f, "language", 16)
    if language is not None and not (2 <= len(language) <= 8 and language.replace("-", "").isalpha()):
        raise bad(f"'language' must be an ISO-639-1 code such as en or de, got {language[:20]!r}", "language")
    stream = _bool(f, "stream")
    if stream and translate:
        raise bad("'stream' is not supported for translations", "stream")
    return TranscriptionRequest(
        audio=form.file.data, filename=form.file.filename, model=model,
        language=language.lower() if language else None, prompt=_text(f, "prompt", form.max_field_chars),
        response_format=_choice(f, "response_format", TRANSCRIPTION_FORMATS, "json"),
        temperature=_float(f, "temperature", 0.0, 1.0), stream=stream, translate=translate)


@dataclass(frozen=True)
class SpeechRequest:
    model: str
    input: str
    voice: str | None
    response_format: str
    speed: float | None
    stream_format: str


def speech_request(content_type: str, body: bytes, names: Names, *, max_input_chars: int,
                   max_field_chars: int) -> SpeechRequest:
    """Validate a ``POST /v1/audio/speech`` JSON body. ``instructions`` is accepted and ignored."""
    ctype, _ = parse_options_header(content_type)
    if ctype != b"application/json":
        raise ApiError(415, f"Content-Type must be application/json, not '{content_type[:100]}'",
                       code="unsupported_media_type")
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"the body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise bad("the body must be a JSON object", code="invalid_json")
    text = obj.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad("'input' is required: the text to speak", "input", code="missing_required_parameter")
    if len(text) > max_input_chars:
        raise bad(f"'input' is {len(text):,} characters; at most {max_input_chars:,} (tts.max_say_chars)",
                  "input", code="string_above_max_length")
    for key, value in obj.items():
        if key != "input" and isinstance(value, str) and len(value) > max_field_chars:
            raise bad(f"'{key[:64]}' is longer than {max_field_chars} characters (server.http_max_field_chars)",
                      key[:64], code="string_above_max_length")
    model = names.tts(_text(obj, "model", 128, required=True) or "")
    voice_raw = obj.get("voice")
    if isinstance(voice_raw, dict):  # OpenAI's custom voice object {"id": "voice_..."}
        voice_raw = voice_raw.get("id")
    if not isinstance(voice_raw, str) or not voice_raw:
        raise bad("'voice' is required (alloy, echo, ... or a voice of this engine)", "voice",
                  code="missing_required_parameter")
    return SpeechRequest(
        model=model, input=text, voice=names.voice(voice_raw),
        response_format=_choice(obj, "response_format", SPEECH_FORMATS, "mp3"),
        speed=_float(obj, "speed", 0.25, 4.0),
        stream_format=_choice(obj, "stream_format", ("audio", "sse"), "audio"))


# --------------------------------------------------------------------------- responses


def render_transcript(fmt: str, t: Transcript, *, task: str = "transcribe") -> tuple[str, bytes]:
    """(Content-Type, body) of a finished transcription in OpenAI's ``response_format``."""
    from voice.commands.transcribe import to_srt, to_vtt

    if fmt == "text":
        return "text/plain; charset=utf-8", (t.text + "\n").encode()
    if fmt == "srt":
        return "text/plain; charset=utf-8", to_srt(t.segments).encode()
    if fmt == "vtt":
        return "text/vtt; charset=utf-8", to_vtt(t.segments).encode()
    duration = round(t.duration_s, 3)
    if fmt == "verbose_json":
        segments = [{"id": i, "seek": 0, "start": s.start, "end": s.end, "text": " " + s.text, "tokens": [],
                     "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
                    for i, s in enumerate(t.segments)]
        return "application/json", json_bytes({
            "task": task, "language": _language_name(t.language), "duration": duration, "text": t.text,
            "segments": segments, "usage": {"type": "duration", "seconds": math.ceil(t.duration_s)}})
    return "application/json", json_bytes({"text": t.text, "usage": {"type": "duration",
                                                                     "seconds": math.ceil(t.duration_s)}})


def _language_name(code: str | None) -> str:
    """OpenAI's verbose_json names the language in English ("english"); unknown codes stay codes."""
    return _LANGUAGES.get(code or "", code or "unknown")


#: The Whisper languages voice's models are most often used with; others show as their code.
_LANGUAGES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
              "nl": "dutch", "pt": "portuguese", "pl": "polish", "ru": "russian", "uk": "ukrainian",
              "zh": "chinese", "ja": "japanese", "ko": "korean", "ar": "arabic", "tr": "turkish",
              "sv": "swedish", "da": "danish", "no": "norwegian", "fi": "finnish", "cs": "czech"}


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event: ``data: {json}`` and a blank line."""
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def transcript_events(t: Transcript) -> list[bytes]:
    """``transcript.text.delta`` per segment, then ``transcript.text.done`` (OpenAI's shapes)."""
    out = []
    for i, s in enumerate(t.segments):
        out.append(sse({"type": "transcript.text.delta", "delta": (" " if i else "") + s.text}))
    out.append(sse({"type": "transcript.text.done", "text": t.text,
                    "usage": {"type": "tokens", "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}))
    return out


def speech_delta(audio: bytes) -> bytes:
    return sse({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


def speech_done(input_chars: int) -> bytes:
    return sse({"type": "speech.audio.done",
                "usage": {"input_tokens": input_chars, "output_tokens": 0, "total_tokens": input_chars}})
