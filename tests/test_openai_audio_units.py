"""The OpenAI audio API's sans-I/O parts: request routing, names, forms, validation, rendering,
SSE and the streaming encoders (no server, no models)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from voice.asr.base import Segment, Transcript
from voice.server.encoders import SpeechEncoder, wav_header
from voice.server.http_exchange import route
from voice.server.openai_audio import (
    ApiError,
    FormReader,
    Names,
    render_transcript,
    speech_request,
    transcript_events,
    transcription_request,
)

NAMES = Names(asr_model="whisper-tiny.en", asr_names=("whisper-tiny.en",), tts_model="piper",
              voices=("piper-joe-medium",))


def form(fields: dict[str, str], file: bytes | None = b"RIFFdata", boundary: str = "b0und") -> bytes:
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    if file is not None:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                f"Content-Type: audio/wav\r\n\r\n").encode() + file + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def read_form(body: bytes, max_field_chars: int = 100, piece: int = 7) -> FormReader:
    r = FormReader("multipart/form-data; boundary=b0und", max_field_chars=max_field_chars)
    for i in range(0, len(body), piece):  # fed in small pieces, as the socket delivers it
        r.feed(body[i:i + piece])
    r.finish()
    return r


def test_route_by_request_line() -> None:
    assert route(b"GET /v1/realtime HTTP/1.1\r\n") == "ws"
    assert route(b"GET /healthz HTTP/1.1\r\n") == "ws"
    assert route(b"GET /v1/models HTTP/1.1\r\n") == "http"
    assert route(b"GET /v1/audio/speech?x=1 HTTP/1.1\r\n") == "http"
    assert route(b"POST / HTTP/1.1\r\n") == "http"
    assert route(b"OPTIONS /v1/audio/speech HTTP/1.1\r\n") == "http"
    assert route(b"POST /v1/audio/transcri") is None
    assert route(b"x" * 9000) == "ws"
    assert route(b"garbage\r\n") == "ws"


def test_names_map_openai_defaults() -> None:
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-03-20",
                 "whisper-tiny.en"):
        assert NAMES.asr(name) == "whisper-tiny.en"
    for name in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "piper"):
        assert NAMES.tts(name) == "piper"
    assert NAMES.voice("alloy") is None and NAMES.voice("Shimmer") is None and NAMES.voice("cedar") is None
    assert NAMES.voice("piper-joe-medium") == "piper-joe-medium"
    for call, param in ((lambda: NAMES.asr("whisper-large-v3"), "model"), (lambda: NAMES.tts("whisper-1"), "model"),
                        (lambda: NAMES.voice("../../etc/passwd"), "voice")):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 400 and err.value.param == param
    ids = [m["id"] for m in NAMES.models(1)["data"]]
    assert ids[0] == "whisper-tiny.en" and "whisper-1" in ids and "tts-1" in ids and len(ids) == len(set(ids))


def test_error_body_shape() -> None:
    body = json.loads(ApiError(413, "too big", code="request_too_large").body())
    assert body == {"error": {"message": "too big", "type": "invalid_request_error", "param": None,
                              "code": "request_too_large"}}
    assert json.loads(ApiError(429, "busy").body())["error"]["type"] == "rate_limit_error"


def test_form_reader_fields_and_file() -> None:
    audio = bytes(range(256)) * 40 + b"\r\n--b0un"  # binary, with CRLF and a boundary prefix inside
    r = read_form(form({"model": "whisper-1", "response_format": "srt", "timestamp_granularities[]": "word"}, audio))
    assert r.fields == {"model": "whisper-1", "response_format": "srt", "timestamp_granularities": "word"}
    assert r.file is not None and bytes(r.file.data) == audio and r.file.filename == "a.wav"
    req = transcription_request(r, NAMES, translate=False)
    assert req.model == "whisper-tiny.en" and req.response_format == "srt" and req.audio == audio


@pytest.mark.parametrize(("body", "param", "code"), [
    (form({"model": "whisper-1", "prompt": "x" * 101}), "prompt", "string_above_max_length"),
    (form({"model": "whisper-1"}, None), "file", "missing_required_parameter"),
    (form({"model": "whisper-1"}, b""), "file", "invalid_value"),
    (form({}), "model", "missing_required_parameter"),
    (form({"model": "whisper-1", "response_format": "docx"}), "response_format", "invalid_value"),
    (form({"model": "whisper-1", "temperature": "nan"}), "temperature", "invalid_value"),
    (form({"model": "whisper-1", "temperature": "1.5"}), "temperature", "invalid_value"),
    (form({"model": "whisper-1", "language": "english!"}), "language", "invalid_value"),
    (form({"model": "whisper-1", "stream": "maybe"}), "stream", "invalid_value"),
    (form({f"f{i}": "1" for i in range(70)}), None, "invalid_multipart"),
])
def test_form_errors(body: bytes, param: str | None, code: str) -> None:
    with pytest.raises(ApiError) as err:
        transcription_request(read_form(body), NAMES, translate=False)
    assert err.value.status == 400 and err.value.param == param and err.value.code == code, err.value.message


def test_form_field_at_the_limit_and_malformed_bodies() -> None:
    assert read_form(form({"model": "whisper-1", "prompt": "é" * 100})).fields["prompt"] == "é" * 100
    with pytest.raises(ApiError) as err:
        FormReader("application/x-www-form-urlencoded", max_field_chars=10)
    assert err.value.status == 415
    with pytest.raises(ApiError):
        FormReader("multipart/form-data", max_field_chars=10)  # no boundary
    with pytest.raises(ApiError) as err:
        read_form(form({"model": "whisper-1"})[:-8])  # cut before the closing boundary
    assert err.value.code == "invalid_multipart"
    files = form({}, b"a") + form({}, b"b")[:-10]
    with pytest.raises(ApiError):
        read_form(files.replace(b"--b0und--\r\n", b"", 1))


def test_translation_refused_on_english_only_model() -> None:
    with pytest.raises(ApiError) as err:
        transcription_request(read_form(form({"model": "whisper-1"})), NAMES, translate=True)
    assert err.value.param == "model" and "English-only" in err.value.message
    multi = Names("whisper-base", ("whisper-base",), "piper", (), multilingual=True)
    req = transcription_request(read_form(form({"model": "whisper-1", "language": "de"})), multi, translate=True)
    assert req.translate and req.language is None


def speech(obj: object, ctype: str = "application/json", max_input: int = 50) -> object:
    return speech_request(ctype, json.dumps(obj).encode(), NAMES, max_input_chars=max_input, max_field_chars=100)


def test_speech_request_validation() -> None:
    ok = speech({"model": "tts-1", "input": "Hi.", "voice": "alloy", "instructions": "cheerful"})
    assert ok.voice is None and ok.response_format == "mp3" and ok.stream_format == "audio"  # type: ignore[attr-defined]
    assert speech({"model": "tts-1", "input": "x" * 50, "voice": {"id": "piper-joe-medium"},  # type: ignore[attr-defined]
                   "speed": 0.25, "response_format": "pcm", "stream_format": "sse"}).voice == "piper-joe-medium"
    for obj, param in (({"model": "tts-1", "input": "x" * 51, "voice": "alloy"}, "input"),
                       ({"model": "tts-1", "input": "  ", "voice": "alloy"}, "input"),
                       ({"model": "tts-1", "input": "Hi."}, "voice"),
                       ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "speed": 4.5}, "speed"),
                       ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "speed": True}, "speed"),
                       ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "ogg"}, "response_format"),
                       ({"model": "tts-1", "input": "Hi.", "voice": "alloy", "instructions": "x" * 101}, "instructions"),
                       ({"input": "Hi.", "voice": "alloy"}, "model")):
        with pytest.raises(ApiError) as err:
            speech(obj)
        assert err.value.status == 400 and err.value.param == param, (obj, err.value.message)
    with pytest.raises(ApiError) as err:
        speech({"model": "tts-1", "input": "Hi.", "voice": "alloy"}, "text/plain")
    assert err.value.status == 415
    with pytest.raises(ApiError) as err:
        speech_request("application/json", b"[1]", NAMES, max_input_chars=5, max_field_chars=5)
    assert err.value.code == "invalid_json"


def test_render_transcript() -> None:
    t = Transcript(text="Hello there. General Kenobi.", language="en", duration_s=3.2,
                   segments=[Segment(0.0, 1.5, "Hello there."), Segment(1.5, 3.1, "General Kenobi.")])
    assert render_transcript("text", t) == ("text/plain; charset=utf-8", b"Hello there. General Kenobi.\n")
    assert json.loads(render_transcript("json", t)[1]) == {"text": t.text, "usage": {"type": "duration", "seconds": 4}}
    srt = render_transcript("srt", t)[1].decode()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n")
    assert render_transcript("vtt", t)[1].decode().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    v = json.loads(render_transcript("verbose_json", t, task="translate")[1])
    assert v["task"] == "translate" and v["language"] == "english" and v["duration"] == 3.2
    assert [s["id"] for s in v["segments"]] == [0, 1] and v["segments"][1]["end"] == 3.1
    events = [json.loads(e[6:]) for e in transcript_events(t)]
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert "".join(e.get("delta", "") for e in events) == t.text and events[-1]["text"] == t.text


def test_encoders_stream_24k() -> None:
    import soundfile as sf

    tone = (0.3 * np.sin(np.arange(22050) / 4)).astype(np.float32)  # 1 s at 22.05 kHz
    enc = SpeechEncoder("wav", 22050)
    first = enc.encode(tone)
    assert first.startswith(wav_header()) and len(first) > 40_000  # audio leaves with the first piece
    data = first + enc.encode(tone) + enc.finish()
    audio, rate = sf.read(io.BytesIO(data))
    assert rate == 24000 and abs(len(audio) - 48000) <= 2
    enc = SpeechEncoder("pcm", 24000)
    assert len(enc.encode(tone) + enc.finish()) == 2 * len(tone)
    for fmt in ("mp3", "opus", "aac", "flac"):
        enc = SpeechEncoder(fmt, 22050)
        pieces = [enc.encode(tone) for _ in range(3)] + [enc.finish()]
        assert pieces[1] and sum(map(len, pieces)) > 1000, (fmt, [len(p) for p in pieces])  # streamed, not held
    with pytest.raises(ValueError):
        SpeechEncoder("ogg", 22050)
