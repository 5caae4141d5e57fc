"""What ``voice wyoming`` answers: asr, tts and handle over Wyoming events.

:class:`WyomingService` is shared by every connection: the models (loaded once, through
:class:`voice.server.resources.ServerResources`), the ``info`` it advertises, and one lock per
Whisper model (as in wyoming-faster-whisper: inference runs in a worker thread, one request per
model at a time; waiting happens on the event loop, not in a blocked thread). Piper needs no
lock: its ONNX Runtime session may run several sentences at once.

:class:`WyomingSession` is one connection's state. ``handle(event)`` yields the events to send
back, in order; nothing in it touches a socket. Message order, per service::

    asr:    -> transcribe? audio-start audio-chunk* audio-stop      <- transcript
    tts:    -> synthesize                                           <- audio-start audio-chunk* audio-stop
            -> synthesize-start synthesize-chunk* synthesize? synthesize-stop
               <- (audio-start audio-chunk* audio-stop)* per speakable piece, then synthesize-stopped
    handle: -> transcript   <- handled-start handled-chunk* handled-stop handled   (or not-handled)
    info:   -> describe     <- info          other: -> ping <- pong

A ``synthesize`` inside a stream is the copy clients send for servers without streaming; it is
ignored, as wyoming-piper does. Anything else (an unknown type, audio without audio-start, a
field of the wrong type, a request over a limit) gets an ``error`` event and the connection
stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    SelectProgram,
    TtsProgram,
    TtsVoice,
)
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from voice import __version__
from voice.audio.pcm import WIDTHS, float_to_pcm16, pcm_to_float
from voice.config import Config
from voice.errors import VoiceError

log = logging.getLogger(__name__)

ASR_RATE = 16000
#: Shown by clients beside each program, model and voice; voice has no public home page to link.
ATTRIBUTION = Attribution(name="voice", url="")
PROGRAM_ASR = "voice-asr"
PROGRAM_TTS = "voice-tts"
PROGRAM_HANDLE = "voice-handle"


class RequestError(Exception):
    """A request this connection cannot serve; becomes one ``error`` event."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def error_event(code: str, text: str) -> Event:
    return Error(text=text, code=code).event()


