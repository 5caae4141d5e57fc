"""`voice synth`: input formats, manifest, bad rows, exit codes, workers, resume, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.asr import ROOT, run_voice
from voice.errors import InputError
from voice.synth import read_manifest, read_rows, rewrite_manifest

# ----------------------------------------------------------------------------- reading rows


def test_txt_rows_use_line_numbers_and_skip_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("First line.\n\n  Second line.  \n\nThird.\n")
    rows = read_rows(str(f))
    assert [(r.id, r.text) for r in rows] == [("1", "First line."), ("3", "Second line."), ("5", "Third.")]


def test_csv_rows(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text('id,text,voice,speed\nhello,"Hello, world.",,\n,No id here.,piper-joe-medium,1.2\nx/y z,Odd id.,,fast\n')
    rows = read_rows(str(f))
    assert [(r.id, r.text, r.voice, r.speed, r.error) for r in rows[:2]] == [
        ("hello", "Hello, world.", None, None, None),
        ("2", "No id here.", "piper-joe-medium", 1.2, None),
    ]
    assert rows[2].id == "x_y_z" and "speed" in (rows[2].error or "")


def test_csv_without_text_column_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "in.csv"
    f.write_text("id,words\n1,hi\n")
    with pytest.raises(InputError, match="'text' column"):
        read_rows(str(f))


def test_jsonl_rows_with_bad_lines_and_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(
        '{"id": "a", "text": "One."}\n'
        "not json\n"
        "[1, 2]\n"
        '{"text": "No id."}\n'
        '{"id": "a", "text": "Duplicate."}\n'
        '{"id": "b"}\n'
    )
    rows = read_rows(str(f))
    assert [r.id for r in rows] == ["a", "2", "3", "4", "a_dup5", "b"]
    assert [bool(r.error) for r in rows] == [False, True, True, False, True, True]
    assert "not valid JSON" in (rows[1].error or "") and "duplicate id" in (rows[4].error or "")


def test_stdin_detects_jsonl_or_text() -> None:
    assert [r.text for r in read_rows("-", ['{"id": "q", "text": "Hi."}\n'])] == ["Hi."]
    assert [(r.id, r.text) for r in read_rows("-", ["one\n", "two\n"])] == [("1", "one"), ("2", "two")]


@pytest.mark.parametrize("name", ["missing.txt", "folder", "data.xml"])
def test_unusable_inputs(tmp_path: Path, name: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "data.xml").write_text("<x/>")
    with pytest.raises(InputError):
        read_rows(str(tmp_path / name))


def test_manifest_torn_line_and_dedupe(tmp_path: Path) -> None:
    m = tmp_path / "manifest.jsonl"
    m.write_text('{"id": "1", "status": "error"}\n{"id": "2", "status": "ok"}\n{"id": "1", "status": "ok"}\n{"id": "3", "sta')
    assert {k: v["status"] for k, v in read_manifest(m).items()} == {"1": "ok", "2": "ok"}
    rewrite_manifest(m, ["2", "1", "3"])
    assert [json.loads(line)["id"] for line in m.read_text().splitlines()] == ["2", "1"]


# ----------------------------------------------------------------------------- the command


def manifest_lines(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]


def assert_decodes(path: Path, min_seconds: float = 0.3) -> None:
    from voice.audio.files import load_audio

    audio = load_audio(path)
    assert len(audio) > min_seconds * 16000, path


@pytest.mark.slow
def test_synth_jsonl_with_bad_rows_flac_and_resume(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"id": "greet", "text": "Hello there, nice to meet you."}\n'
        '{"id": "empty", "text": "   "}\n'
        '{"id": "badvoice", "text": "This row names a voice nobody has.", "voice": "nobody"}\n'
        '{"id": "badengine", "text": "This row names an unknown engine.", "engine": "nope"}\n'
        '{"id": "fast", "text": "This row is spoken quickly.", "speed": 1.5}\n'
        "{broken json\n"
    )
    out = tmp_path / "out"
    r = run_voice("synth", str(inp), "-o", str(out), "--format", "flac", "--workers", "2", "-q")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "2/6 ok" in r.stderr and "4 failed" in r.stderr
    lines = manifest_lines(out)
    assert [e["id"] for e in lines] == ["greet", "empty", "badvoice", "badengine", "fast", "6"]
    by_id = {e["id"]: e for e in lines}
    assert by_id["greet"]["status"] == "ok" and by_id["greet"]["file"] == "greet.flac"
    assert by_id["greet"]["engine"] == "piper" and by_id["greet"]["voice"] == "piper-joe-medium"
    assert by_id["greet"]["audio_seconds"] > 1.0 and by_id["greet"]["synthesis_seconds"] > 0
    assert by_id["empty"]["error"] == "empty text"
    assert "unknown Piper voice 'nobody'" in by_id["badvoice"]["error"]
    assert "unknown TTS engine 'nope'" in by_id["badengine"]["error"]
    assert "not valid JSON" in by_id["6"]["error"]
    for e in lines:
        assert set(e) >= {"id", "file", "engine", "voice", "audio_seconds", "synthesis_seconds", "status", "error"}
    assert_decodes(out / "greet.flac")
    assert_decodes(out / "fast.flac")
    assert (out / "greet.flac").read_bytes()[:4] == b"fLaC"
    assert sorted(p.name for p in out.iterdir()) == ["fast.flac", "greet.flac", "manifest.jsonl"]

    # Fix the bad rows and re-run: done rows are skipped, the manifest keeps one line per row.
    before = (out / "greet.flac").stat().st_mtime_ns
    inp.write_text(
        '{"id": "greet", "text": "Hello there, nice to meet you."}\n'
        '{"id": "empty", "text": "Now it has words."}\n'
        '{"id": "fast", "text": "This row is spoken quickly.", "speed": 1.5}\n'
    )
    r = run_voice("synth", str(inp), "-o", str(out), "--format", "flac", "-q")
    assert r.returncode == 0, r.stderr
    assert "3/3 ok (2 done before)" in r.stderr
    assert (out / "greet.flac").stat().st_mtime_ns == before
    assert [e["id"] for e in manifest_lines(out)] == ["greet", "empty", "fast"]
    assert all(e["status"] == "ok" for e in manifest_lines(out))


@pytest.mark.slow
def test_synth_txt_from_stdin_wav_one_worker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    r = subprocess.run(
        [sys.executable, "-m", "voice", "synth", "-", "-o", str(out), "--workers", "1"],
        input="The first line.\nThe second line.\n", cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "eta" in r.stderr  # the progress bar
    assert "with 1 worker(s)" in r.stderr
    assert [e["file"] for e in manifest_lines(out)] == ["1.wav", "2.wav"]
    assert (out / "1.wav").read_bytes()[:4] == b"RIFF"
    assert_decodes(out / "2.wav")


def test_synth_bad_input_is_one_line(tmp_path: Path) -> None:
    r = run_voice("synth", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"voice: error: input {tmp_path / 'nope.txt'} does not exist"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    r = run_voice("synth", str(empty), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "holds no rows" in r.stderr
    r = run_voice("synth", str(empty), "-o", str(tmp_path / "out"), "--workers", "0")
    assert r.returncode == 2 and "--workers" in r.stderr


# ----------------------------------------------------------------------------- kill -9


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_kill_midway_then_resume_completes_everything(tmp_path: Path) -> None:
    n = 30
    inp = tmp_path / "in.txt"
    inp.write_text("".join(f"This is sentence number {i}, spoken for the kill test.\n" for i in range(1, n + 1)))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voice", "synth", str(inp), "-o", str(out), "--workers", "2", "-q"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and len(manifest.read_bytes().splitlines()) >= 6:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("synth did not get going")
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(manifest.read_bytes().splitlines())
    assert done_at_kill < n, "the run finished before it was killed; the test proves nothing"
    # Workers die with their parent (no orphans left synthesizing).
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)

    r = run_voice("synth", str(inp), "-o", str(out), "--workers", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert f"{n}/{n} ok" in r.stderr
    lines = manifest_lines(out)
    assert [e["id"] for e in lines] == [str(i) for i in range(1, n + 1)]
    assert all(e["status"] == "ok" for e in lines)
    for e in lines:
        assert_decodes(out / e["file"])
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{i}.wav" for i in range(1, n + 1)] + ["manifest.jsonl"])
