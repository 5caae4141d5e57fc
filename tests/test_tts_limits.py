"""Every text that reaches a TTS engine is bounded: `voice say` and `voice synth` with the real
Piper voice, their peak memory, the text caps, engines named but not installed, and text that
must not be read aloud (emoji, code blocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.asr import ROOT, run_voice
from voice.textnorm import normalize

pytestmark = pytest.mark.slow

#: Ordinary words, no punctuation: the text of the memory tests, repeated.
PHRASES = (
    "the quick brown fox jumps over the lazy dog please turn off the lights in the kitchen before"
    " you leave the weather today is sunny with a gentle breeze from the west my favorite book is"
    " about a sailor who crosses the ocean alone"
)
GIB = 1024**3


def unpunctuated(chars: int) -> str:
    """Exactly ``chars`` characters of ordinary words and spaces, no punctuation."""
    words = PHRASES.split()
    out: list[str] = []
    while sum(len(w) + 1 for w in out) <= chars:
        out.append(words[len(out) % len(words)])
    text = " ".join(out)[:chars]
    return text if not text.endswith(" ") else text[:-1] + "a"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    env.update(extra)
    return env


#: Runs ``python -m voice ARGS`` and prints its peak RSS (bytes) from wait4. A small process of
#: its own: the kernel records the old address space's peak at exec, and with vfork that is the
#: parent's, so measuring straight from pytest (Whisper loaded, 800+ MB) would count pytest.
_MEASURE = """
import os, subprocess, sys, time
timeout, args = float(sys.argv[1]), sys.argv[2:]
proc = subprocess.Popen([sys.executable, "-m", "voice", *args], stdout=subprocess.DEVNULL)
deadline = time.monotonic() + timeout
while not (got := os.wait4(proc.pid, os.WNOHANG))[0]:
    if time.monotonic() > deadline:
        proc.kill()
        got = os.wait4(proc.pid, 0)
        break
    time.sleep(0.2)
print(got[2].ru_maxrss * 1024)
sys.exit(os.waitstatus_to_exitcode(got[1]))
"""


def run_measured(args: list[str], timeout: float = 900) -> tuple[int, str, int]:
    """Run ``python -m voice ARGS``; (exit code, stderr, peak RSS in bytes of the process and of
    the children it reaped: synth's worker processes)."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(timeout), *args], cwd=ROOT, env=_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 60,
                       check=False)
    return r.returncode, r.stderr, int(r.stdout.strip().splitlines()[-1])


def bigram_hits(reference: str, heard: str) -> float:
    """Share of the heard word pairs that occur in the reference (in order: a pair of words
    from the same vocabulary in a random order rarely does)."""
    ref, hyp = normalize(reference).split(), normalize(heard).split()
    pairs = set(zip(ref, ref[1:], strict=False))
    heard_pairs = list(zip(hyp, hyp[1:], strict=False))
    return sum(p in pairs for p in heard_pairs) / max(1, len(heard_pairs))


def assert_speaks_the_text(path: Path, transcriber: object, expect_s: float) -> None:
    """The file is as long as the whole text spoken, and 15 s slices from its start, middle
    and end transcribe back to the text's words in the text's order."""
    from voice.audio.files import load_audio

    audio = load_audio(path)  # 16 kHz
    seconds = len(audio) / 16000
    assert seconds > expect_s, seconds
    for start in (0.0, seconds / 2, seconds - 16.0):
        piece = audio[int(start * 16000) : int((start + 15.0) * 16000)]
        heard = transcriber.transcribe_sync(piece).text  # type: ignore[attr-defined]
        assert len(heard.split()) >= 20, (start, heard)
        assert bigram_hits(PHRASES + " " + PHRASES, heard) >= 0.6, (start, heard)


# ----------------------------------------------------------------------------- memory


def test_say_20000_unpunctuated_characters_stays_under_1_gb(tmp_path: Path, tiny_transcriber) -> None:
    """Was: 1,000 characters 1.7 GB, 15,036 killed at 24.3 GB. Now every Piper call is one
    piece of at most tts.max_sentence_chars / tts.piper.max_phonemes, and the file is written
    chunk by chunk."""
    text = unpunctuated(20_000)
    assert len(text) == 20_000 and not any(c in text for c in ".,;:!?")
    out = tmp_path / "long.wav"
    rc, err, peak = run_measured(["say", "--output", str(out), text])
    assert rc == 0, err
    print(f"voice say, 20,000 characters: peak RSS {peak / 2**20:.0f} MB; {err.strip()}")
    assert peak < GIB, peak
    assert_speaks_the_text(out, tiny_transcriber, expect_s=700)


def test_synth_20000_unpunctuated_characters_stays_under_1_gb(tmp_path: Path, tiny_transcriber) -> None:
    text = unpunctuated(20_000)
    inp = tmp_path / "long.txt"
    inp.write_text(text + "\n")
    out = tmp_path / "out"
    rc, err, peak = run_measured(["synth", str(inp), "-o", str(out), "-q"])
    assert rc == 0, err
    print(f"voice synth, 20,000 characters: peak RSS {peak / 2**20:.0f} MB; {err.strip()}")
    assert peak < GIB, peak
    assert_speaks_the_text(out / "1.wav", tiny_transcriber, expect_s=700)


