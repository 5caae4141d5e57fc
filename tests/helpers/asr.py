"""ASR test fixtures: one model cache per session, the tiny.en transcriber, CLI runner, bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_voice(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``voice`` command (``python -m voice``) and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "voice", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """Files (and non-files) that ``voice transcribe`` must refuse with one line each."""
    from voice.audio.files import write_audio

    folder.mkdir(parents=True, exist_ok=True)
    notes = folder / "notes.txt"
    notes.write_text("this is not audio\n" * 20)
    fake = folder / "fake.wav"
    fake.write_text("RIFF? no, just text pretending to be a wav file\n")
    fake_mp3 = folder / "fake.mp3"  # libmpg123 used to print "Illegal Audio-MPEG-Header" notes for it
    fake_mp3.write_text("not an mp3, just a text file with the wrong name\n" * 20)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    sub = folder / "a_folder"
    sub.mkdir(exist_ok=True)
    silence = folder / "silence.wav"
    write_audio(silence, np.zeros(16000 * 2, dtype=np.float32), 16000)
    return {
        "missing": folder / "does_not_exist.wav",
        "directory": sub,
        "non_audio": notes,
        "fake_wav": fake,
        "fake_mp3": fake_mp3,
        "empty": empty,
        "silence": silence,
    }


@pytest.fixture(scope="session")
def asr_cache():
    """Whisper models loaded once per test session."""
    from voice.asr import ModelCache

    return ModelCache()


@pytest.fixture(scope="session")
def asr_cfg(tmp_path_factory: pytest.TempPathFactory):
    """Default config on the CPU, with a session-private cache folder (assembled models)."""
    from voice.config import load_config

    c = load_config(environ={})
    base = tmp_path_factory.mktemp("asr")
    c.general.data_dir = str(base / "data")
    c.general.cache_dir = str(base / "cache")
    c.asr.device = "cpu"
    return c


@pytest.fixture(scope="session")
def tiny_transcriber(asr_cfg, asr_cache) -> Iterator[object]:
    """The default whisper-tiny.en transcriber, loaded once."""
    from voice.asr import get_transcriber

    t = get_transcriber(asr_cfg, asr_cache)
    t.load()
    yield t
