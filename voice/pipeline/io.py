"""Where the pipeline's audio comes from and goes to, other than real devices.

:class:`AudioSink` is what the conversation writes to: :class:`voice.audio.io.Speaker` fits it,
so do :class:`FileSink` here and the WebSocket server's socket sink. A sink that can also say
when playback reaches a sample (:class:`PlaybackProgress`: the Speaker from its device
callback, FileSink and the server's socket sink from :class:`WallClock`) is awaited instead of
polled. Sources are any async iterator of float32 16 kHz mono frames: a Microphone,
:func:`array_frames` for a file, or a socket reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from voice.audio.io import Wakers


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


@runtime_checkable
class PlaybackProgress(Protocol):
    """A sink that pushes playback progress instead of being polled."""

    async def wait_played(self, samples: int) -> int:
        """Return ``played_samples`` once it reaches ``samples`` or the output is cleared or
        closed (callers bound the wait with ``asyncio.timeout``)."""
        ...


class WallClock:
    """Samples "played" at wall-clock speed, for sinks that cannot see their listener (a file
    played in real time, a socket): the clock starts with the first sample handed over while
    nothing was playing, and never runs past what was handed over."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        #: Samples handed over so far.
        self.queued = 0
        self._base = 0  # played count when the clock last started
        self._t0: float | None = None
        self._clears = 0
        self._wakers = Wakers()

    @property
    def played(self) -> int:
        if self._t0 is None:
            return min(self.queued, self._base)
        return min(self.queued, self._base + int((time.monotonic() - self._t0) * self.rate))

    def add(self, samples: int) -> None:
        played = self.played
        if self._t0 is None or played >= self.queued:  # idle: the clock restarts
            self._base, self._t0 = played, time.monotonic()
        self.queued += samples
        self._wakers.wake()

    def clear(self) -> int:
        """Forget what has not played yet; returns how many samples that was."""
        played = self.played
        dropped = self.queued - played
        self.queued = self._base = played
        self._t0 = None
        self._clears += 1
        self._wakers.wake()
        return max(0, dropped)

    async def wait_played(self, samples: int) -> int:
        clears = self._clears
        while (played := self.played) < samples and self._clears == clears:
            ahead = min(samples, self.queued) - played  # what can play towards it now
            # until that has played, or (nothing queued) until more audio or a clear comes
            await self._wakers.wait(ahead / self.rate + 0.001 if ahead > 0 else None)
        return self.played


async def wait_played(sink: AudioSink, samples: int, poll_s: float = 0.01) -> int:
    """``sink``'s :meth:`PlaybackProgress.wait_played` when it has one; otherwise its
    ``played_samples`` polled every ``poll_s`` (a sink from elsewhere). Bound it with
    ``asyncio.timeout``: a sink that stops playing never gets there."""
    if isinstance(sink, PlaybackProgress):
        return await sink.wait_played(samples)
    while (played := sink.played_samples) < samples:  # noqa: ASYNC110 - a sink with no way to tell
        await asyncio.sleep(poll_s)
    return played


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
        self._clock = WallClock(sample_rate)

    @property
    def written_samples(self) -> int:
        return self._clock.queued

    @property
    def played_samples(self) -> int:
        return self._clock.played if self.realtime else self._clock.queued

    async def wait_played(self, samples: int) -> int:
        if not self.realtime:
            return self._clock.queued
        return await self._clock.wait_played(samples)

    def mark_turn(self) -> None:
        """Put a short silence before the next turn's audio (file only; not counted)."""
        if self._chunks and self.gap_s > 0:
            self._chunks.append(np.zeros(int(self.gap_s * self.sample_rate), np.float32))

    async def write(self, chunk: np.ndarray) -> None:
        audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
        # queued at once (like a device buffer), then backpressure while more than 2 s is queued
        self._chunks.append(audio)
        self._clock.add(audio.shape[0])
        if self.realtime:
            excess = self._clock.queued - self._clock.played - 2 * self.sample_rate
            if excess > 0:
                await asyncio.sleep(excess / self.sample_rate)

    def clear(self) -> int:
        """Drop the part not played yet (realtime only; otherwise everything is already out)."""
        drop = self._clock.queued - self.played_samples
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
        return self._clock.clear()

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
