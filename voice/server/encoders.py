"""Streaming audio encoders for ``POST /v1/audio/speech``: float32 pieces in, bytes out as soon
as the codec has them. No I/O; CPU work, so the shell calls ``encode`` in a worker thread.

Every format is 24 kHz mono, as OpenAI's: ``pcm`` is raw signed 16-bit little-endian, ``wav``
the same behind a header whose sizes say "unknown" (0xFFFFFFFF; libsndfile, FFmpeg and Python's
``wave`` read such a stream to its end), ``mp3`` / ``opus`` (in Ogg) / ``aac`` (ADTS) /
``flac`` through PyAV (FFmpeg), with ``flush_packets`` so each packet leaves at once.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import numpy as np

from voice.audio.pcm import float_to_pcm16
from voice.audio.resample import StreamResampler

RATE = 24000
#: PyAV's (container format, codec) per OpenAI response_format.
_AV = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"), "flac": ("flac", "flac")}
_BITRATES = {"mp3": 64_000, "opus": 32_000, "aac": 64_000}
_UNKNOWN = 0xFFFFFFFF
#: Ogg holds packets for a page of up to 1 s by default; 100 ms pages let audio leave sooner.
_OPTIONS = {"opus": {"flush_packets": "1", "page_duration": "100000"}}


def wav_header(rate: int = RATE) -> bytes:
    """A 16-bit mono PCM WAV header for a stream of unknown length."""
    return (b"RIFF" + struct.pack("<I", _UNKNOWN) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", _UNKNOWN))


class _Sink:
    """The file object PyAV writes into; :meth:`take` hands over what it has so far."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class SpeechEncoder:
    """``encode(audio)`` float32 mono at ``from_rate`` -> bytes ready to send (maybe empty);
    ``finish()`` -> the rest. One per response; not thread-safe (one call at a time)."""

    def __init__(self, fmt: str, from_rate: int) -> None:
        if fmt not in ("pcm", "wav", *_AV):
            raise ValueError(f"unknown speech format {fmt!r}")
        self.fmt = fmt
        self._resampler = StreamResampler(from_rate, RATE)
        self._header = wav_header() if fmt == "wav" else b""
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        self._pts = 0
        if fmt in _AV:
            import av

            container_format, codec = _AV[fmt]
            self._container = av.open(self._sink, mode="w", format=container_format,
                                      options=_OPTIONS.get(fmt, {"flush_packets": "1"}), buffer_size=4096)
            self._stream = self._container.add_stream(codec, rate=RATE, layout="mono")
            if fmt in _BITRATES:
                self._stream.bit_rate = _BITRATES[fmt]

    def encode(self, audio: np.ndarray) -> bytes:
        return self._out(self._resampler.process(np.asarray(audio, dtype=np.float32)), last=False)

    def finish(self) -> bytes:
        return self._out(self._resampler.flush(), last=True)

    def _out(self, samples: np.ndarray, *, last: bool) -> bytes:
        head, self._header = self._header, b""
        if self._container is None:
            return head + float_to_pcm16(samples)
        import av

        if samples.size:
            frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0).reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = RATE
            frame.pts = self._pts
            self._pts += samples.size
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        if last:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.take()

    def close(self) -> None:
        """Drop an unfinished stream (the client went away)."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # half-written output is being thrown away
                self._container.close()
            self._container = None