def test_digits_and_currency_are_bounded_by_phonemes(tmp_path: Path) -> None:
    """300 characters of "$999,999,999" are 1,511 phonemes: 1.66 GB in one call before
    tts.piper.max_phonemes; the character cap alone does not bound it."""
    text = " ".join(["$999,999,999"] * 23)
    assert len(text) < 300
    out = tmp_path / "money.wav"
    rc, err, peak = run_measured(["say", "-o", str(out), text])
    assert rc == 0, err
    print(f"digits: peak RSS {peak / 2**20:.0f} MB")
    assert peak < 800 * 2**20, peak
    import soundfile as sf

    assert sf.info(str(out)).duration > 50  # all of it was spoken (~75 s)


# ----------------------------------------------------------------------------- text caps


def test_say_text_over_the_limit_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run_voice("say", "-o", str(tmp_path / "x.wav"), "a" * 50_001)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "voice: error: the text is 50,001 characters; voice say takes at most 50,000 (tts.max_say_chars)"
    )
    r = subprocess.run([sys.executable, "-m", "voice", "--set", "tts.max_say_chars=100", "say", "-o",
                        str(tmp_path / "x.wav")], input="word " * 1000, cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "voice: error: the text is over 100 characters; voice say takes at most 100 (tts.max_say_chars)"
    assert not (tmp_path / "x.wav").exists()


def test_synth_row_over_the_limit_fails_alone(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "short", "text": "A short row is spoken."},
        {"id": "huge", "text": "word " * 10_001},  # 50,005 characters
        {"id": "after", "text": "The rows after it finish too."},
    ]))
    out = tmp_path / "out"
    r = run_voice("synth", str(inp), "-o", str(out), "--workers", "1", "-q")
    assert r.returncode == 1, r.stderr
    assert "2/3 ok" in r.stderr and "Traceback" not in r.stderr
    by_id = {e["id"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert by_id["huge"]["status"] == "error"
    assert by_id["huge"]["error"] == "the text is 50,005 characters, over tts.max_synth_row_chars = 50,000"
    assert by_id["short"]["status"] == by_id["after"]["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["after.wav", "manifest.jsonl", "short.wav"]


# ----------------------------------------------------------------------------- engines by name


@pytest.fixture
def without_chattts(tmp_path: Path) -> dict[str, str]:
    """An environment in which ChatTTS's package cannot be imported (it is installed here):
    a sitecustomize that blocks it, in every process, synth's workers included."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['ChatTTS'] = None\n")
    return _env(PYTHONPATH=f"{site}{os.pathsep}{ROOT}")


def test_engine_named_but_not_installed_is_exit_3_with_the_install_hint(tmp_path: Path, without_chattts) -> None:
    out = tmp_path / "x.wav"
    r = subprocess.run([sys.executable, "-m", "voice", "say", "--engine", "chattts", "-o", str(out), "Hello."],
                       cwd=ROOT, env=without_chattts, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (
        "voice: error: TTS engine 'chattts' is not installed; install it with: bash scripts/install.sh --expressive"
    )
    assert not out.exists()
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "text": "Piper speaks this row."}\n{"id": "b", "text": "Not this one.", "engine": "chattts"}\n')
    r = subprocess.run([sys.executable, "-m", "voice", "synth", str(inp), "-o", str(tmp_path / "out"), "-q",
                        "--workers", "1"], cwd=ROOT, env=without_chattts, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 1, r.stderr
    by_id = {e["id"]: e for e in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert by_id["a"]["status"] == "ok" and by_id["a"]["engine"] == "piper"
    assert by_id["b"]["status"] == "error" and "'chattts' is not installed; install it with" in by_id["b"]["error"]


# ----------------------------------------------------------------------------- not read aloud


def test_say_does_not_read_emoji_or_code_blocks(tmp_path: Path, tiny_transcriber) -> None:
    import soundfile as sf

    from voice.audio.files import load_audio

    r = run_voice("say", "-o", str(tmp_path / "x.wav"), "😀😀")
    assert r.returncode == 2
    assert r.stderr.strip() == "voice: error: nothing speakable in the text (only code, links, emoji or markup)"

    def seconds(name: str, text: str) -> float:
        r = run_voice("say", "-o", str(tmp_path / name), text)
        assert r.returncode == 0, r.stderr
        return float(sf.info(str(tmp_path / name)).duration)

    plain = seconds("plain.wav", "Good morning to you.")
    emoji = seconds("emoji.wav", "Good morning 😀😀😀 to you 🎉.")  # read aloud: "grinning face" x3, "party popper"
    assert abs(emoji - plain) < 0.25 * plain, (plain, emoji)
    md = "Run this first:\n```python\nfor item in range(10):\n    print(item)\n```\nThen wait for the green light."
    r = run_voice("say", "-o", str(tmp_path / "md.wav"), md)
    assert r.returncode == 0, r.stderr
    heard = normalize(tiny_transcriber.transcribe_sync(load_audio(tmp_path / "md.wav")).text).split()
    for word in ("first", "wait", "green", "light"):
        assert word in heard, heard
    for word in ("range", "print", "item", "python", "ten"):
        assert word not in heard, heard


def test_synth_rows_are_cleaned_too(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "e", "text": "🎉🎉🎉"}\n{"id": "md", "text": "**Bold** words and `ls` here."}\n')
    out = tmp_path / "out"
    r = run_voice("synth", str(inp), "-o", str(out), "--workers", "1", "-q")
    assert r.returncode == 1, r.stderr
    by_id = {e["id"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert by_id["e"]["error"] == "nothing speakable in the text"
    assert by_id["md"]["status"] == "ok" and 1.0 < by_id["md"]["audio_seconds"] < 4.0
