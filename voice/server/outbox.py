"""Bounded per-session send queue, the error-rate bucket, and the socket audio sink.

Everything waiting for one client is bounded. Audio waits (backpressure) while ``max_audio``
chunks or ``max_bytes`` bytes of it are queued, so a client that reads slowly stalls its own
pipeline (TTS waits on ``write``) instead of growing server memory; barge-in purges the audio not
yet sent. Other events (control, text, errors: small and few per turn, like pipecat's system
frames) go in at once up to ``max_events`` / ``max_bytes``; past that :meth:`Outbox.put_nowait`
raises :class:`OutboxFull` and the session closes the connection (a client that lets a thousand
events pile up is not reading). Payloads are already encoded (``str`` JSON or ``bytes``), so
their size is known.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voice.audio.pcm import float_to_pcm16
from voice.pipeline.io import WallClock


class OutboxFull(Exception):
    """The client has ``max_events`` events or ``max_bytes`` of them waiting."""


@dataclass
class Item:
    payload: str | bytes
    samples: int = 0  # > 0: an audio chunk of this many samples
    audio: bool = False


class Outbox:
    def __init__(self, max_audio: int = 64, max_events: int = 1024, max_bytes: int = 2 << 20) -> None:
        self.max_audio = max_audio
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: deque[Item] = deque()
        self._audio = 0
        self._audio_bytes = 0
        self._events = 0
        self._event_bytes = 0
        self._changed = asyncio.Event()
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._audio_bytes + self._event_bytes

    def put_nowait(self, payload: str | bytes) -> None:
        """Queue an event; :class:`OutboxFull` past the bounds (nothing is queued then)."""
        if self.closed:
            return
        if self._events >= self.max_events or self._event_bytes + len(payload) > self.max_bytes:
            raise OutboxFull(f"{self._events} events ({self._event_bytes} bytes) waiting for the client")
        self._items.append(Item(payload))
        self._events += 1
        self._event_bytes += len(payload)
        self._changed.set()

    async def put_audio(self, payload: str | bytes, samples: int) -> None:
        while (self._audio >= self.max_audio or self._audio_bytes >= self.max_bytes) and not self.closed:
            self._changed.clear()
            await self._changed.wait()
        if self.closed:
            return
        self._items.append(Item(payload, samples, audio=True))
        self._audio += 1
        self._audio_bytes += len(payload)
        self._changed.set()

    def purge_audio(self) -> int:
        """Drop queued audio chunks; returns their samples."""
        dropped = sum(i.samples for i in self._items if i.audio)
        self._items = deque(i for i in self._items if not i.audio)
        self._audio = self._audio_bytes = 0
        self._changed.set()
        return dropped

    async def get(self) -> Item | None:
        """Next item, or None once closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._changed.clear()
            await self._changed.wait()
        item = self._items.popleft()
        if item.audio:
            self._audio -= 1
            self._audio_bytes -= len(item.payload)
            self._changed.set()
        else:
            self._events -= 1
            self._event_bytes -= len(item.payload)
        return item

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._audio = self._audio_bytes = self._events = self._event_bytes = 0
        self._changed.set()


@dataclass
class TokenBucket:
    """``rate`` per second on average, ``burst`` at once (errors a client may cause)."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class SocketSink:
    """An :class:`~voice.pipeline.io.AudioSink` over a WebSocket session.

    ``played_samples`` assumes the client plays what was sent at real-time speed from the first
    sample sent (the client corrects memory with ``conversation.item.truncate`` if it played less).
    ``encode(pcm)`` turns PCM16 into the items to send (protocol events or binary frames).
    """

    def __init__(self, outbox: Outbox, sample_rate: int, encode: Callable[[bytes], list[str | bytes]]) -> None:
        self.outbox = outbox
        self.sample_rate = sample_rate
        self.encode = encode
        self._queued = 0  # samples handed to the outbox
        self._clock = WallClock(sample_rate)  # counts the samples written to the socket

    @property
    def played_samples(self) -> int:
        return self._clock.played

    async def wait_played(self, samples: int) -> int:
        return await self._clock.wait_played(samples)

    async def write(self, chunk: np.ndarray) -> None:
        pcm = float_to_pcm16(chunk)
        n = len(pcm) // 2
        if not n:
            return
        self._queued += n
        items = self.encode(pcm)
        for i, item in enumerate(items):
            await self.outbox.put_audio(item, n if i == len(items) - 1 else 0)

    def on_sent(self, samples: int) -> None:
        """The writer put ``samples`` of audio on the socket."""
        self._clock.add(samples)

    def clear(self) -> int:
        played = self.played_samples
        self.outbox.purge_audio()
        dropped = self._queued - played
        self._queued = played
        self._clock.clear()
        return max(0, dropped)
