"""Raw PCM bytes <-> float32 samples, for protocols that carry integer PCM (realtime, Wyoming)."""

from __future__ import annotations

import numpy as np

from voice.errors import InputError

#: The pipeline's own rate: microphone frames, VAD, ASR and the echo canceller all run at 16 kHz.
SAMPLE_RATE = 16000
#: Sample widths in bytes that :func:`pcm_to_float` reads: unsigned 8-bit, signed 16 and 32-bit.
WIDTHS = (1, 2, 4)


def pcm_to_float(pcm: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian integer PCM (interleaved) -> float32 mono in [-1, 1] (channels averaged)."""
    if width not in WIDTHS:
        raise InputError(f"audio sample width {width} bytes is not supported (1, 2 or 4)")
    if channels < 1:
        raise InputError(f"audio must have at least one channel, got {channels}")
    frame = width * channels
    if len(pcm) % frame:
        raise InputError(f"audio chunk of {len(pcm)} bytes is not a whole number of {frame}-byte frames")
    if width == 1:
        data = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    else:
        data = (np.frombuffer(pcm, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return data


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """float32 samples (clipped to [-1, 1]) -> little-endian signed 16-bit PCM."""
    a = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (a * 32767.0).astype("<i2").tobytes()
