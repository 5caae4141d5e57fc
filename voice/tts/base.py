"""The TTS engine interface, cancellation, and the engine registry.

An engine turns text into an async stream of :class:`AudioChunk` (float32 mono at the engine's
own ``sample_rate``), sentence by sentence. Constructors are cheap; weights load in
``await engine.load()`` (or on the first ``stream``). Blocking inference runs in a thread and
``cancel`` is checked between chunks, so a cancelled reply stops after at most one chunk.

Engine modules (``voice.tts.<name>``) must import nothing heavy at module level and provide::

    def missing_dependency() -> str | None
        # None when the engine's package can be imported, else the install command (one line).
    def create(cfg: Config, device: DeviceChoice) -> TTSEngine
        # cheap: no model loading here.

``create_engine(cfg, name)`` picks the module by name, checks the package, picks the device
through :func:`voice.devices.choose`, and falls back to Piper with a warning when an expressive
engine has no working GPU (``tts.device = "auto"``), if ``tts.fallback_to_piper`` is on. An
engine that is not installed is never replaced: ModelNotAvailable with the install command
(exit 3), whether it was named by ``--engine``, a synth row or ``tts.engine``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from voice.devices import DeviceChoice, choose, probe_for
from voice.errors import ConfigError, InputError, ModelNotAvailable

if TYPE_CHECKING:
    from voice.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioChunk:
    """One piece of synthesized speech (usually one sentence)."""

    #: float32 mono samples in [-1, 1].
    audio: np.ndarray
    sample_rate: int
    #: The text this audio speaks (what was said, for memory after barge-in).
    text: str
    #: 0, 1, 2, ... in the order of the stream.
    index: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate) if self.sample_rate else 0.0


class CancelToken:
    """Set once to stop a stream; safe to set from any thread or task.

    Engines check it between chunks (and inside their own loops where they can), then end the
    stream quietly: a cancelled stream simply stops yielding, it does not raise.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"


@runtime_checkable
class TTSEngine(Protocol):
    """What every engine offers. ``stream`` is an async generator method."""

    #: Engine name as used in config: "piper", "chattts", "chatterbox".
    name: str
    #: Where it runs and why (from :func:`voice.devices.choose`).
    device: DeviceChoice

    @property
    def sample_rate(self) -> int: ...

    def voices(self) -> list[str]:
        """Voice names (or speaker files) this engine can use right now."""
        ...

    async def load(self) -> None:
        """Load weights (idempotent). Raises ModelNotAvailable with install advice."""
        ...

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float | None = None,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """Speak ``text`` chunk by chunk; ``voice=None`` is the configured voice, ``speed`` 1.0
        normal (None = configured). Unknown voice: ConfigError/InputError before any audio."""
        ...


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class EngineInfo:
    name: str
    module: str
    #: The runtime whose CUDA probe decides the device (see voice.devices.probe_for).
    runtime: str
    #: Expressive engines want a GPU; without one they fall back to Piper when allowed.
    expressive: bool


ENGINES: dict[str, EngineInfo] = {
    "piper": EngineInfo("piper", "voice.tts.piper", "onnxruntime", expressive=False),
    "chattts": EngineInfo("chattts", "voice.tts.chattts", "torch", expressive=True),
    "chatterbox": EngineInfo("chatterbox", "voice.tts.chatterbox", "torch", expressive=True),
}


def engine_names() -> list[str]:
    return list(ENGINES)


def _info(name: str) -> EngineInfo:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(
            f"unknown TTS engine {name!r} (known: {', '.join(ENGINES)})"
        ) from None


def _module(info: EngineInfo) -> object | None:
    try:
        return importlib.import_module(info.module)
    except ModuleNotFoundError as err:
        if err.name == info.module:
            return None
        raise


def create_engine(cfg: Config, name: str | None = None) -> TTSEngine:
    """A new (unloaded) engine by name (default ``cfg.tts.engine``), on its chosen device."""
    info = _info(name or cfg.tts.engine)
    mod = _module(info)
    missing: str | None = (
        f"a voice version that ships {info.module}" if mod is None
        else mod.missing_dependency()  # type: ignore[attr-defined]
    )
    if missing or mod is None:
        raise ModelNotAvailable(
            f"TTS engine {info.name!r} is not installed; install it with: {missing}"
        )
    device = choose(
        cfg.tts.device, probe_for(info.runtime), runtime=info.runtime,
        cpu_compute="float32", cuda_compute="float16" if info.runtime == "torch" else "float32",
    )
    if info.expressive and device.device == "cpu" and cfg.tts.device == "auto":
        if cfg.tts.fallback_to_piper:
            log.warning(
                "TTS engine %s wants a GPU but has none (%s); using piper instead"
                " (set tts.fallback_to_piper = false or tts.device = \"cpu\" to run it on CPU)",
                info.name, device.reason,
            )
            return create_engine(cfg, "piper")
        log.warning("TTS engine %s runs on CPU (%s): expect slower than real time", info.name, device.reason)
    log.info("TTS engine %s on %s (%s)", info.name, device.device, device.reason)
    engine: TTSEngine = mod.create(cfg, device)  # type: ignore[attr-defined]
    return engine


async def synthesize(
    engine: TTSEngine,
    text: str,
    *,
    voice: str | None = None,
    speed: float | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """The whole reply as one float32 array at ``engine.sample_rate``."""
    parts = [c.audio async for c in engine.stream(text, voice=voice, speed=speed, cancel=cancel)]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


async def synthesize_to_file(
    engine: TTSEngine,
    text: str,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    voice: str | None = None,
    speed: float | None = None,
) -> tuple[float, int]:
    """Speak ``text`` into an audio file, chunk by chunk (memory stays one chunk however long
    the text), written atomically; returns (seconds, sample rate). No audio: InputError, no file."""
    from voice.audio.files import audio_writer

    with contextlib.ExitStack() as stack:
        write = None
        samples, rate = 0, engine.sample_rate
        async for chunk in engine.stream(text, voice=voice, speed=speed):
            if write is None:
                rate = chunk.sample_rate
                write = stack.enter_context(audio_writer(path, rate, format))
            write(chunk.audio)
            samples += len(chunk.audio)
        if write is None or samples == 0:
            raise InputError("nothing speakable in the text")
    return samples / rate, rate
