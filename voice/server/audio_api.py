"""The OpenAI audio API's asyncio side: one :class:`HttpExchange` in, admission (Host, token,
Origin, concurrency), then transcription / translation / speech / models on the server's shared
models. Parsing, validation and rendering live in :mod:`voice.server.openai_audio`, the audio
encoders in :mod:`voice.server.encoders`. Decoding, Whisper and encoding run in worker threads;
Whisper requests wait their turn on an asyncio lock (one per server), not in a blocked thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.datastructures import Headers

from voice.config import Config
from voice.errors import ConfigError, InputError, VoiceError
from voice.server.encoders import SpeechEncoder
from voice.server.http import Gate
from voice.server.http_exchange import HttpExchange
from voice.server.metrics import ServerMetrics
from voice.server.openai_audio import (
    SPEECH_CONTENT_TYPES,
    ApiError,
    FormReader,
    Names,
    SpeechRequest,
    TranscriptionRequest,
    json_bytes,
    render_transcript,
    speech_delta,
    speech_done,
    speech_request,
    transcript_events,
    transcription_request,
)
from voice.server.resources import ServerResources
from voice.server.tcp import reset

log = logging.getLogger(__name__)

ROUTES = {"/v1/audio/transcriptions": "POST", "/v1/audio/translations": "POST", "/v1/audio/speech": "POST",
          "/v1/models": "GET"}
#: File name suffixes kept on the temporary copy of an upload (FFmpeg probes better with them).
_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".oga", ".m4a", ".mp4", ".webm", ".mpga", ".mpeg", ".aac"}


def _too_long(seconds: float, max_s: float) -> ApiError:
    return ApiError(400, f"the audio is {seconds:.0f} s long; at most {max_s:.0f} s (server.http_max_audio_s)",
                    param="file", code="audio_too_long")


def _probe_seconds(path: str) -> float | None:
    """The length the container's headers give (None if they give none or FFmpeg cannot open it)."""
    import av

    try:
        with av.open(path) as container:
            if container.duration:
                return float(container.duration) / 1_000_000
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError):
        pass
    return None


def decode_upload(data: bytes | bytearray, filename: str, max_s: float) -> np.ndarray:
    """An uploaded file as 16 kHz float32 mono; ApiError 415 when it holds no audio, 400 when it
    is longer than ``max_s`` (checked on the headers before decoding, and on the samples). Blocking."""
    from voice.audio.files import load_audio

    suffix = Path(filename).suffix.lower()
    fd, path = tempfile.mkstemp(prefix="voice-upload-", suffix=suffix if suffix in _SUFFIXES else "")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        claimed = _probe_seconds(path)
        if claimed is not None and claimed > max_s:
            raise _too_long(claimed, max_s)
        audio = load_audio(path, sample_rate=16000)
        if len(audio) / 16000 > max_s:
            raise _too_long(len(audio) / 16000, max_s)
        return audio
    except InputError as err:
        reason = str(err).replace(f"{path}: ", "").replace(path, "the file")
        raise ApiError(415, f"'file' ({filename[:80] or 'upload'}) is not audio this server can decode: {reason}",
                       param="file", code="invalid_file_format") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