class WyomingService:
    """Models, info and locks shared by all connections. ``await start()`` loads everything."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.resources: Any = None
        self.info_event: Event | None = None
        self._asr_locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        from voice.server.resources import ServerResources

        self.resources = ServerResources(self.cfg)
        await self.resources.start()
        self.info_event = self._info().event()

    async def aclose(self) -> None:
        if self.resources is not None:
            await self.resources.aclose()

    # ---------------------------------------------------------------- models
    @property
    def transcriber(self) -> Any:
        return self.resources.transcriber

    @property
    def tts(self) -> Any:
        return self.resources.tts

    def asr_lock(self, model: str) -> asyncio.Lock:
        return self._asr_locks.setdefault(model, asyncio.Lock())

    def asr_model_name(self) -> str:
        return str(self.transcriber.model_name)

    def asr_languages(self) -> list[str]:
        loaded = self.transcriber.load()  # already loaded by start(): no blocking here
        return sorted(loaded.supported_languages()) if loaded.multilingual else ["en"]

    def voice_names(self) -> list[str]:
        return [v for v in self.resources.voices() if v != "default"]

    def voice_languages(self, voice: str) -> list[str]:
        """A Piper voice's language from its JSON config (en_US); else the engine's guess, en."""
        resolve = getattr(self.tts, "resolve_voice", None)
        if resolve is not None:
            try:
                with open(f"{resolve(voice)}.json", encoding="utf-8") as fh:
                    code = json.load(fh).get("language", {}).get("code")
                if isinstance(code, str) and code:
                    return [code]
            except (OSError, ValueError, VoiceError):
                pass
        return ["en"]

    def llm_name(self) -> str:
        llm = self.cfg.llm
        if llm.chain:
            return llm.chain
        if llm.backend == "embedded" and not llm.base_url:
            return llm.embedded.model
        return llm.model or llm.backend

    def _info(self) -> Info:
        asr_model = self.asr_model_name()
        voices = [
            TtsVoice(name=v, attribution=ATTRIBUTION, installed=True, description=f"{self.tts.name} voice {v}",
                     version=None, languages=self.voice_languages(v))
            for v in self.voice_names()
        ]
        languages = sorted({lang for v in voices for lang in v.languages}) or ["en"]
        return Info(
            asr=[AsrProgram(
                name=PROGRAM_ASR, attribution=ATTRIBUTION, installed=True, version=__version__,
                description="voice: Whisper (faster-whisper)",
                models=[AsrModel(name=asr_model, attribution=ATTRIBUTION, installed=True, version=None,
                                 description=f"Whisper {asr_model}", languages=self.asr_languages())],
            )],
            tts=[TtsProgram(
                name=PROGRAM_TTS, attribution=ATTRIBUTION, installed=True, version=__version__,
                description=f"voice: {self.tts.name}", voices=voices, supports_synthesize_streaming=True,
            )],
            handle=[HandleProgram(
                name=PROGRAM_HANDLE, attribution=ATTRIBUTION, installed=True, version=__version__,
                description="voice: LLM chain with retrieval over the knowledge base",
                models=[HandleModel(name=self.llm_name(), attribution=ATTRIBUTION, installed=True,
                                    version=None, description="the configured chain", languages=languages)],
                supports_handled_streaming=True,
            )],
        )

    # ---------------------------------------------------------------- work
    async def transcribe(self, audio: np.ndarray, language: str | None) -> Any:
        """16 kHz float32 mono -> Transcript, one request per model at a time, off the loop."""
        async with self.asr_lock(self.asr_model_name()):
            lang = self.transcriber.check_language(language)
            return await self.transcriber.transcribe(audio, live=self.cfg.wyoming.asr_live, language=lang)

    def resolve_voice(self, name: str | None, language: str | None) -> str | None:
        """The voice to speak with: a name (or alias) the engine knows, else one for ``language``."""
        if name:
            return name  # the engine resolves names and aliases, and refuses unknown ones
        if language:
            want = language.replace("-", "_").lower()
            for v in self.voice_names():
                if any(lang.lower() == want or lang.lower().split("_")[0] == want for lang in self.voice_languages(v)):
                    return v
            raise RequestError("unknown-voice", f"no voice for language '{language}' (voices: {', '.join(self.voice_names())})")
        return None


def _typed(cls: Any, event: Event) -> Any:
    """``cls.from_event(event)``; wyoming reads required fields with [] and trusts their types."""
    try:
        return cls.from_event(event)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RequestError("malformed-event", f"bad '{event.type}' event: {type(err).__name__}: {err}") from None


@dataclass
class _AudioIn:
    """One transcription being received."""

    rate: int
    width: int
    channels: int
    max_samples: int
    #: To 16 kHz as chunks arrive, so a stream holds at most max_audio_s of 16 kHz float32.
    resampler: Any
    parts: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    failed: bool = False


@dataclass
class _TextStream:
    """One synthesize-start ... synthesize-stop stream."""

    voice: str | None
    chunker: Any
    chars: int = 0
    failed: bool = False


class WyomingSession:
    """One client connection: parsed events in, events to send out (see the module docstring)."""

    def __init__(self, service: WyomingService) -> None:
        self.service = service
        self.cfg = service.cfg.wyoming
        self._language: str | None = None
        self._audio: _AudioIn | None = None
        self._stream: _TextStream | None = None
        self._chain: Any = None
        self._turn = 0

    async def handle(self, event: Event) -> AsyncIterator[Event]:
        """The events to send for ``event``; a bad request yields one ``error`` event."""
        try:
            async for out in self._dispatch(event):
                yield out
        except RequestError as err:
            yield error_event(err.code, err.text)
        except VoiceError as err:
            yield error_event(type(err).__name__, str(err))

    async def aclose(self) -> None:
        if self._chain is not None:
            await self._chain.aclose()
            self._chain = None

    async def _dispatch(self, event: Event) -> AsyncIterator[Event]:
        t = event.type
        if Describe.is_type(t):
            assert self.service.info_event is not None
            yield self.service.info_event
        elif Ping.is_type(t):
            yield Pong(text=_typed(Ping, event).text).event()
        elif SelectProgram.is_type(t):
            name = _typed(SelectProgram, event).name
            if name not in (PROGRAM_ASR, PROGRAM_TTS, PROGRAM_HANDLE):
                raise RequestError("unknown-program", f"no program '{name}' (programs: {PROGRAM_ASR}, {PROGRAM_TTS}, {PROGRAM_HANDLE})")
        elif Transcribe.is_type(t):
            self._transcribe_request(_typed(Transcribe, event))
        elif AudioStart.is_type(t):
            self._audio_start(_typed(AudioStart, event))
        elif AudioChunk.is_type(t):
            self._audio_chunk(_typed(AudioChunk, event))
        elif AudioStop.is_type(t):
            async for out in self._audio_stop():
                yield out
        elif Synthesize.is_type(t):
            if self._stream is None:
                async for out in self._synthesize(_typed(Synthesize, event)):
                    yield out
        elif SynthesizeStart.is_type(t):
            self._synthesize_start(_typed(SynthesizeStart, event))
        elif SynthesizeChunk.is_type(t):
            async for out in self._synthesize_chunk(_typed(SynthesizeChunk, event)):
                yield out
        elif SynthesizeStop.is_type(t):
            async for out in self._synthesize_stop():
                yield out
        elif Transcript.is_type(t):
            async for out in self._handle_transcript(_typed(Transcript, event)):
                yield out
        else:
            raise RequestError("unknown-event", f"voice wyoming does not handle '{t}' events")

    # ---------------------------------------------------------------- asr
    def _transcribe_request(self, req: Transcribe) -> None:
        if req.name is not None and not isinstance(req.name, str):
            raise RequestError("malformed-event", "transcribe name must be a string")
        if req.language is not None and not isinstance(req.language, str):
            raise RequestError("malformed-event", "transcribe language must be a string")
        served = self.service.asr_model_name()
        if req.name and req.name != served:
            registry = self.service.transcriber.registry
            if registry.canonical(req.name) != served:
                raise RequestError("unknown-model", f"this server transcribes with '{served}', not '{req.name}'")
        self._language = req.language or None

    def _audio_start(self, start: AudioStart) -> None:
        rate, width, channels = start.rate, start.width, start.channels
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels)):
            raise RequestError("malformed-event", "audio-start rate, width and channels must be integers")
        if not 1000 <= rate <= 192_000 or width not in WIDTHS or not 1 <= channels <= 8:
            raise RequestError("bad-audio-format", f"audio format rate={rate} width={width} channels={channels}"
                               " is not supported (rate 1000-192000 Hz, width 1, 2 or 4 bytes, 1-8 channels)")
        from voice.audio.resample import StreamResampler

        self._audio = _AudioIn(rate, width, channels, max_samples=int(self.cfg.max_audio_s * rate),
                               resampler=StreamResampler(rate, ASR_RATE))

    def _audio_chunk(self, chunk: AudioChunk) -> None:
        audio = self._audio
        if audio is None:
            raise RequestError("no-audio-start", "audio-chunk before audio-start")
        if audio.failed:
            return
        if (chunk.rate, chunk.width, chunk.channels) != (audio.rate, audio.width, audio.channels):
            audio.failed = True
            raise RequestError("bad-audio-format", "audio-chunk format differs from its audio-start")
        samples = pcm_to_float(chunk.audio, audio.width, audio.channels)
        if audio.samples + len(samples) > audio.max_samples:
            audio.failed = True
            audio.parts.clear()
            raise RequestError("audio-too-long", f"audio is longer than {self.cfg.max_audio_s:g} s"
                               " (wyoming.max_audio_s); the rest of this stream is ignored")
        audio.samples += len(samples)
        audio.parts.append(audio.resampler.process(samples))

    async def _audio_stop(self) -> AsyncIterator[Event]:
        audio, self._audio = self._audio, None
        if audio is None:
            raise RequestError("no-audio-start", "audio-stop before audio-start")
        language, self._language = self._language, None
        if audio.failed:
            return
        audio.parts.append(audio.resampler.flush())
        data = np.concatenate(audio.parts)
        t0 = time.perf_counter()
        result = await self.service.transcribe(data, language)
        log.info("transcribed %.2f s in %.2f s: %r", len(data) / ASR_RATE, time.perf_counter() - t0, result.text)
        yield Transcript(text=result.text, language=result.language).event()

    # ---------------------------------------------------------------- tts
    def _check_text(self, text: Any, used: int = 0) -> str:
        if not isinstance(text, str):
            raise RequestError("malformed-event", "text must be a string")
        if used + len(text) > self.cfg.max_text_chars:
            raise RequestError("text-too-long", f"text is longer than {self.cfg.max_text_chars} characters"
                               " (wyoming.max_text_chars)")
        return text

    def _voice(self, voice: Any) -> str | None:
        if voice is None:
            return None
        name, language = voice.name, voice.language
        if (name is not None and not isinstance(name, str)) or (language is not None and not isinstance(language, str)):
            raise RequestError("malformed-event", "voice name and language must be strings")
        return self.service.resolve_voice(name, language)

    async def _speak(self, text: str, voice: str | None) -> AsyncIterator[Event]:
        """One audio-start / audio-chunk* / audio-stop cycle for ``text``."""
        engine = self.service.tts
        step = self.cfg.samples_per_chunk
        rate = None
        async for chunk in engine.stream(text, voice=voice):
            if rate is None:
                rate = chunk.sample_rate
                yield AudioStart(rate=rate, width=2, channels=1).event()
            pcm = float_to_pcm16(chunk.audio)
            for i in range(0, len(pcm), step * 2):
                yield AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i : i + step * 2]).event()
        if rate is None:  # nothing speakable (punctuation only): an empty cycle, as wyoming-piper
            yield AudioStart(rate=engine.sample_rate, width=2, channels=1).event()
        yield AudioStop().event()

    async def _synthesize(self, req: Synthesize) -> AsyncIterator[Event]:
        text = self._check_text(req.text)
        async for out in self._speak(text, self._voice(req.voice)):
            yield out

    def _synthesize_start(self, req: SynthesizeStart) -> None:
        from voice.tts.chunker import SpeechChunker

        self._stream = _TextStream(voice=self._voice(req.voice), chunker=SpeechChunker(self.service.cfg.tts.chunker))

    async def _synthesize_chunk(self, req: SynthesizeChunk) -> AsyncIterator[Event]:
        stream = self._stream
        if stream is None:
            raise RequestError("no-synthesize-start", "synthesize-chunk before synthesize-start")
        if stream.failed:
            return
        try:
            text = self._check_text(req.text, stream.chars)
        except RequestError:
            stream.failed = True
            raise
        stream.chars += len(text)
        for piece in stream.chunker.feed(text):
            async for out in self._speak(piece, stream.voice):
                yield out

    async def _synthesize_stop(self) -> AsyncIterator[Event]:
        stream, self._stream = self._stream, None
        if stream is None:
            raise RequestError("no-synthesize-start", "synthesize-stop before synthesize-start")
        if not stream.failed:
            for piece in stream.chunker.flush():
                async for out in self._speak(piece, stream.voice):
                    yield out
        yield SynthesizeStopped().event()

    # ---------------------------------------------------------------- handle
    async def _handle_transcript(self, req: Transcript) -> AsyncIterator[Event]:
        text = self._check_text(req.text).strip()
        if not text:
            yield NotHandled(text="nothing was said").event()
            return
        if self._chain is None:
            self._chain = await self.service.resources.make_chain(self.service.cfg)
        self._turn += 1
        parts: list[str] = []
        started = False
        try:
            async for delta in self._chain.astream(text, turn_id=self._turn):
                if not started:
                    started = True
                    yield HandledStart().event()
                parts.append(delta)
                yield HandledChunk(text=delta).event()
        except VoiceError as err:  # the LLM is down or timed out: say so, keep the connection
            if started:
                yield HandledStop().event()
            yield NotHandled(text=str(err)).event()
            return
        if not started:
            yield HandledStart().event()
        yield HandledStop().event()
        yield Handled(text="".join(parts).strip()).event()
