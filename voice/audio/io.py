"""Microphone and speaker as asyncio streams of float32 mono audio, on sounddevice (PortAudio).

One PortAudio stream per direction and object. The PortAudio callbacks never wait: the
microphone hands a copy of each block to the event loop (``call_soon_threadsafe``) into a
bounded queue that drops the oldest frame when full; the speaker's callback copies from a
buffer under a lock held only for memory copies. Devices are chosen by index or by a
case-insensitive substring of their name (``list_devices()`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from voice.errors import DeviceError

PULSE_LATENCY_MS = 50  # see request_pulse_latency()
DRAIN_MARGIN_S = 0.03  # drain() waits this much past the device's own estimate

NO_MIC_HINT = (
    "pick one with --input-device NAME|INDEX (see `python -m sounddevice`), "
    "or work from files: `voice transcribe FILE`"
)


def request_pulse_latency(ms: int | None) -> None:
    """Ask PulseAudio (through libpulse, which the ALSA "pulse" device uses) for ``ms`` buffers.

    Without it PortAudio's ALSA "pulse" device lets audio run 0.5-2 s ahead of the speaker,
    so barge-in would be heard late. Sets ``PULSE_LATENCY_MSEC`` only when the user has not;
    libpulse reads it when a stream connects. No effect without PulseAudio.
    """
    if ms is not None:
        os.environ.setdefault("PULSE_LATENCY_MSEC", str(int(ms)))


def _sd() -> ModuleType:
    """Import sounddevice lazily (it initialises PortAudio on import)."""
    try:
        import sounddevice
    except OSError as err:  # libportaudio2 missing
        raise DeviceError(f"PortAudio is not available: {err}", hint="install libportaudio2") from err
    return sounddevice


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False


def list_devices() -> list[DeviceInfo]:
    """Every audio device PortAudio sees, with its channels and default rate."""
    sd = _sd()
    apis = sd.query_hostapis()
    default_in, default_out = _default_indices(sd)
    out = []
    for d in sd.query_devices():
        out.append(
            DeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(apis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                default_input=int(d["index"]) == default_in,
                default_output=int(d["index"]) == default_out,
            )
        )
    return out


def _default_indices(sd: ModuleType) -> tuple[int, int]:
    try:
        dev = sd.default.device
        return int(dev[0]), int(dev[1])
    except Exception:
        return -1, -1


def resolve_device(spec: str | int | None, kind: str) -> int:
    """Index of the ``kind`` ("input" or "output") device named by ``spec``.

    ``spec`` is None (the system default), an index (int or digits), or a case-insensitive
    substring of the name (an exact name wins over substrings). Raises :class:`DeviceError`.
    """
    sd = _sd()
    chan = "max_input_channels" if kind == "input" else "max_output_channels"
    what = "microphone (input device)" if kind == "input" else "speaker (output device)"
    hint = NO_MIC_HINT if kind == "input" else "pick one with --output-device NAME|INDEX"
    devices = list(sd.query_devices())
    usable = [d for d in devices if d[chan] > 0]
    if spec is None or spec == "":
        default = _default_indices(sd)[0 if kind == "input" else 1]
        if 0 <= default < len(devices) and devices[default][chan] > 0:
            return default
        if usable:
            return int(usable[0]["index"])
        raise DeviceError(f"no {what} found", hint=hint)
    if isinstance(spec, int) or str(spec).strip().isdigit():
        idx = int(spec)
        if not 0 <= idx < len(devices):
            raise DeviceError(f"no audio device with index {idx}", hint=_names(usable, hint))
        if devices[idx][chan] <= 0:
            raise DeviceError(f"device {idx} ({devices[idx]['name']}) is not a {what}", hint=_names(usable, hint))
        return idx
    needle = str(spec).lower()
    exact = [d for d in usable if str(d["name"]).lower() == needle]
    found = exact or [d for d in usable if needle in str(d["name"]).lower()]
    if not found:
        raise DeviceError(f"no {what} matches {spec!r}", hint=_names(usable, hint))
    return int(found[0]["index"])


def _names(usable: list[Any], hint: str) -> str:
    if not usable:
        return hint
    return "available: " + ", ".join(f"{d['index']}: {d['name']}" for d in usable)


def _open_error(err: Exception, what: str, device: int, hint: str) -> DeviceError:
    return DeviceError(f"cannot open {what} {device}: {err}", hint=hint)


class Microphone:
    """Async context manager and async iterator of float32 mono frames of ``frame_samples``.

    Frames arrive at ``sample_rate`` (resampled from the device rate if the device refuses
    it). At most ``max_queued`` frames wait for the consumer; beyond that the oldest is
    dropped and counted in :attr:`dropped`. ``frames_read`` counts frames delivered, so
    ``frames_read * frame_samples / sample_rate`` is stream time. Iteration ends after
    :meth:`close`. Cancelling a pending ``__anext__`` is safe.
    """

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int = 16000,
        frame_samples: int = 512,
        max_queued: int = 256,
    ) -> None:
        self.device_spec = device
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.max_queued = max_queued
        self.dropped = 0
        self.overflows = 0
        self.frames_read = 0
        self.device: int | None = None
        self.device_rate = sample_rate
        self._stream: Any = None
        self._queue: deque[np.ndarray] = deque()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._resampler: Any = None
        self._pending = np.zeros(0, dtype=np.float32)

    async def __aenter__(self) -> Microphone:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open and start the input stream (call from the event loop's thread)."""
        request_pulse_latency(PULSE_LATENCY_MS)
        sd = _sd()
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self.device = resolve_device(self.device_spec, "input")
        info = sd.query_devices(self.device)
        try:
            self._stream = self._make_stream(sd, self.sample_rate)
        except sd.PortAudioError:
            rate = int(info["default_samplerate"])
            try:
                self._stream = self._make_stream(sd, rate)
            except sd.PortAudioError as err:
                raise _open_error(err, "microphone", self.device, NO_MIC_HINT) from err
            from voice.audio.resample import StreamResampler

            self.device_rate = rate
            self._resampler = StreamResampler(rate, self.sample_rate)
        try:
            self._stream.start()
        except sd.PortAudioError as err:
            self._stream.close()
            raise _open_error(err, "microphone", self.device, NO_MIC_HINT) from err

    def _make_stream(self, sd: ModuleType, rate: int) -> Any:
        block = max(1, round(self.frame_samples * rate / self.sample_rate))
        return sd.InputStream(
            device=self.device, channels=1, samplerate=rate, dtype="float32",
            blocksize=block, callback=self._callback,
        )

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: copy and hand over; never wait.
        data = indata[:, 0].copy()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(self._push, data, bool(status and status.input_overflow))

    def _push(self, data: np.ndarray, overflow: bool) -> None:
        if overflow:
            self.overflows += 1
        if self._resampler is not None:
            data = self._resampler.process(data)
        if self._pending.size or data.shape[0] != self.frame_samples:
            data = np.concatenate([self._pending, data])
            n = data.shape[0] // self.frame_samples
            frames = [data[i * self.frame_samples : (i + 1) * self.frame_samples] for i in range(n)]
            self._pending = data[n * self.frame_samples :]
        else:
            frames = [data]
        for f in frames:
            if len(self._queue) >= self.max_queued:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(f)
        if frames and self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> Microphone:
        return self

    async def __anext__(self) -> np.ndarray:
        while True:
            if self._queue:
                self.frames_read += 1
                return self._queue.popleft()
            if self._closed or self._wakeup is None:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def read(self) -> np.ndarray:
        """The next frame (raises StopAsyncIteration after close)."""
        return await self.__anext__()

    def close(self) -> None:
        """Stop the stream; frames already queued can still be read, then iteration ends."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.abort()
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None
        self._loop = None
        if self._wakeup is not None:
            self._wakeup.set()


class Wakers:
    """Futures of tasks waiting for a change, all woken at once (event-loop thread only)."""

    def __init__(self) -> None:
        self._futs: list[asyncio.Future[None]] = []

    async def wait(self, at_most: float | None = None) -> None:
        """Until :meth:`wake`, or ``at_most`` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futs.append(fut)
        try:
            await asyncio.wait([fut], timeout=None if at_most is None else max(0.0, at_most))
        finally:
            if fut in self._futs:
                self._futs.remove(fut)

    def wake(self) -> None:
        futs, self._futs = self._futs, []
        for fut in futs:
            if not fut.done():
                fut.set_result(None)

    def __bool__(self) -> bool:
        return bool(self._futs)