class AudioApi:
    """``await api(exchange)`` serves one request. Shares the models in ``resources``."""

    def __init__(self, cfg: Config, resources: ServerResources, gate: Gate,
                 metrics: ServerMetrics | None = None) -> None:
        self.cfg = cfg
        self.resources = resources
        self.gate = gate
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.active = 0
        self.created = int(time.time())
        self._names: Names | None = None
        self._asr_lock: asyncio.Lock | None = None
        self._exchanges: set[HttpExchange] = set()

    def abort_all(self) -> None:
        """Server shutdown: end every request under way now (streams included)."""
        for ex in list(self._exchanges):
            reset(ex.conn.transport)

    def names(self) -> Names:
        if self._names is None:
            transcriber = self.resources.transcriber
            loaded = transcriber.load()  # loaded by resources.start(): no blocking here
            asr = str(transcriber.model_name)
            self._names = Names(
                asr_model=asr, asr_names=tuple(dict.fromkeys((asr, str(self.cfg.asr.model)))),
                tts_model=str(self.resources.tts.name), voices=tuple(self.resources.voices()),
                multilingual=bool(loaded.multilingual))
        return self._names

    # ------------------------------------------------------------------ admission
    async def __call__(self, ex: HttpExchange) -> None:
        self._exchanges.add(ex)
        task = asyncio.current_task()
        if task is not None:  # held until the connection's task ends (after the half-close linger)
            task.add_done_callback(lambda _: self._exchanges.discard(ex))
        try:
            await self._serve(ex)
        finally:
            if ex.request is not None:
                path = ex.path.rstrip("/")
                route = path if path in ROUTES else "/v1/models/{id}" if path.startswith("/v1/models/") else "other"
                # an error raised here is answered by the exchange after this: count its status then
                ex.on_status = lambda status: self.metrics.http_requests.update([(route, status)])
    async def _serve(self, ex: HttpExchange) -> None:
        await ex.read_request()
        headers = Headers(list(ex.headers.items()))
        policy = self.gate.policy
        if not policy.host_allowed(headers.get("Host")):
            self.gate.on_reject("host")
            raise ApiError(403, "host not allowed (server.allowed_hosts)", code="host_not_allowed")
        origin = headers.get("Origin")
        if origin is not None:
            if not policy.origin_allowed(origin, headers.get("Host")):
                self.gate.on_reject("origin")
                raise ApiError(403, "origin not allowed (server.allowed_origins)", code="origin_not_allowed")
            ex.extra_headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        path, method = ex.path.rstrip("/") or "/", ex.method
        if method == "OPTIONS":  # CORS preflight: no token needed (browsers send none)
            await ex.respond(204, "text/plain", b"", [
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "authorization, content-type, openai-beta, x-stainless-os, "
                 "x-stainless-lang, x-stainless-package-version, x-stainless-runtime, x-stainless-arch, "
                 "x-stainless-runtime-version, x-stainless-retry-count, x-stainless-timeout"),
                ("Access-Control-Max-Age", "600")])
            return
        if self.gate.token is not None and not self.gate.authorized(headers):
            self.gate.on_reject("unauthorized")
            await ex.respond_error(ApiError(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                                            code="invalid_api_key"), [("WWW-Authenticate", "Bearer")])
            return
        want = ROUTES.get(path) or ("GET" if path.startswith("/v1/models/") else None)
        if want is None:
            raise ApiError(404, f"no endpoint {method} {path[:100]}", code="unknown_url")
        if method != want:
            await ex.respond_error(ApiError(405, f"{path} takes {want}, not {method[:16]}",
                                            code="method_not_allowed"), [("Allow", want)])
            return
        if self.active >= self.cfg.server.http_max_requests:
            await ex.respond_error(ApiError(429, f"server busy: {self.active} audio requests under way "
                                            "(server.http_max_requests); try again shortly",
                                            code="server_busy"), [("Retry-After", "1")])
            return
        self.active += 1
        self.metrics.http_active += 1
        try:
            await self._dispatch(ex, path)
        finally:
            self.active -= 1
            self.metrics.http_active -= 1

    async def _dispatch(self, ex: HttpExchange, path: str) -> None:
        if path == "/v1/models":
            await ex.respond(200, "application/json", json_bytes(self.names().models(self.created)))
        elif path.startswith("/v1/models/"):
            wanted = path.removeprefix("/v1/models/")
            found = [m for m in self.names().models(self.created)["data"] if m["id"] == wanted]
            if not found:
                raise ApiError(404, f"the model '{wanted[:100]}' does not exist", param="model",
                               code="model_not_found")
            await ex.respond(200, "application/json", json_bytes(found[0]))
        elif path == "/v1/audio/speech":
            await self._speech(ex)
        else:
            await self._transcribe(ex, translate=path.endswith("/translations"))

    # ------------------------------------------------------------------ speech to text
    async def _transcribe(self, ex: HttpExchange, *, translate: bool) -> None:
        form = FormReader(ex.headers.get("content-type", ""), max_field_chars=self.cfg.server.http_max_field_chars)
        async for piece in ex.body():
            form.feed(piece)
        form.finish()
        req = transcription_request(form, self.names(), translate=translate)
        audio = await asyncio.to_thread(decode_upload, req.audio, req.filename, self.cfg.server.http_max_audio_s)
        transcript = await self._run_whisper(req, audio)
        if req.stream:
            await ex.start(200, [("Content-Type", "text/event-stream; charset=utf-8")])
            for event in transcript_events(transcript):
                await ex.write(event)
            await ex.end()
            return
        ctype, body = render_transcript(req.response_format, transcript,
                                        task="translate" if translate else "transcribe")
        await ex.respond(200, ctype, body)

    async def _run_whisper(self, req: TranscriptionRequest, audio: np.ndarray) -> Any:
        transcriber = self.resources.transcriber
        try:
            language = transcriber.check_language(req.language)
        except ConfigError as err:
            raise ApiError(400, str(err), param="language", code="unsupported_language") from None
        options: dict[str, Any] = {}
        if req.prompt:
            options["initial_prompt"] = req.prompt
        if req.temperature is not None:
            options["temperature"] = req.temperature
        if req.translate:
            options["task"] = "translate"
        if self._asr_lock is None:
            self._asr_lock = asyncio.Lock()
        async with self._asr_lock:
            try:
                return await asyncio.to_thread(transcriber.transcribe_sync, audio, language=language,
                                               options=options)
            except VoiceError as err:
                raise ApiError(400, str(err), code="invalid_value") from None

    # ------------------------------------------------------------------ text to speech
    async def _speech(self, ex: HttpExchange) -> None:
        body = await ex.read_body()
        req = speech_request(ex.headers.get("content-type", ""), body, self.names(),
                             max_input_chars=self.cfg.tts.max_say_chars,
                             max_field_chars=self.cfg.server.http_max_field_chars)
        await self.speak(ex, req)

    async def speak(self, ex: HttpExchange, req: SpeechRequest) -> None:
        """Stream ``req`` as it is synthesized: headers and the first sentence's audio go as soon
        as that sentence is ready (an engine error before it is still a clean 400)."""
        from voice.tts.base import CancelToken

        cancel = CancelToken()
        stream = self.resources.tts.stream(req.input, voice=req.voice, speed=req.speed, cancel=cancel)
        encoder: SpeechEncoder | None = None
        sse = req.stream_format == "sse"
        try:
            try:
                first = await anext(stream, None)
            except VoiceError as err:
                raise ApiError(400, str(err), param="voice" if req.voice else None) from None
            ctype = "text/event-stream; charset=utf-8" if sse else SPEECH_CONTENT_TYPES[req.response_format]
            await ex.start(200, [("Content-Type", ctype)])
            chunk = first
            while chunk is not None:
                if encoder is None:
                    encoder = SpeechEncoder(req.response_format, chunk.sample_rate)
                data = await asyncio.to_thread(encoder.encode, chunk.audio)
                await ex.write(speech_delta(data) if sse and data else data)
                chunk = await anext(stream, None)
            if encoder is None:  # nothing speakable in the input: an empty (but valid) stream
                encoder = SpeechEncoder(req.response_format, self.resources.tts.sample_rate)
            tail = await asyncio.to_thread(encoder.finish)
            if sse:
                await ex.write(speech_delta(tail) if tail else b"")
                await ex.write(speech_done(len(req.input)))
            else:
                await ex.write(tail)
            await ex.end()
        finally:
            cancel.cancel()
            await stream.aclose()  # type: ignore[attr-defined]
            if encoder is not None:
                encoder.close()
