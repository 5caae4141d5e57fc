"""voice chat --record's recorder: two channels on one clock, bounded, atomic."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.pipeline.io import FileSink
from voice.pipeline.record import Recorder, RecordingSink

SR = 16000


def test_channels_are_placed_by_wall_clock(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", window_s=0.5)
    frame = np.full(512, 0.5, np.float32)
    rec.left(frame, end=10.032)  # t0 = 10.0 (the first frame's start)
    rec.right(np.full(2205, -0.25, np.float32), 22050, start=10.5)  # 0.1 s at 22.05 kHz
    for k in range(1, 60):  # about 1.9 s of silence heard after it, spilled to disk as it ages
        rec.left(np.zeros(512, np.float32), end=10.032 + 0.032 * k + 0.032)
    rec.close()
    data, sr = sf.read(tmp_path / "r.wav", dtype="float32")
    assert sr == SR and data.shape[1] == 2
    assert data.shape[0] == pytest.approx(1.952 * SR, abs=2)
    left, right = np.nonzero(data[:, 0])[0], np.nonzero(data[:, 1])[0]
    assert (left[0], left[-1]) == (0, 511)
    assert right[0] == pytest.approx(0.5 * SR, abs=1) and right.size == pytest.approx(0.1 * SR, abs=2)
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was put in place


def test_cut_right_drops_what_was_not_played(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav")
    rec.left(np.zeros(160, np.float32), end=0.01)
    rec.right(np.ones(SR, np.float32), SR, start=0.01)
    rec.cut_right(0.51)  # barge-in half way
    rec.close()
    data, _ = sf.read(tmp_path / "r.wav", dtype="float32")
    assert np.count_nonzero(data[:, 1]) == pytest.approx(0.5 * SR, abs=2)


def test_longer_than_the_cap_keeps_its_start(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", max_s=1.0, window_s=0.2)
    for k in range(100):  # 3.2 s offered, 1 s kept
        rec.left(np.full(512, 0.1, np.float32), end=0.032 * (k + 1))
    rec.right(np.ones(SR, np.float32), SR, start=2.0)  # past the cap: not recorded
    assert rec.truncated
    rec.close()
    data, _ = sf.read(tmp_path / "r.wav", dtype="float32")
    assert data.shape[0] == SR and not data[:, 1].any()


def test_nothing_recorded_is_a_valid_empty_file(tmp_path: Path) -> None:
    Recorder(tmp_path / "r.wav").close()
    data, sr = sf.read(tmp_path / "r.wav", dtype="float32")
    assert sr == SR and data.shape[0] <= 1


async def test_recording_sink_places_chunks_when_they_will_play(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav")
    sink = RecordingSink(FileSink(None, SR, realtime=True), rec)
    rec.left(np.zeros(160, np.float32), end=time.monotonic())  # t0 on this clock
    await sink.write(np.ones(8000, np.float32))
    await sink.write(np.ones(8000, np.float32))  # queued behind the first: starts 0.5 s later
    assert sink.played_samples < 16000
    sink.clear()
    rec.close()
    data, _ = sf.read(tmp_path / "r.wav", dtype="float32")
    played = np.count_nonzero(data[:, 1])
    assert 0 < played < 8000  # the cleared rest is not in the recording
