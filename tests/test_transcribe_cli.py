"""``voice transcribe`` end to end through the real command (a subprocess)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import speech_dir
from tests.helpers.asr import make_bad_inputs, run_voice
from voice.textnorm import corpus_wer, normalize

pytestmark = pytest.mark.slow

JFK = str(speech_dir() / "jfk.wav")
GO = str(speech_dir() / "ps_goforward.wav")


def _threads() -> int:
    return len(os.sched_getaffinity(0))


def _rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("voice: error: ") and "Traceback" not in stderr
    return lines[0]


def test_corpus_wer_is_no_worse_than_faster_whisper_directly(speech_clips: dict[str, str], tmp_path: Path) -> None:
    """Done-when: every clip through `voice transcribe` vs faster-whisper, same model and beam."""
    clips = sorted(speech_clips)
    assert len(clips) >= 14
    proc = run_voice("transcribe", "--format", "json", "--device", "cpu", "--beam", "5", *clips,
                     env={"XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert [r["file"] for r in rows] == clips
    for r in rows:
        assert set(r) >= {"file", "text", "segments", "language", "model", "device", "seconds"}
        assert r["model"] == "whisper-tiny.en" and r["device"] == "cpu" and r["language"] == "en"
        assert r["seconds"] > 0 and all({"start", "end", "text"} <= set(s) for s in r["segments"])
    ours = corpus_wer((speech_clips[r["file"]], r["text"]) for r in rows)

    from faster_whisper import WhisperModel

    from voice.config import load_config
    from voice.models import registry_for

    path = registry_for(load_config(environ={})).resolve("whisper-tiny.en").path
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=_threads())
    direct = []
    for clip in clips:
        segments, _ = model.transcribe(clip, beam_size=5)
        direct.append((speech_clips[clip], "".join(s.text for s in segments)))
    baseline = corpus_wer(direct)
    print(f"corpus WER: voice transcribe {ours:.4f}, faster-whisper directly {baseline:.4f}")
    assert ours <= baseline + 1e-9
    assert ours < 0.3


def test_bad_inputs_each_get_one_line_and_the_rest_is_transcribed(tmp_path: Path) -> None:
    bad = make_bad_inputs(tmp_path / "bad")
    args = [JFK, str(bad["missing"]), str(bad["directory"]), str(bad["non_audio"]), str(bad["fake_wav"]),
            str(bad["fake_mp3"]), str(bad["empty"]), str(bad["silence"]), GO]
    proc = run_voice("transcribe", "--format", "json", "--device", "cpu", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 6, proc.stderr  # one line each: no decoder notes
    expected = {"missing": "no such file", "directory": "directory", "non_audio": "not an audio file",
                "fake_wav": "not an audio file", "fake_mp3": "not an audio file", "empty": "empty"}
    for line, (kind, words) in zip(errors, expected.items(), strict=True):
        assert line.startswith(f"voice: error: {bad[kind]}") and words in line, line
    rows = _rows(proc.stdout)
    assert [r["file"] for r in rows] == [JFK, str(bad["silence"]), GO]
    assert "ask not what your country" in normalize(rows[0]["text"])
    assert rows[1]["text"] == "" and rows[1]["segments"] == [] and rows[1]["seconds"] == 2.0
    assert normalize(rows[2]["text"]) == "go forward ten meters"


def test_silence_alone_is_not_an_error(tmp_path: Path) -> None:
    silence = make_bad_inputs(tmp_path)["silence"]
    proc = run_voice("transcribe", "--device", "cpu", str(silence))
    assert proc.returncode == 0 and proc.stdout == "\n" and proc.stderr == ""


def test_faster_whisper_model_names_work_and_a_typo_gets_a_suggestion() -> None:
    proc = run_voice("transcribe", "--device", "cpu", "--model", "tiny.en", "--format", "json", GO)
    assert proc.returncode == 0, proc.stderr
    row = _rows(proc.stdout)[0]
    assert row["model"] == "whisper-tiny.en" and normalize(row["text"]) == "go forward ten meters"
    proc = run_voice("transcribe", "--model", "tiny.eng", GO)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "unknown model 'tiny.eng': did you mean tiny.en" in line
    assert proc.stdout == ""


def test_unknown_model_is_one_line(tmp_path: Path) -> None:
    proc = run_voice("transcribe", "--model", "whisper-nope", JFK)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "unknown model 'whisper-nope'" in line and "whisper-base" in line
    assert proc.stdout == ""
    proc = run_voice("transcribe", "--model", str(tmp_path), JFK)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 3 and "not a faster-whisper model folder" in line


@pytest.mark.parametrize(
    "content,words",
    [("[asr\nmodel = 1", "not valid TOML"),
     ('[asr]\nmodle = "whisper-base"\n', "unknown key 'asr.modle'"),
     ('[asr]\nfile_beam_size = "five"\n', "asr.file_beam_size must be an integer")],
)
def test_broken_config_is_one_line(tmp_path: Path, content: str, words: str) -> None:
    conf = tmp_path / "broken.toml"
    conf.write_text(content)
    proc = run_voice("--config", str(conf), "transcribe", JFK)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and words in line and str(conf) in line, line
    assert proc.stdout == ""


def test_wrong_language_for_english_model_and_bad_beam() -> None:
    proc = run_voice("transcribe", "--language", "de", "--device", "cpu", JFK)
    assert proc.returncode == 2 and "English-only" in _one_error_line(proc.stderr)
    proc = run_voice("transcribe", "--beam", "0", JFK)
    assert proc.returncode == 2 and "--beam" in _one_error_line(proc.stderr)


def test_several_files_load_the_model_once_and_text_format() -> None:
    proc = run_voice("-v", "transcribe", "--device", "cpu", "--beam", "1", JFK, GO, JFK)
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"loaded whisper-tiny\.en on cpu", proc.stderr)) == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split(": ", 1)[0] for ln in lines] == [JFK, GO, JFK]
    assert normalize(lines[1].split(": ", 1)[1]) == "go forward ten meters"


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d{3})"


def _secs(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_srt_and_vtt(tmp_path: Path) -> None:
    srt = run_voice("transcribe", "--format", "srt", "--device", "cpu", JFK)
    assert srt.returncode == 0, srt.stderr
    blocks = srt.stdout.strip().split("\n\n")
    assert len(blocks) >= 1
    texts, last_end = [], 0.0
    for i, block in enumerate(blocks, 1):
        num, times, *text = block.split("\n")
        assert num == str(i)
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", times)
        assert m, times
        start, end = _secs(*m.groups()[:4]), _secs(*m.groups()[4:])
        assert last_end <= start < end <= 11.01
        last_end = end
        texts.append(" ".join(text))
    assert "ask not what your country" in normalize(" ".join(texts))

    vtt = run_voice("transcribe", "--format", "vtt", "--device", "cpu", "-o", str(tmp_path), JFK)
    assert vtt.returncode == 0 and vtt.stdout == "", vtt.stderr
    body = (tmp_path / "jfk.vtt").read_text()
    assert body.startswith("WEBVTT\n\n")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)", body)
    assert len(cues) == len(blocks)
    assert normalize(" ".join(c[2] for c in cues)) == normalize(" ".join(texts))
