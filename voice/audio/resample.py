"""The one place that changes sample rates (soxr): whole arrays and streams of chunks."""

from __future__ import annotations

import numpy as np
import soxr


def resample(audio: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """``audio`` (float32 mono, or frames x channels) from ``from_sr`` to ``to_sr`` Hz."""
    _check_rates(from_sr, to_sr)
    data = np.asarray(audio, dtype=np.float32)
    if from_sr == to_sr or data.shape[0] == 0:
        return data.copy()
    return np.asarray(soxr.resample(data, from_sr, to_sr, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Resample a stream chunk by chunk with filter state carried between chunks.

    ``process(chunk)`` returns what is ready so far (possibly empty); ``flush()`` returns the
    tail held back by the filter and ends the stream. Output length over a whole stream is
    ``round(total_in * to_sr / from_sr)``, within a sample.
    """

    def __init__(self, from_sr: int, to_sr: int, channels: int = 1) -> None:
        _check_rates(from_sr, to_sr)
        self.from_sr = from_sr
        self.to_sr = to_sr
        self.channels = channels
        self._passthrough = from_sr == to_sr
        self._stream = (
            None if self._passthrough else soxr.ResampleStream(from_sr, to_sr, channels, dtype="float32", quality="HQ")
        )
        self._done = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        if self._done:
            raise RuntimeError("StreamResampler.process() after flush()")
        data = np.ascontiguousarray(chunk, dtype=np.float32)
        if self._stream is None:
            return data.copy()
        return np.asarray(self._stream.resample_chunk(data, last=False), dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self._done:
            return np.zeros((0,) if self.channels == 1 else (0, self.channels), dtype=np.float32)
        self._done = True
        empty = np.zeros((0,) if self.channels == 1 else (0, self.channels), dtype=np.float32)
        if self._stream is None:
            return empty
        return np.asarray(self._stream.resample_chunk(empty, last=True), dtype=np.float32)


def _check_rates(from_sr: int, to_sr: int) -> None:
    if from_sr <= 0 or to_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {from_sr} -> {to_sr}")
