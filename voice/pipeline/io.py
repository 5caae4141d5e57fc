"""Where the pipeline's audio comes from and goes to, other than real devices.

:class:`AudioSink` is what the conversation writes to: :class:`voice.audio.io.Speaker` fits it,
so do :class:`FileSink` here and the WebSocket server's socket sink. Sources are any async
iterator of float32 16 kHz mono frames: a Microphone, :func:`array_frames` for a file, or a
socket reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class AudioSink(Protocol):
    """Audio output. ``played_samples`` counts samples (at ``sample_rate``) that have really gone
    out (to a device, a file, a socket) since the sink opened; ``clear`` drops what is queued
    and not yet out, at once (barge-in)."""

    sample_rate: int

    async def write(self, chunk: np.ndarray) -> None: ...

    def clear(self) -> object: ...

    @property
    def played_samples(self) -> int: ...


class FileSink:
    """Collects the assistant's audio and writes one file on :meth:`close` (atomic).

    With ``realtime=True`` audio "plays" at wall-clock speed (``played_samples`` advances with
    time since the first write, like a device), so barge-in and pacing behave as with a speaker;
    otherwise everything written counts as played at once.
    """

    def __init__(self, path: str | Path | None, sample_rate: int = 22050, *, realtime: bool = False,
                 gap_s: float = 0.3) -> None:
        self.path = Path(path) if path is not None else None
        self.sample_rate = sample_rate
        self.realtime = realtime
        #: Silence put between turns in the file.
        self.gap_s = gap_s
        self._chunks: list[np.ndarray] = []
        self._written = 0
        self._base = 0  # realtime: played count at _t0
        self._t0: float | None = None
        self._last_end = 0

    @property
    def written_samples(self) -> int:
        return self._written

    @property
    def played_samples(self) -> int:
        if not self.realtime:
            return self._written
        if self._t0 is None:
            return self._base
        return min(self._written, self._base + int((time.monotonic() - self._t0) * self.sample_rate))

    def mark_turn(self) -> None:
        """Put a short silence before the next turn's audio (file only; not counted)."""
        if self._chunks and self.gap_s > 0:
            self._chunks.append(np.zeros(int(self.gap_s * self.sample_rate), np.float32))

    async def write(self, chunk: np.ndarray) -> None:
        audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self.realtime:
            played = self.played_samples
            if played >= self._written:  # idle: the clock restarts with this chunk
                self._base, self._t0 = played, time.monotonic()
        # queued at once (like a device buffer), then backpressure while more than 2 s is queued
        self._chunks.append(audio)
        self._written += audio.shape[0]
        if self.realtime:
            excess = self._written - self.played_samples - 2 * self.sample_rate
            if excess > 0:
                await asyncio.sleep(excess / self.sample_rate)

    def clear(self) -> int:
        """Drop the part not played yet (realtime only; otherwise everything is already out)."""
        played = self.played_samples
        drop = self._written - played
        if drop <= 0:
            return 0
        keep: list[np.ndarray] = []
        left = sum(c.shape[0] for c in self._chunks) - drop
        for c in self._chunks:
            if left <= 0:
                break
            keep.append(c[:left])
            left -= c.shape[0]
        self._chunks = keep
        self._written = played
        self._base, self._t0 = played, None
        return drop

    def audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def close(self) -> None:
        if self.path is None:
            return
        from voice.audio.files import write_audio

        write_audio(self.path, self.audio(), self.sample_rate)


async def array_frames(
    audio: np.ndarray,
    *,
    sample_rate: int = 16000,
    frame_samples: int = 512,
    realtime: bool = True,
    speed: float = 1.0,
    tail_silence_s: float = 1.0,
) -> AsyncIterator[np.ndarray]:
    """Frames of ``audio`` (float32 mono at ``sample_rate``), then ``tail_silence_s`` of silence
    so the VAD can close the last turn. ``realtime`` paces frames at ``speed`` x real time."""
    data = np.asarray(audio, dtype=np.float32).reshape(-1)
    if tail_silence_s > 0:
        data = np.concatenate([data, np.zeros(int(tail_silence_s * sample_rate), np.float32)])
    frame_s = frame_samples / sample_rate / max(speed, 1e-6)
    t0 = time.monotonic()
    for k, i in enumerate(range(0, data.shape[0], frame_samples)):
        if realtime:
            delay = t0 + k * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        yield data[i : i + frame_samples]


async def file_frames(path: str | Path, **kw: object) -> AsyncIterator[np.ndarray]:
    """:func:`array_frames` over an audio file (any format :func:`load_audio` reads)."""
    from voice.audio.files import load_audio

    audio = await asyncio.to_thread(load_audio, path, 16000)
    async for frame in array_frames(audio, **kw):  # type: ignore[arg-type]
        yield frame