class Speaker:
    """Async context manager that plays float32 mono audio at ``sample_rate``.

    ``await write(chunk)`` queues audio and waits while more than ``max_buffer_s`` is queued.
    :meth:`clear` drops everything queued at once (barge-in): only what PortAudio already
    holds (``latency``, tens of ms) still sounds. ``played_samples`` counts samples (at
    ``sample_rate``) actually handed to the device. ``on_first_sample`` is called on the
    event loop when audio first reaches the device after start, :meth:`clear` or
    :meth:`drain` -- i.e. once per turn. ``pulse_latency_ms``: see :func:`request_pulse_latency`
    (None leaves PulseAudio's default).
    """

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int = 16000,
        *,
        max_buffer_s: float = 2.0,
        block_ms: float = 20.0,
        latency: str | float = "low",
        on_first_sample: Callable[[], None] | None = None,
        pulse_latency_ms: int | None = PULSE_LATENCY_MS,
    ) -> None:
        self.device_spec = device
        self.pulse_latency_ms = pulse_latency_ms
        self.sample_rate = sample_rate
        self.max_buffer_s = max_buffer_s
        self.block_ms = block_ms
        self.latency_setting = latency
        self.on_first_sample = on_first_sample
        self.device: int | None = None
        self.device_rate = sample_rate
        self.underruns = 0
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._offset = 0  # read position in self._chunks[0]
        self._buffered = 0  # device-rate samples queued
        self._played = 0  # device-rate samples handed to the device
        self._first_pending = True
        self._waiting = False
        self._space = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._resampler: Any = None
        self.first_sample_time: float | None = None
        self._audible_until = 0.0  # monotonic time the last handed sample is heard
        self._progress = Wakers()  # tasks in wait_played (event-loop thread)
        self._wake_at: int | None = None  # device samples played at which the callback wakes them
        self._clears = 0

    async def __aenter__(self) -> Speaker:
        self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def latency(self) -> float:
        """Output latency of the device stream in seconds (0 before open)."""
        return float(self._stream.latency) if self._stream is not None else 0.0

    @property
    def played_samples(self) -> int:
        """Samples (at ``sample_rate``) handed to the device so far."""
        played = self._played
        if self.device_rate == self.sample_rate:
            return played
        return round(played * self.sample_rate / self.device_rate)

    @property
    def buffered_s(self) -> float:
        """Seconds of audio queued and not yet handed to the device."""
        return self._buffered / self.device_rate

    def open(self) -> None:
        """Open and start the output stream (call from the event loop's thread)."""
        request_pulse_latency(self.pulse_latency_ms)
        sd = _sd()
        self._loop = asyncio.get_running_loop()
        self.device = resolve_device(self.device_spec, "output")
        info = sd.query_devices(self.device)
        hint = "pick another with --output-device NAME|INDEX"
        try:
            self._stream = self._make_stream(sd, self.sample_rate)
        except sd.PortAudioError:
            rate = int(info["default_samplerate"])
            try:
                self._stream = self._make_stream(sd, rate)
            except sd.PortAudioError as err:
                raise _open_error(err, "speaker", self.device, hint) from err
            from voice.audio.resample import StreamResampler

            self.device_rate = rate
            self._resampler = StreamResampler(self.sample_rate, rate)
        try:
            self._stream.start()
        except sd.PortAudioError as err:
            self._stream.close()
            raise _open_error(err, "speaker", self.device, hint) from err

    def _make_stream(self, sd: ModuleType, rate: int) -> Any:
        return sd.OutputStream(
            device=self.device, channels=1, samplerate=rate, dtype="float32",
            blocksize=max(1, int(rate * self.block_ms / 1000)), latency=self.latency_setting,
            callback=self._callback,
        )

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: copy what is queued, pad with silence; never wait.
        out = outdata[:, 0]
        n = 0
        with self._lock:
            while n < frames and self._chunks:
                head = self._chunks[0]
                take = min(frames - n, head.shape[0] - self._offset)
                out[n : n + take] = head[self._offset : self._offset + take]
                n += take
                self._offset += take
                if self._offset >= head.shape[0]:
                    self._chunks.popleft()
                    self._offset = 0
            self._buffered -= n
            self._played += n
            first = n > 0 and self._first_pending
            if first:
                self._first_pending = False
            empty = self._buffered == 0
            wake = self._wake_at is not None and self._played >= self._wake_at
            if wake:
                self._wake_at = None
            notify = (n > 0 and (first or self._waiting or empty)) or wake
        if n < frames:
            out[n:] = 0.0
        if n:
            # When the last real sample will be heard: PortAudio's DAC time (which includes the
            # sound server's buffer) relative to its clock, mapped onto ours.
            ahead = float(time_info.outputBufferDacTime) - float(time_info.currentTime)
            if not 0.0 <= ahead < 5.0:
                ahead = self.latency
            self._audible_until = time.monotonic() + ahead + n / self.device_rate
        if n and status and status.output_underflow:
            self.underruns += 1
        if notify:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._notify, first)

    def _notify(self, first: bool) -> None:
        if first:
            self.first_sample_time = time.monotonic()
            if self.on_first_sample is not None:
                self.on_first_sample()
        self._update_events()
        self._progress.wake()

    async def wait_played(self, samples: int) -> int:
        """``played_samples`` once it reaches ``samples`` (woken from the device callback), or
        after :meth:`clear` or :meth:`close`; bound it with ``asyncio.timeout``."""
        clears = self._clears
        target = math.ceil(samples * self.device_rate / self.sample_rate)
        while self._clears == clears and self._stream is not None:
            with self._lock:
                if self._played >= target:
                    break
                self._wake_at = target if self._wake_at is None else min(self._wake_at, target)
            await self._progress.wait()
        return self.played_samples

    def _update_events(self) -> None:
        limit = self.max_buffer_s * self.device_rate
        if self._buffered <= limit:
            self._space.set()
        if self._buffered == 0:
            self._empty.set()

    async def write(self, chunk: np.ndarray) -> None:
        """Queue ``chunk`` (float32 mono at ``sample_rate``); waits while the buffer is full.

        Cancelling the wait is safe: the chunk was queued already.
        """
        if self._stream is None:
            raise RuntimeError("Speaker is not open")
        data = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            data = self._resampler.process(data)
        if data.shape[0]:
            with self._lock:
                self._chunks.append(data)
                self._buffered += data.shape[0]
            self._empty.clear()
        while self._buffered > self.max_buffer_s * self.device_rate and self._stream is not None:
            self._space.clear()
            self._waiting = True
            try:
                await self._space.wait()
            finally:
                self._waiting = False

    def clear(self) -> int:
        """Drop all queued audio now (barge-in). Returns the samples dropped (at ``sample_rate``)."""
        with self._lock:
            dropped = self._buffered
            self._chunks.clear()
            self._offset = 0
            self._buffered = 0
            self._first_pending = True
        self._clears += 1
        self._progress.wake()
        if self._resampler is not None:
            from voice.audio.resample import StreamResampler

            self._resampler = StreamResampler(self.sample_rate, self.device_rate)
        self._update_events()
        return round(dropped * self.sample_rate / self.device_rate)

    async def drain(self) -> None:
        """Wait until everything queued has been handed to the device and played out."""
        if self._resampler is not None:
            tail = self._resampler.flush()
            from voice.audio.resample import StreamResampler

            self._resampler = StreamResampler(self.sample_rate, self.device_rate)
            if tail.shape[0]:
                await self.write_device(tail)
        while self._buffered > 0 and self._stream is not None:
            self._empty.clear()
            await self._empty.wait()
        if self._stream is not None:
            await asyncio.sleep(max(0.0, self._audible_until - time.monotonic()) + DRAIN_MARGIN_S)
        with self._lock:
            self._first_pending = True

    async def write_device(self, data: np.ndarray) -> None:
        """Queue audio already at the device rate (internal use)."""
        with self._lock:
            self._chunks.append(np.ascontiguousarray(data, dtype=np.float32))
            self._buffered += data.shape[0]
        self._empty.clear()

    def close(self) -> None:
        """Stop at once (queued audio is dropped); use :meth:`drain` first to finish playing."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()
        self._loop = None
        with self._lock:
            self._chunks.clear()
            self._buffered = 0
        self._space.set()
        self._empty.set()
        self._progress.wake()


async def play(audio: np.ndarray, sample_rate: int, device: str | int | None = None) -> None:
    """Play ``audio`` (float32 mono) on ``device`` and return when it has been heard."""
    async with Speaker(device, sample_rate=sample_rate) as spk:
        await spk.write(audio)
        await spk.drain()
