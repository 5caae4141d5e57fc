"""``voice chat`` end to end with the default stack (tiny.en, embedded Qwen 0.5B, Piper joe):
a spoken question from a file, a spoken answer to a file that carries a fact from an ingested
document; and the one-line errors for bad flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voice.audio.files import load_audio, write_audio

ROOT = Path(__file__).resolve().parent.parent

DOC = """# The Kestrel Point lighthouse

The lighthouse on Kestrel Point was painted bright purple in 1987. Its keeper is Marigold
Fenwick. The light can be seen from forty kilometres away.
"""
# Piper samples noise, so each run speaks the question differently; tiny.en misheard "... on
# Kestrel Point?" in about 1 rendition in 4 and this wording in none of 12.
QUESTION = "What color was the lighthouse painted?"
FACT = "purple"


def voice(*args: str, env: dict[str, str], timeout: float = 400,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voice", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def chat_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("chat")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_DATA_HOME": str(d / "data"),
            "VOICE_GENERAL__CACHE_DIR": os.environ.get("VOICE_TEST_CACHE_DIR", str(Path.home() / ".cache" / "voice"))}


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory, chat_env: dict[str, str]) -> Path:
    d = tmp_path_factory.mktemp("kbdocs")
    (d / "kestrel.md").write_text(DOC)
    kb = d / "kb"
    r = voice("ingest", "--kb", str(kb), str(d / "kestrel.md"), env=chat_env)
    assert r.returncode == 0, r.stderr
    return kb


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question spoken by Piper, with silence around it, as a 16 kHz WAV."""
    import asyncio

    from voice.audio.resample import resample
    from voice.config import load_config
    from voice.tts import create_engine

    async def make() -> np.ndarray:
        eng = create_engine(load_config(environ={}))
        await eng.load()
        return np.concatenate([resample(c.audio, c.sample_rate, 16000) async for c in eng.stream(QUESTION)])

    speech = asyncio.run(make())
    pad = np.zeros(8000, np.float32)
    p = tmp_path_factory.mktemp("q") / "q.wav"
    write_audio(p, np.concatenate([pad, speech, pad, pad]), 16000)
    return p


@pytest.mark.slow
def test_chat_input_output_answers_with_fact(tmp_path: Path, chat_env: dict[str, str], kb_dir: Path,
                                             question_wav: Path, tiny_transcriber) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "a.wav"
    r = voice("chat", "--input", str(question_wav), "--output", str(out), "--kb", str(kb_dir), "--fast",
              env=chat_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "you:" in r.stdout and "assistant:" in r.stdout
    assert "voice-to-voice" in r.stdout  # the latency summary at exit
    audio = load_audio(out, 16000)
    assert audio.shape[0] > 16000  # at least a second of answer
    heard = tiny_transcriber.transcribe_sync(audio).text.lower()
    assert FACT in heard, (heard, r.stdout)


@pytest.mark.slow
def test_chat_text_mode_to_file(tmp_path: Path, chat_env: dict[str, str], kb_dir: Path) -> None:
    out = tmp_path / "t.wav"
    r = voice("chat", "--text", "--output", str(out), "--kb", str(kb_dir), env=chat_env,
              stdin=QUESTION + "\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert FACT in r.stdout.lower()
    assert load_audio(out, 16000).shape[0] > 8000


@pytest.mark.parametrize(("args", "needle"), [
    (["--input", "/nonexistent/q.wav"], "no such file"),
    (["--input", "/tmp"], "is a directory"),
    (["--text", "--input", "x.wav"], "exclude each other"),
    (["--text", "--output", "/tmp/a.mp3"], ".wav or .flac"),
    (["--text", "--output", "/nonexistent/dir/a.wav"], "does not exist"),
    (["--text", "--kb", "/nonexistent/kb", "--output", "/tmp/x.wav"], "no such knowledge base"),
    (["--fast"], "only applies to --input"),
])
def test_chat_bad_flags_one_line_error(args: list[str], needle: str, chat_env: dict[str, str]) -> None:
    r = voice("chat", *args, env=chat_env, timeout=120, stdin="")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("voice: error:") and needle in r.stderr, r.stderr


def test_chat_without_microphone_points_at_flags(chat_env: dict[str, str]) -> None:
    env = {k: v for k, v in chat_env.items() if not k.startswith("PULSE")}
    env["VOICE_AUDIO__INPUT_DEVICE"] = "no-such-microphone-xyz"
    r = voice("chat", env=env, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--text" in r.stderr and "--input" in r.stderr and "--output" in r.stderr, r.stderr
