"""OpenAI's audio API over HTTP on voice serve's port, driven by the official openai SDK with the
names such clients send by default (whisper-1, tts-1, alloy). Real models: tiny.en and Piper."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.server import RunningServer, start_server
from voice.textnorm import corpus_wer

pytestmark = pytest.mark.slow

SENTENCES = ("The quick brown fox jumps over the lazy dog. "
             "A journey of a thousand miles begins with a single step. ")


def client(port: int, api_key: str = "unused-on-loopback", **kw: Any) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, timeout=120, **kw)


@pytest.fixture(scope="module")
def jfk(speech_clips: dict[str, str]) -> tuple[Path, str]:
    path = next(p for p in speech_clips if p.endswith("jfk.wav"))
    return Path(path), speech_clips[path]


def transcribe_file(server: RunningServer, path: Path) -> str:
    from voice.audio.files import load_audio

    return str(server.server.resources.transcriber.transcribe_sync(load_audio(path, 16000)).text)


# --------------------------------------------------------------------------- transcriptions


def test_transcriptions_in_every_format(voice_server: RunningServer, jfk: tuple[Path, str]) -> None:
    path, ref = jfk
    c = client(voice_server.port)
    with path.open("rb") as fh:
        t = c.audio.transcriptions.create(model="whisper-1", file=fh)
    assert corpus_wer([(ref, t.text)]) <= 0.1, t.text
    with path.open("rb") as fh:
        text = c.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
    assert isinstance(text, str) and corpus_wer([(ref, text)]) <= 0.1, text
    with path.open("rb") as fh:
        srt = c.audio.transcriptions.create(model="gpt-4o-transcribe", file=fh, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt and "country" in srt.lower(), srt
    with path.open("rb") as fh:
        vtt = c.audio.transcriptions.create(model="whisper-1", file=fh, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.") and "country" in vtt.lower(), vtt
    with path.open("rb") as fh:
        v = c.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json",
                                          language="en", prompt="Kennedy's inaugural address.", temperature=0)
    assert v.language == "english" and 10.5 < v.duration < 11.5, (v.language, v.duration)
    assert v.segments and v.segments[0].start < 1.0 and v.segments[-1].end <= v.duration + 0.5
    assert corpus_wer([(ref, " ".join(s.text for s in v.segments))]) <= 0.1
    assert corpus_wer([(ref, v.text)]) <= 0.1


def test_transcription_streamed_as_sse(voice_server: RunningServer, jfk: tuple[Path, str]) -> None:
    path, ref = jfk
    with path.open("rb") as fh:
        events = list(client(voice_server.port).audio.transcriptions.create(model="whisper-1", file=fh, stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    assert set(types[:-1]) == {"transcript.text.delta"}, types
    deltas = "".join(e.delta for e in events[:-1])
    assert corpus_wer([(ref, deltas)]) <= 0.1 and events[-1].text.strip() == deltas.strip()


def test_translation_needs_a_multilingual_model(voice_server: RunningServer, jfk: tuple[Path, str]) -> None:
    import openai

    with jfk[0].open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client(voice_server.port, max_retries=0).audio.translations.create(model="whisper-1", file=fh)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "model" and "English-only" in body["message"], body
    assert body["type"] == "invalid_request_error" and body["code"] == "model_not_supported"


def test_models_list(voice_server: RunningServer) -> None:
    ids = [m.id for m in client(voice_server.port).models.list()]
    assert {"whisper-1", "gpt-4o-transcribe", "tts-1", "gpt-4o-mini-tts", "whisper-tiny.en", "piper"} <= set(ids)
    assert client(voice_server.port).models.retrieve("whisper-1").id == "whisper-1"


# --------------------------------------------------------------------------- speech


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_speech_streams_audio_that_transcribes_back(voice_server: RunningServer, tmp_path: Path, fmt: str) -> None:
    text = "Please turn off the lights in the kitchen."
    out = tmp_path / f"speech.{fmt}"
    with client(voice_server.port).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format=fmt) as r:  # type: ignore[arg-type]
        assert r.headers["content-type"] == {"wav": "audio/wav", "mp3": "audio/mpeg"}[fmt]
        assert r.headers.get("transfer-encoding") == "chunked"
        r.stream_to_file(out)
    heard = transcribe_file(voice_server, out)
    assert corpus_wer([(text, heard)]) <= 0.15, heard


def test_speech_every_format_decodes(voice_server: RunningServer, tmp_path: Path) -> None:
    import av
    import numpy as np

    c = client(voice_server.port)
    durations = {}
    for fmt in ("opus", "aac", "flac", "pcm"):
        data = c.audio.speech.create(model="gpt-4o-mini-tts", voice="nova", input="Good morning.",
                                     response_format=fmt, instructions="Speak cheerfully.").read()  # type: ignore[arg-type]
        if fmt == "pcm":
            durations[fmt] = len(np.frombuffer(data, "<i2")) / 24000
            continue
        (tmp_path / f"a.{fmt}").write_bytes(data)
        with av.open(str(tmp_path / f"a.{fmt}")) as f:
            stream = f.streams.audio[0]
            durations[fmt] = sum(fr.samples for fr in f.decode(stream)) / stream.rate
    assert all(0.5 < d < 3.0 for d in durations.values()), durations
    assert max(durations.values()) - min(durations.values()) < 0.2, durations


def test_speech_sse(voice_server: RunningServer) -> None:
    import base64

    import numpy as np

    events = []
    with client(voice_server.port).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="One. Two. Three.", response_format="pcm",
            stream_format="sse") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["type"] for e in events][-1] == "speech.audio.done" and len(events) >= 3, [e["type"] for e in events]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert 1.0 < len(np.frombuffer(pcm, "<i2")) / 24000 < 6.0
    assert events[-1]["usage"]["input_tokens"] > 0


def test_speech_first_bytes_before_synthesis_ends(voice_server: RunningServer) -> None:
    text = SENTENCES * 6  # 12 sentences, ~40 s of speech
    t0 = time.perf_counter()
    first = None
    total = 0
    with client(voice_server.port).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="pcm") as r:
        for piece in r.iter_bytes(4096):
            if first is None and piece:
                first = time.perf_counter() - t0
            total += len(piece)
    whole = time.perf_counter() - t0
    assert first is not None and total / 2 / 24000 > 25
    # the first sentence is about 1/12 of the work: its bytes come long before the last
    assert first < whole / 3, (first, whole)


def test_voice_names(voice_server: RunningServer) -> None:
    import openai

    c = client(voice_server.port, max_retries=0)
    real = voice_server.server.resources.voices()[0]
    assert c.audio.speech.create(model="tts-1", voice=real, input="Hi.", response_format="pcm").read()
    with pytest.raises(openai.BadRequestError) as err:
        c.audio.speech.create(model="tts-1", voice="no-such-voice", input="Hi.")
    assert err.value.body["param"] == "voice"  # type: ignore[index]


# --------------------------------------------------------------------------- errors


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(
        voice_server: RunningServer, jfk: tuple[Path, str], tmp_path: Path) -> None:
    import httpx
    import openai

    c = client(voice_server.port, max_retries=0)
    notes = tmp_path / "notes.wav"
    notes.write_text("this is not audio\n" * 50)

    def expect(status: int, param: str | None, call: Any) -> dict[str, Any]:
        with pytest.raises(openai.APIStatusError) as err:
            call()
        assert err.value.status_code == status, (err.value.status_code, err.value.body)
        body = err.value.body
        assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
        assert body["param"] == param and body["type"] == "invalid_request_error", body
        return body

    with notes.open("rb") as fh:
        b = expect(415, "file", lambda: c.audio.transcriptions.create(model="whisper-1", file=fh))
    assert b["code"] == "invalid_file_format" and "not audio" in b["message"]
    with jfk[0].open("rb") as fh:
        expect(400, "response_format", lambda: c.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="docx"))  # type: ignore[arg-type]
    with jfk[0].open("rb") as fh:
        expect(400, "model", lambda: c.audio.transcriptions.create(model="whisper-large-v9", file=fh))
    with jfk[0].open("rb") as fh:
        expect(400, "language", lambda: c.audio.transcriptions.create(model="whisper-1", file=fh, language="de"))
    with jfk[0].open("rb") as fh:
        expect(400, "temperature", lambda: c.audio.transcriptions.create(model="whisper-1", file=fh, temperature=7))
    # the audio under another field name, and no file at all
    url = f"http://127.0.0.1:{voice_server.port}/v1/audio/transcriptions"
    r = httpx.post(url, data={"model": "whisper-1"}, files={"audio": ("a.wav", jfk[0].read_bytes())})
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio", r.text
    r = httpx.post(url, data={"model": "whisper-1"}, files={"x": ("x.txt", b"")})
    assert r.status_code == 400, r.text
    r = httpx.post(url, data={"model": "whisper-1", "language": "en"})  # urlencoded, not multipart
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", r.text
    r = httpx.post(url, content=b"--x\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    # speech
    expect(400, "response_format", lambda: c.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi.", response_format="ogg"))  # type: ignore[arg-type]
    expect(400, "speed", lambda: c.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9))
    expect(400, "input", lambda: c.audio.speech.create(model="tts-1", voice="alloy", input=""))
    expect(400, "model", lambda: c.audio.speech.create(model="whisper-1", voice="alloy", input="Hi."))
    r = httpx.post(f"http://127.0.0.1:{voice_server.port}/v1/audio/speech", content=b"{nope",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"http://127.0.0.1:{voice_server.port}/v1/audio/speech", content=b"input=hi")
    assert r.status_code == 415
    r = httpx.get(f"http://127.0.0.1:{voice_server.port}/v1/audio/speech")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(f"http://127.0.0.1:{voice_server.port}/v1/audio/nothing", content=b"")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    # still serving, and the realtime page too
    with jfk[0].open("rb") as fh:
        assert "country" in c.audio.transcriptions.create(model="whisper-1", file=fh).text.lower()
    assert httpx.get(f"http://127.0.0.1:{voice_server.port}/healthz").json()["status"] == "ok"
    metrics = httpx.get(f"http://127.0.0.1:{voice_server.port}/metrics").text
    for line in ('voice_http_requests_total{route="/v1/audio/transcriptions",status="415"}',
                 'voice_http_requests_total{route="/v1/audio/transcriptions",status="200"}',
                 'voice_http_requests_total{route="other",status="404"}', "voice_http_requests_active 0"):
        assert line in metrics, line


def test_expect_100_continue(voice_server: RunningServer, jfk: tuple[Path, str]) -> None:
    body = (b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            b'--x\r\nContent-Disposition: form-data; name="response_format"\r\n\r\ntext\r\n'
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="jfk.wav"\r\n\r\n'
            + jfk[0].read_bytes() + b"\r\n--x--\r\n")
    s = _raw(voice_server.port, b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
             b"Content-Type: multipart/form-data; boundary=x\r\nExpect: 100-continue\r\n"
             b"Content-Length: %d\r\n\r\n" % (voice_server.port, len(body)))
    s.settimeout(10)
    assert s.recv(100).startswith(b"HTTP/1.1 100 ")  # asked for before the body is sent (curl does)
    s.sendall(body)
    answer = _read_all(s, 60)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"country" in answer.lower(), answer[:300]


def test_cors_preflight_and_origin(voice_server: RunningServer) -> None:
    import httpx

    base = f"http://127.0.0.1:{voice_server.port}"
    origin = base
    r = httpx.options(f"{base}/v1/audio/speech", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin
    assert "authorization" in r.headers["access-control-allow-headers"]
    r = httpx.get(f"{base}/v1/models", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = httpx.get(f"{base}/v1/models", headers={"Host": "evil.example"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- token and limits


def test_token_required(voice_server: RunningServer, jfk: tuple[Path, str]) -> None:
    import openai

    running, shutdown = start_server(voice_server.server.cfg, environ={"VOICE_SERVER_TOKEN": "s3cret-token"},
                                     resources=voice_server.server.resources)
    try:
        with pytest.raises(openai.AuthenticationError) as err:
            client(running.port, api_key="wrong", max_retries=0).models.list()
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        with jfk[0].open("rb") as fh, pytest.raises(openai.AuthenticationError):
            client(running.port, api_key="wrong", max_retries=0).audio.transcriptions.create(model="whisper-1", file=fh)
        good = client(running.port, api_key="s3cret-token")
        assert "whisper-1" in [m.id for m in good.models.list()]
        with jfk[0].open("rb") as fh:
            assert "country" in good.audio.transcriptions.create(model="whisper-1", file=fh).text.lower()
    finally:
        shutdown()


@pytest.fixture(scope="module")
def limited(voice_server: RunningServer) -> Iterator[RunningServer]:
    cfg = voice_server.server.cfg
    small = dataclasses.replace(
        cfg, server=dataclasses.replace(cfg.server, http_max_requests=1, http_max_body_bytes=400_000,
                                        http_max_field_chars=100, http_request_timeout_s=2.0,
                                        http_max_audio_s=11.5,
                                        http_send_timeout_s=1.0, socket_send_buffer_bytes=16384,
                                        open_timeout_s=1.5),
        tts=dataclasses.replace(cfg.tts, max_say_chars=2000))
    running, shutdown = start_server(small, resources=voice_server.server.resources)
    yield running
    shutdown()


def _raw(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    return s


def _read_all(s: socket.socket, limit_s: float = 10) -> bytes:
    s.settimeout(limit_s)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def test_limits_are_enforced(limited: RunningServer, jfk: tuple[Path, str]) -> None:
    import numpy as np
    import openai

    c = client(limited.port, max_retries=0)
    big = b"RIFF" + bytes(500_000)
    with pytest.raises(openai.APIStatusError) as err:
        c.audio.transcriptions.create(model="whisper-1", file=("big.wav", big))
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"  # type: ignore[index]
    with jfk[0].open("rb") as fh, pytest.raises(openai.BadRequestError) as err2:
        c.audio.transcriptions.create(model="whisper-1", file=fh, prompt="x" * 101)
    assert err2.value.body["param"] == "prompt"  # type: ignore[index]
    with jfk[0].open("rb") as fh:  # 100 characters is still fine
        assert c.audio.transcriptions.create(model="whisper-1", file=fh, prompt="x" * 100).text
    # audio length: jfk.wav (11.0 s) passes 11.5 s, the same clip twice over does not
    import soundfile as sf

    audio, rate = sf.read(str(jfk[0]), dtype="float32")
    twice = io.BytesIO()
    sf.write(twice, np.concatenate([audio, audio])[::2], rate // 2, format="WAV")  # 8 kHz: 350 KB
    with pytest.raises(openai.BadRequestError) as err4:
        c.audio.transcriptions.create(model="whisper-1", file=("twice.wav", twice.getvalue()))
    assert err4.value.body["code"] == "audio_too_long" and "22 s" in err4.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err3:
        c.audio.speech.create(model="tts-1", voice="alloy", input="word " * 401)
    assert err3.value.body["param"] == "input" and "tts.max_say_chars" in err3.value.body["message"]  # type: ignore[index]
    # a 413 by Content-Length comes before any of the body is read
    s = _raw(limited.port, b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % limited.port
             + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 999999999\r\n\r\n")
    assert _read_all(s).startswith(b"HTTP/1.1 413 ")
    s.close()


def test_slow_upload_gets_408_and_a_busy_server_429(limited: RunningServer) -> None:
    import openai

    t0 = time.perf_counter()
    slow = _raw(limited.port, b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % limited.port
                + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\n")
    time.sleep(0.3)
    with pytest.raises(openai.RateLimitError) as err:  # the slow upload holds the one request slot
        client(limited.port, max_retries=0).models.list()
    assert err.value.status_code == 429 and err.value.response.headers["retry-after"] == "1"
    answer = _read_all(slow)
    took = time.perf_counter() - t0
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code": "request_timeout"' in answer
    assert 1.8 < took < 6, took
    slow.close()
    assert client(limited.port).models.list().data  # the slot is free again


def test_unread_speech_response_is_aborted(limited: RunningServer) -> None:
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": SENTENCES * 12, "response_format": "pcm"})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", limited.port))
    s.sendall(f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    api = limited.server.audio_api
    t0 = time.perf_counter()
    while api.active == 0 and time.perf_counter() - t0 < 10:
        time.sleep(0.05)
    assert api.active == 1
    while api.active and time.perf_counter() - t0 < 30:  # never read: aborted ~1 s after the buffers fill
        time.sleep(0.1)
    took = time.perf_counter() - t0
    assert api.active == 0 and took < 15, took
    received = _read_all(s, 5)
    s.close()
    # far less than the ~80 s (3.8 MB) of audio the input makes: synthesis stopped with it
    assert len(received) < 1_500_000, len(received)
    assert client(limited.port).models.list().data


def test_translation_and_languages_with_a_multilingual_model(voice_server: RunningServer, tmp_path: Path) -> None:
    import copy
    import shutil
    import subprocess

    from voice.asr import get_transcriber

    cfg = copy.deepcopy(voice_server.server.cfg)
    cfg.asr.model = "whisper-base"
    resources = copy.copy(voice_server.server.resources)  # same TTS and LLM, another Whisper
    resources.transcriber = get_transcriber(cfg)
    resources.transcriber.load()
    german = tmp_path / "de.wav"
    text = "Guten Morgen. Heute ist das Wetter in Berlin sehr schön, und wir gehen am Nachmittag in den Park."
    subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "-v", "de", "-w", str(german), text], check=True)
    running, shutdown = start_server(cfg, resources=resources)
    try:
        c = client(running.port)
        with german.open("rb") as fh:
            v = c.audio.translations.create(model="whisper-1", file=fh, response_format="verbose_json")
        assert v.language == "german" and v.task == "translate"  # type: ignore[attr-defined]
        # Whisper-base's translation of espeak's German differs between CPUs (CI has heard "the day of
        # the day" and "we will meet again in the next couple of days"; this machine hears "good
        # morning ... Berlin"): assert the answer is English, not its wording
        words = set(v.text.lower().replace(",", " ").replace(".", " ").split())
        english = {"the", "a", "we", "is", "in", "and", "of", "to", "it", "will", "are", "good"}
        german_words = {"der", "die", "das", "ist", "und", "wir", "heute", "morgen", "guten", "sehr", "den"}
        assert len(words & english) >= 2 and not words & german_words, v.text
        with german.open("rb") as fh:
            de = c.audio.transcriptions.create(model="whisper-1", file=fh, language="de")
        assert "morgen" in de.text.lower(), de.text
        assert "whisper-base" in [m.id for m in c.models.list()]
    finally:
        shutdown()


def test_open_timeout_cuts_handshakes_not_long_responses(limited: RunningServer) -> None:
    import numpy as np

    for head in (b"", b"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"):  # silent, then a stalled handshake
        t0 = time.perf_counter()
        s = _raw(limited.port, head)
        assert _read_all(s, 10) == b""
        took = time.perf_counter() - t0
        s.close()
        assert 1.3 < took < 5, took
    # a streamed response that lasts longer than open_timeout_s (1.5 s) is not cut
    t0 = time.perf_counter()
    pcm = client(limited.port).audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES * 8,
                                                    response_format="pcm").read()
    took = time.perf_counter() - t0
    assert took > 1.5 and len(np.frombuffer(pcm, "<i2")) / 24000 > 30, (took, len(pcm))


def test_a_handler_failure_is_a_500_and_the_server_goes_on(limited: RunningServer) -> None:
    import openai

    api = limited.server.audio_api

    async def boom(ex: Any, path: str) -> None:
        raise RuntimeError("a bug")

    api._dispatch = boom  # type: ignore[method-assign]
    try:
        with pytest.raises(openai.InternalServerError) as err:
            client(limited.port, max_retries=0).models.list()
        assert err.value.status_code == 500 and err.value.body["type"] == "server_error"  # type: ignore[index]
    finally:
        del api._dispatch
    assert client(limited.port).models.list().data
