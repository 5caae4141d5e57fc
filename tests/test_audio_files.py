"""Audio files: WAV/FLAC/MP3/OGG-Vorbis/OGG-Opus in, WAV/FLAC out (atomic), soxr resampling."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import speech_dir
from tests.helpers.asr import make_bad_inputs
from voice.audio.files import load_audio, write_audio
from voice.audio.resample import StreamResampler, resample
from voice.errors import InputError

CLIP = "jfk.wav"


@pytest.fixture(scope="module")
def clip() -> Path:
    p = speech_dir() / CLIP
    assert p.exists(), p
    return p


@pytest.fixture(scope="module")
def encoded(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real clip encoded by FFmpeg: lossless, lossy, stereo and other rates."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is installed by scripts/install.sh"
    d = tmp_path_factory.mktemp("encoded")
    recipes = {
        "flac": ("clip.flac", ["-c:a", "flac"]),
        "mp3_stereo_44k": ("clip.mp3", ["-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"]),
        "ogg_vorbis": ("clip.ogg", ["-c:a", "libvorbis", "-q:a", "5"]),
        "ogg_opus_48k": ("clip.opus", ["-c:a", "libopus", "-b:a", "48k"]),
        "opus_in_ogg_suffix": ("clip_opus.ogg", ["-c:a", "libopus", "-b:a", "48k"]),
        "wav_stereo_48k": ("clip48.wav", ["-ac", "2", "-ar", "48000", "-c:a", "pcm_s16le"]),
    }
    out = {}
    for key, (name, opts) in recipes.items():
        dst = d / name
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(clip), *opts, str(dst)], check=True)
        out[key] = dst
    return out


def _similar(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_wav_loads_as_float32_mono_16k(clip: Path) -> None:
    audio = load_audio(clip)
    info = sf.info(str(clip))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == info.frames
    assert 0.1 < float(np.max(np.abs(audio))) <= 1.0


@pytest.mark.parametrize(
    "key,min_corr",
    [("flac", 0.9999), ("mp3_stereo_44k", 0.98), ("ogg_vorbis", 0.97), ("ogg_opus_48k", 0.97),
     ("opus_in_ogg_suffix", 0.97), ("wav_stereo_48k", 0.99)],
)
def test_formats_decode_to_the_same_audio(clip: Path, encoded: dict[str, Path], key: str, min_corr: float) -> None:
    ref = load_audio(clip)
    audio = load_audio(encoded[key], sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - len(ref)) <= 0.01 * len(ref), (len(audio), len(ref))
    assert _similar(ref, audio) >= min_corr


def test_other_target_rate(clip: Path, encoded: dict[str, Path]) -> None:
    ref16 = load_audio(clip)
    for path in (clip, encoded["mp3_stereo_44k"]):
        audio = load_audio(path, sample_rate=8000)
        assert abs(len(audio) - len(ref16) // 2) <= 0.01 * len(ref16)


@pytest.mark.parametrize("kind", ["missing", "directory", "non_audio", "fake_wav", "empty"])
def test_bad_files_raise_one_line_input_error(tmp_path: Path, kind: str) -> None:
    bad = make_bad_inputs(tmp_path)[kind]
    with pytest.raises(InputError) as err:
        load_audio(bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg
    words = {"missing": "no such file", "directory": "directory", "non_audio": "not an audio file",
             "fake_wav": "not an audio file", "empty": "empty"}
    assert words[kind] in msg


def test_random_bytes_are_not_audio(tmp_path: Path) -> None:
    p = tmp_path / "noise.mp3"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError):
        load_audio(p)


@pytest.mark.parametrize("head", [b"hello, this is a text file\n", b"ID3\x03\x00\x00\x00\x00\x00\x00"])
def test_a_non_mp3_named_mp3_prints_nothing_from_the_decoders(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                              head: bytes) -> None:
    # libsndfile's libmpg123 wrote "Note: Illegal Audio-MPEG-Header ..." to fd 2 for these
    p = tmp_path / "notes.mp3"
    p.write_bytes(head + np.random.default_rng(1).bytes(2000))
    with pytest.raises(InputError, match="not an audio file"):
        load_audio(p)
    out = capfd.readouterr()
    assert out.err == "" and out.out == "", out.err


# ------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_round_trip(tmp_path: Path, suffix: str) -> None:
    t = np.arange(22050) / 22050
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = write_audio(tmp_path / f"tone{suffix}", audio, 22050)
    assert sf.info(str(out)).samplerate == 22050
    back = load_audio(out, sample_rate=22050)
    assert np.max(np.abs(back - audio)) < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == [f"tone{suffix}"]  # no temp file left


def test_write_format_argument_overrides_suffix(tmp_path: Path) -> None:
    out = write_audio(tmp_path / "x.bin", np.zeros(100, dtype=np.float32), 16000, format="flac")
    assert sf.info(str(out)).format == "FLAC"


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "keep.wav"
    write_audio(target, np.full(1600, 0.25, dtype=np.float32), 16000)
    before = target.read_bytes()
    bad = np.full(1600, 0.25, dtype=np.float32).reshape(1, 1, 1600)  # 3-D: soundfile refuses
    with pytest.raises((ValueError, RuntimeError, TypeError, sf.LibsndfileError)):
        write_audio(target, bad, 16000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_written_files_are_readable_like_any_new_file(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        out = write_audio(tmp_path / "a.wav", np.zeros(160, dtype=np.float32), 16000)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_write_unknown_format_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write format"):
        write_audio(tmp_path / "x.xyz", np.zeros(10, dtype=np.float32), 16000)


# ------------------------------------------------------------------------------ resampling


def _tone(sr: int, seconds: float = 1.0, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.8 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spec) * sr / len(audio))


@pytest.mark.parametrize("from_sr,to_sr", [(44100, 16000), (48000, 16000), (16000, 22050), (22050, 24000)])
def test_resample_keeps_length_pitch_and_level(from_sr: int, to_sr: int) -> None:
    tone = _tone(from_sr)
    out = resample(tone, from_sr, to_sr)
    assert out.dtype == np.float32
    assert abs(len(out) - round(len(tone) * to_sr / from_sr)) <= 1
    assert abs(_peak_hz(out, to_sr) - 1000.0) < 5
    mid = out[len(out) // 4 : 3 * len(out) // 4]
    assert 0.75 < float(np.max(np.abs(mid))) < 0.85


def test_resample_same_rate_and_empty() -> None:
    x = _tone(16000, 0.1)
    same = resample(x, 16000, 16000)
    assert np.array_equal(same, x) and same is not x
    assert resample(np.zeros(0, dtype=np.float32), 48000, 16000).shape == (0,)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


@pytest.mark.parametrize("from_sr,to_sr", [(48000, 16000), (16000, 22050), (16000, 16000)])
def test_stream_resampler_matches_one_shot(from_sr: int, to_sr: int) -> None:
    rng = np.random.default_rng(1)
    tone = _tone(from_sr, 2.0, freq=440.0)
    stream = StreamResampler(from_sr, to_sr)
    pieces, pos = [], 0
    while pos < len(tone):
        n = int(rng.integers(1, 2000))
        pieces.append(stream.process(tone[pos : pos + n]))
        pos += n
    pieces.append(stream.flush())
    streamed = np.concatenate(pieces)
    whole = resample(tone, from_sr, to_sr)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
    with pytest.raises(RuntimeError):
        stream.process(tone[:10])
