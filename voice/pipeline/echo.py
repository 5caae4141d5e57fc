"""Acoustic echo cancellation for loudspeaker use (optional): WebRTC AEC3 via pywebrtc-audio.

The far end is what the assistant played: queued at 16 kHz when written to the sink, released by
``played(n)`` as the sink reports samples going out, then consumed in step with the microphone
frames; AEC3's own delay estimator absorbs the remaining (device) latency.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.errors import ConfigError

BLOCK = 160  # AEC3 works on 10 ms blocks


def missing_dependency() -> str | None:
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return "pip install pywebrtc-audio"
    return None


class EchoCanceller:
    """``far(audio)`` when the assistant's audio is written, ``played(n)`` as n samples (16 kHz)
    go out, ``near(frame) -> cleaned frame`` for each microphone frame, ``reset()`` on barge-in
    (the unplayed far audio was dropped)."""

    def __init__(self, stream_delay_ms: int = 0, max_far_s: float = 30.0) -> None:
        missing = missing_dependency()
        if missing:
            raise ConfigError(f"pipeline.echo_cancel needs the pywebrtc-audio package: {missing}")
        from pywebrtc_audio import EchoCanceller as Aec3

        self._aec: Any = Aec3(sample_rate=SAMPLE_RATE, num_channels=1, stream_delay_ms=stream_delay_ms)
        self._queued: deque[np.ndarray] = deque()
        self._far: deque[np.ndarray] = deque()
        self._far_samples = 0
        self._max_far = int(max_far_s * SAMPLE_RATE)
        self._near_rest = np.zeros(0, np.float32)

    def far(self, audio: np.ndarray) -> None:
        self._queued.append(np.asarray(audio, dtype=np.float32).reshape(-1))

    def played(self, n: int) -> None:
        """Release ``n`` queued far samples: they have gone out to the speaker."""
        while n > 0 and self._queued:
            head = self._queued[0]
            k = min(n, head.shape[0])
            self._far.append(head[:k])
            self._far_samples += k
            if k == head.shape[0]:
                self._queued.popleft()
            else:
                self._queued[0] = head[k:]
            n -= k
        while self._far_samples > self._max_far and self._far:
            self._far_samples -= self._far.popleft().shape[0]

    def _take_far(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        i = 0
        while i < n and self._far:
            head = self._far[0]
            k = min(n - i, head.shape[0])
            out[i : i + k] = head[:k]
            if k == head.shape[0]:
                self._far.popleft()
            else:
                self._far[0] = head[k:]
            self._far_samples -= k
            i += k
        return out

    def near(self, frame: np.ndarray) -> np.ndarray:
        """Cleaned microphone audio (10 ms blocks; a remainder is carried to the next call)."""
        x = np.asarray(frame, dtype=np.float32).reshape(-1)
        if self._near_rest.size:
            x = np.concatenate([self._near_rest, x])
        n = (x.shape[0] // BLOCK) * BLOCK
        self._near_rest = x[n:].copy()
        out = np.empty(n, np.float32)
        for i in range(0, n, BLOCK):
            out[i : i + BLOCK] = self._aec.process(x[i : i + BLOCK], self._take_far(BLOCK))
        return out

    def reset(self) -> None:
        self._queued.clear()
        self._far.clear()
        self._far_samples = 0


class ResidualEchoGate:
    """Residual echo suppression after the canceller, for the VAD's sake (sans-I/O).

    Silero takes even a -50 dB residual of the assistant's voice for speech. While the assistant
    may be heard, a frame reaches the VAD as silence when the cleaned energy over the last
    ``window`` frames is ``db`` below the raw energy (the canceller removed it: echo). Someone
    talking over the assistant is not in the far end, so most of their energy stays.
    A window rather than one frame: the canceller leaks for a frame when its delay estimate moves.
    """

    def __init__(self, db: float = 10.0, window: int = 3) -> None:
        self.ratio = 10 ** (-db / 10)
        self._raw: deque[float] = deque(maxlen=window)
        self._out: deque[float] = deque(maxlen=window)

    def process(self, raw: np.ndarray, out: np.ndarray, active: bool) -> np.ndarray:
        if not active or out.size == 0 or raw.size == 0:
            self._raw.clear()
            self._out.clear()
            return out
        self._raw.append(float(np.sum(raw * raw)))
        self._out.append(float(np.sum(out * out)))
        if sum(self._out) < sum(self._raw) * self.ratio:
            return np.zeros_like(out)
        return out
