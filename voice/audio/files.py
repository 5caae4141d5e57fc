"""Audio files in and out: WAV, FLAC, MP3, OGG/Vorbis, OGG/Opus -> float32 mono.

soundfile (libsndfile) reads WAV/FLAC/OGG/AIFF quickly; anything else goes through PyAV (FFmpeg),
which covers MP3, Opus and most containers. MP3 never goes to libsndfile: its libmpg123 prints
"Note: Illegal Audio-MPEG-Header ..." straight to stderr for a file that is not MPEG audio. Sample-rate changes go through
:mod:`voice.audio.resample`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from voice.audio.resample import resample
from voice.errors import InputError
from voice.fsutil import atomic_write

#: Output formats :func:`write_audio` knows, by file suffix (soundfile format names).
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as float32 mono at ``sample_rate``.

    Raises :class:`InputError` (one line) for a missing file, a directory, an empty file, or a
    file that holds no decodable audio.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an audio file")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise InputError(f"{p}: cannot be read ({err.strerror or err})") from None
    if size == 0:
        raise InputError(f"{p}: is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: permission denied")
    decoded = _read_soundfile(p)
    if decoded is None:
        decoded = _read_av(p)
    audio, sr = decoded
    if sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _to_mono(data: np.ndarray) -> np.ndarray:
    """Frames x channels (or frames) -> frames, averaging channels."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    return data.mean(axis=1, dtype=np.float32)


#: File signatures of the containers handed to libsndfile (RIFF/RF64 WAV, FLAC, Ogg, AIFF).
_SNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM")


def _read_soundfile(p: Path) -> tuple[np.ndarray, int] | None:
    """WAV/FLAC/OGG/AIFF through libsndfile; None for anything else or what it cannot read."""
    import soundfile as sf

    try:
        with p.open("rb") as fh:
            if fh.read(4) not in _SNDFILE_MAGIC:
                return None
    except OSError:
        return None
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return _to_mono(data), int(sr)


def _read_av(p: Path) -> tuple[np.ndarray, int]:
    """Anything FFmpeg decodes (MP3, Opus, ...); InputError when there is no audio in it."""
    import av

    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{p}: not an audio file this program can read ({_av_reason(err)})") from None
    pieces: list[np.ndarray] = []
    try:
        with container:
            if not container.streams.audio:
                raise InputError(f"{p}: contains no audio stream")
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate or 0)
            if sr <= 0:
                raise InputError(f"{p}: audio stream has no sample rate")
            # Format conversion only (planar float, same layout and rate); rates change in resample.py.
            converter = av.AudioResampler(format="fltp", layout=stream.layout, rate=sr)
            for frame in container.decode(stream):
                for out in converter.resample(frame):
                    pieces.append(out.to_ndarray())
            for out in converter.resample(None):
                pieces.append(out.to_ndarray())
    except av.FFmpegError as err:
        raise InputError(f"{p}: cannot decode audio ({_av_reason(err)})") from None
    if not pieces:
        return np.zeros(0, dtype=np.float32), sr
    planar = np.concatenate(pieces, axis=1)  # channels x frames
    return planar.mean(axis=0, dtype=np.float32), sr


def _av_reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(err).__name__


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    format: str | None = None,
) -> Path:
    """Write float32 audio atomically (temp file beside it, then ``os.replace``).

    The format comes from ``format`` ("wav", "flac", "ogg") or else the file suffix.
    """
    with audio_writer(path, sample_rate, format) as write:
        write(audio)
    return Path(path)


@contextlib.contextmanager
def audio_writer(
    path: str | os.PathLike[str],
    sample_rate: int,
    format: str | None = None,
) -> Iterator[Callable[[np.ndarray], None]]:
    """``write(piece)`` float32 audio piece by piece into one file, atomically as
    :func:`write_audio` (memory stays one piece, whatever the length); an error inside the
    block leaves no file."""
    p = Path(path)
    fmt = (format or "").upper() or WRITE_FORMATS.get(p.suffix.lower())
    if fmt not in WRITE_FORMATS.values():
        known = ", ".join(sorted(WRITE_FORMATS))
        raise InputError(f"{p}: cannot write format {format or p.suffix or '(none)'} (known: {known})")
    import soundfile as sf

    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{p}: folder {parent} does not exist")
    subtype = "PCM_16" if fmt in ("WAV", "FLAC") else None
    with atomic_write(p) as fh, sf.SoundFile(fh, "w", samplerate=sample_rate, channels=1, format=fmt,
                                             subtype=subtype) as snd:
        yield lambda audio: snd.write(np.asarray(audio, dtype=np.float32))
