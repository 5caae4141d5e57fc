"""faster-whisper (CTranslate2) behind the :class:`~voice.asr.base.Transcriber` interface.

Models are resolved through the registry, placed on a device by :func:`voice.devices.choose`
(a real CTranslate2 encode decides whether CUDA works), loaded on first use and kept in a
:class:`ModelCache` keyed by (model path, device, compute type, threads). Each loaded model has
one lock: CTranslate2 runs one transcription per model at a time, in a worker thread.

Short encoder window (``asr.live_window_s`` / ``asr.file_window_s``): faster-whisper pads every
utterance to Whisper's 30 s window, so the encoder costs the same for a 2 s turn as for 30 s of
speech. The model is loaded as a :class:`WhisperModel` subclass whose ``encode`` keeps only the
first N mel frames of the (zero-padded) window when the utterance fits in N with a margin, the
same idea as whisper.cpp's ``audio_ctx``: CTranslate2 slices the encoder's positional embedding to
the input length, and decoding, timestamps and language detection run on that shorter encoder
output through faster-whisper's own code. Longer audio uses the stock 30 s path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.asr.base import Segment, Transcript
from voice.audio.pcm import SAMPLE_RATE
from voice.config import AsrConfig, Config
from voice.devices import DeviceChoice, choose, ctranslate2_probe
from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.models import Registry, registry_for

log = logging.getLogger(__name__)

#: Audio whose peak stays below this (about -60 dBFS) is silence: no model call, empty text.
SILENCE_PEAK = 1e-3

#: Whisper's window (s) and mel frames per second (10 ms hop).
STOCK_WINDOW_S = 30.0
FRAMES_PER_S = 100
#: Silence the encoder sees after the utterance in a short window (s).
WINDOW_MARGIN_S = 1.0
#: Cap on tokens decoded per second of a short window: a decoder that starts repeating itself
#: (more likely the shorter the window) stops there instead of at Whisper's 448 tokens.
MAX_TOKENS_PER_WINDOW_S = 15

CacheKey = tuple[str, str, str, int]


def encoder_frames(duration_s: float, window_s: float) -> int | None:
    """Mel frames the encoder sees for ``duration_s`` of audio, or None for the stock 30 s window.

    The window is ``max(window_s, duration_s + WINDOW_MARGIN_S)`` rounded up to whole seconds
    (an even number of frames, as the encoder's stride-2 convolution wants).
    """
    if not window_s > 0:
        raise ConfigError(f"asr window must be a positive number of seconds, got {window_s}")
    seconds = max(float(window_s), float(math.ceil(duration_s + WINDOW_MARGIN_S)))
    if seconds >= STOCK_WINDOW_S:
        return None
    return 2 * math.ceil(seconds * FRAMES_PER_S / 2)


def _windowed_whisper(path: str, **kwargs: Any) -> Any:
    """A faster-whisper ``WhisperModel`` whose encoder can run on a window shorter than 30 s."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        """``encode`` keeps the first ``encoder_frames`` mel frames (None = all 3000).

        Set it only while holding the model's lock, and only when the audio fits in it: the
        frames dropped are then the zero padding faster-whisper added.
        """

        encoder_frames: int | None = None

        def encode(self, features: np.ndarray) -> Any:
            n = self.encoder_frames
            if n is not None and features.shape[-1] > n:
                features = features[..., :n]
            return super().encode(features)

    return WindowedWhisperModel(path, **kwargs)


@dataclass(frozen=True)
class DecodeOptions:
    """The faster-whisper options that differ between live turns and files."""

    beam_size: int
    without_timestamps: bool
    condition_on_previous_text: bool

    def kwargs(self) -> dict[str, Any]:
        return {
            "beam_size": self.beam_size,
            "without_timestamps": self.without_timestamps,
            "condition_on_previous_text": self.condition_on_previous_text,
        }


def live_options(cfg: AsrConfig) -> DecodeOptions:
    """Low latency: greedy by default, no timestamp tokens, no conditioning on earlier text."""
    return DecodeOptions(cfg.live_beam_size, without_timestamps=True, condition_on_previous_text=False)


def file_options(cfg: AsrConfig, beam_size: int | None = None) -> DecodeOptions:
    """Accuracy first: beam search (5 by default), timestamps for subtitles."""
    return DecodeOptions(beam_size or cfg.file_beam_size, without_timestamps=False, condition_on_previous_text=True)


@dataclass
class LoadedModel:
    """One faster-whisper model in memory, with the lock that serialises its use."""

    name: str
    path: Path
    choice: DeviceChoice
    cpu_threads: int
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    load_s: float = 0.0

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def supported_languages(self) -> list[str]:
        return list(self.model.supported_languages)


class ModelCache:
    """Loaded models keyed by (path, device, compute type, threads); loads each key once."""

    def __init__(self) -> None:
        self._models: dict[CacheKey, LoadedModel] = {}
        self._key_locks: dict[CacheKey, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, key: CacheKey, load: Any) -> LoadedModel:
        """The cached model for ``key``, calling ``load()`` once if it is not there yet."""
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded: LoadedModel = load()
            with self._lock:
                self._models[key] = loaded
                self.loads += 1
            return loaded

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def _threads(n: int) -> int:
    if n > 0:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class WhisperTranscriber:
    """A faster-whisper model chosen by ``AsrConfig``; cheap to build, loads on first use."""

    def __init__(self, cfg: AsrConfig, registry: Registry, cache: ModelCache | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.cache = cache if cache is not None else ModelCache()
        self._loaded: LoadedModel | None = None

    # ------------------------------------------------------------------ loading
    def load(self) -> LoadedModel:
        """Resolve, place and load the model (once per cache key). Blocking."""
        if self._loaded is not None:
            return self._loaded
        resolved = self.registry.resolve(self.cfg.model, kind="asr")
        path = Path(resolved.path)
        if not path.is_dir() or not (path / "model.bin").exists():
            raise ModelNotAvailable(
                f"ASR model '{self.cfg.model}' at {path} is not a faster-whisper model folder (no model.bin)"
            )
        if not (path / "tokenizer.json").exists():
            raise ModelNotAvailable(f"ASR model folder {path} has no tokenizer.json; put it beside model.bin")
        choice = choose(
            self.cfg.device,
            ctranslate2_probe(str(path)),
            runtime="ctranslate2",
            compute_type=self.cfg.compute_type,
        )
        threads = _threads(self.cfg.cpu_threads)
        key: CacheKey = (str(path), choice.device, choice.compute_type, threads)

        def _load() -> LoadedModel:
            t0 = time.perf_counter()
            try:
                model = _windowed_whisper(
                    str(path), device=choice.device, compute_type=choice.compute_type, cpu_threads=threads
                )
            except (RuntimeError, ValueError, OSError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ModelNotAvailable(f"cannot load ASR model '{resolved.name}' from {path}: {first}") from None
            dt = time.perf_counter() - t0
            log.info("loaded %s on %s/%s in %.2fs (%s)", resolved.name, choice.device,
                     choice.compute_type, dt, choice.reason)
            return LoadedModel(resolved.name, path, choice, threads, model, load_s=dt)

        self._loaded = self.cache.get(key, _load)
        return self._loaded

    async def start(self) -> None:
        """Load off the event loop."""
        await asyncio.to_thread(self.load)

    @property
    def model_name(self) -> str:
        return self._loaded.name if self._loaded else self.cfg.model

    @property
    def device(self) -> str:
        return self._loaded.choice.device if self._loaded else self.cfg.device

    # ------------------------------------------------------------------ language
    def check_language(self, language: str | None = None) -> str | None:
        """The language to decode with (None = detect); ConfigError when the model cannot do it."""
        loaded = self.load()
        lang = language if language is not None else self.cfg.language
        if lang is not None:
            lang = lang.strip().lower() or None
        if not loaded.multilingual:
            if lang not in (None, "en"):
                raise ConfigError(
                    f"ASR model '{loaded.name}' is English-only and cannot transcribe language '{lang}';"
                    " use a multilingual model such as whisper-base, or leave asr.language unset"
                )
            return "en"
        if lang is not None and lang not in loaded.supported_languages():
            raise ConfigError(f"asr.language '{lang}' is not a language code Whisper knows (e.g. en, de, fr)")
        return lang

    # ------------------------------------------------------------------ transcribing
    def transcribe_sync(
        self,
        audio: np.ndarray,
        *,
        live: bool = False,
        language: str | None = None,
        beam_size: int | None = None,
        window_s: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> Transcript:
        """Transcribe float32 mono 16 kHz audio. Blocking: call from a worker thread.

        ``window_s`` overrides the configured encoder window (30 = stock faster-whisper);
        ``options`` are more faster-whisper ``transcribe`` arguments (initial_prompt, temperature, task).
        """
        loaded = self.load()
        lang = self.check_language(language)
        data = np.asarray(audio, dtype=np.float32)
        if data.ndim != 1:
            raise InputError(f"audio must be mono (1-D), got shape {data.shape}")
        duration = data.shape[0] / SAMPLE_RATE
        base = {"duration_s": duration, "model": loaded.name, "device": loaded.choice.device}
        if data.size == 0 or float(np.max(np.abs(data))) < SILENCE_PEAK:
            return Transcript(text="", segments=[], language=lang, **base)
        opts = live_options(self.cfg) if live else file_options(self.cfg, beam_size)
        if live and beam_size:
            opts = DecodeOptions(beam_size, opts.without_timestamps, opts.condition_on_previous_text)
        window_s = self.configured_window_s(live) if window_s is None else window_s
        frames = encoder_frames(duration, window_s)
        kwargs = {**opts.kwargs(), **(options or {})}
        with loaded.lock:
            segs, info = _decode(loaded, data, lang, kwargs, frames)
            if frames is not None and not segs:
                # A short window can push Whisper's no-speech estimate over its threshold (seen
                # with whisper-base on a 5.6 s German clip): nothing heard -> try the stock window.
                log.debug("nothing decoded with a %d-frame window; retrying with 30 s", frames)
                segs, info = _decode(loaded, data, lang, kwargs, None)
        text = " ".join(s.text for s in segs)
        return Transcript(text=text, segments=segs, language=info.language, **base)

    async def transcribe(
        self,
        audio: np.ndarray,
        *,
        live: bool = False,
        language: str | None = None,
        beam_size: int | None = None,
        window_s: float | None = None,
    ) -> Transcript:
        """Transcribe in a worker thread; the event loop stays free."""
        return await asyncio.to_thread(
            self.transcribe_sync, audio, live=live, language=language, beam_size=beam_size, window_s=window_s
        )

    def configured_window_s(self, live: bool) -> float:
        """The configured encoder window for live turns or files (seconds)."""
        return self.cfg.live_window_s if live else self.cfg.file_window_s


def _decode(loaded: LoadedModel, data: np.ndarray, lang: str | None, kwargs: dict[str, Any],
            frames: int | None) -> tuple[list[Segment], Any]:
    """One faster-whisper transcription with the encoder on ``frames`` (None = 30 s). Hold the lock."""
    if frames is not None:
        kwargs = {**kwargs, "max_new_tokens": int(frames / FRAMES_PER_S * MAX_TOKENS_PER_WINDOW_S)}
    loaded.model.encoder_frames = frames
    try:
        segments, info = loaded.model.transcribe(data, language=lang, **kwargs)
        segs = [Segment(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segments]
    finally:
        loaded.model.encoder_frames = None
    return [s for s in segs if s.text], info


def get_transcriber(cfg: Config, cache: ModelCache | None = None) -> WhisperTranscriber:
    """The transcriber ``cfg.asr`` asks for. Cheap: the model loads on first use."""
    return WhisperTranscriber(cfg.asr, registry_for(cfg), cache)


def transcribe_sync(
    cfg: Config,
    audio: np.ndarray,
    *,
    live: bool = False,
    language: str | None = None,
    cache: ModelCache | None = None,
) -> Transcript:
    """One-shot transcription for plain (non-async) code."""
    return get_transcriber(cfg, cache).transcribe_sync(audio, live=live, language=language)
