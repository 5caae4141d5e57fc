"""Issue 2 done-when: real speech into the PulseAudio virtual microphone -> VAD -> Whisper.

The clip is played on the null sink; the Microphone records its monitor. The truth is taken
without the VAD: the clip's position in the recording (cross-correlation with the clip) plus
the clip's own energy-based speech bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

import numpy as np
import pytest

from voice.audio.files import load_audio
from voice.audio.io import Microphone
from voice.audio.vad import Endpointer, SilenceStarted, SpeechEnded, SpeechStarted
from voice.config import VadConfig
from voice.textnorm import corpus_wer

pytestmark = [pytest.mark.audio, pytest.mark.slow]
SR = 16000
ROOT = Path(__file__).resolve().parent.parent
CLIP = "ps_librivox_0890.wav"  # one phrase, 5.3 s: "unless to be rather cold hearted ..."


def energy_bounds(audio: np.ndarray, rel: float = 0.05) -> tuple[float, float]:
    """First and last 10 ms hop whose 20 ms RMS exceeds ``rel`` of the loudest (seconds)."""
    rms = np.array([np.sqrt(np.mean(audio[i : i + 320] ** 2)) for i in range(0, audio.shape[0] - 320, 160)])
    on = np.flatnonzero(rms > rms.max() * rel)
    return on[0] * 0.01, on[-1] * 0.01 + 0.02


def locate(recording: np.ndarray, clip: np.ndarray) -> tuple[int, float]:
    """Sample offset of ``clip`` in ``recording`` and the normalised correlation there."""
    n = 1 << int(np.ceil(np.log2(recording.shape[0] + clip.shape[0])))
    xc = np.fft.irfft(np.fft.rfft(recording, n) * np.conj(np.fft.rfft(clip, n)), n)[: recording.shape[0]]
    k = int(np.argmax(xc))
    seg = recording[k : k + clip.shape[0]]
    corr = float(np.dot(seg, clip[: seg.shape[0]]) / (np.linalg.norm(seg) * np.linalg.norm(clip) + 1e-9))
    return k, corr


@pytest.fixture
def clip_path(speech_clips) -> tuple[str, str]:
    path = next(p for p in speech_clips if p.endswith(CLIP))
    return path, speech_clips[path]


async def test_speech_into_virtual_mic_one_utterance_on_time_and_transcribed(
    pulse_devices, clip_path, tiny_transcriber
):
    path, reference = clip_path
    clip = load_audio(path)
    endpointer = Endpointer(VadConfig())
    events: list[object] = []
    recorded: list[np.ndarray] = []

    lead_in, ended = asyncio.Event(), asyncio.Event()
    async with Microphone(pulse_devices.input_device) as mic:

        async def consume() -> None:
            async for frame in mic:
                recorded.append(frame)
                new = endpointer.process(frame)
                events.extend(new)
                if len(recorded) >= 30:  # ~1 s of room silence first
                    lead_in.set()
                if any(isinstance(e, SpeechEnded) for e in new):
                    ended.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(lead_in.wait(), 10)
        await pulse_devices.play_into_mic(np.concatenate([clip, np.zeros(SR, np.float32)]), SR)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), 5)
        await asyncio.sleep(0.3)
        mic.close()
        await task
    assert mic.dropped == 0

    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == 1 and len(ends) == 1, events
    (end,) = ends
    assert any(isinstance(e, SilenceStarted) and e.t == end.t for e in events)

    recording = np.concatenate(recorded)
    offset, corr = locate(recording, clip)
    assert corr > 0.9, f"the microphone did not hear the clip (correlation {corr:.2f})"
    on, off = energy_bounds(clip)
    truth_start, truth_end = offset / SR + on, offset / SR + off
    print(f"\nVAD {end.start:.2f}-{end.t:.2f} s, truth {truth_start:.2f}-{truth_end:.2f} s")
    assert abs(end.start - truth_start) <= 0.3
    assert abs(end.t - truth_end) <= 0.3

    result = await tiny_transcriber.transcribe(end.audio, live=True)
    wer = corpus_wer([(reference, result.text)])
    print(f"ASR: {result.text!r} (WER {wer:.2f})")
    assert wer <= 0.2


def test_voice_listen_prints_the_utterance(pulse_devices, clip_path):
    """`voice listen` as a user runs it, hearing the virtual microphone."""
    path, reference = clip_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    env["VOICE_ASR__DEVICE"] = "cpu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "voice", "listen", "--times", "--input-device", pulse_devices.input_device],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        deadline = time.monotonic() + 120
        while True:  # wait until the model is loaded and the microphone open
            line = proc.stderr.readline()
            assert line or proc.poll() is None, f"voice listen exited {proc.returncode}"
            if "listening on" in line:
                break
            assert time.monotonic() < deadline
        player = pulse_devices.start_player(path)
        player.wait(timeout=30)
        with ThreadPoolExecutor(1) as pool:  # the printed utterance, or fail after 30 s
            reader = pool.submit(proc.stdout.readline)
            try:
                out = reader.result(timeout=30)
            except FuturesTimeout:
                proc.terminate()
                raise AssertionError("voice listen printed nothing") from None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert out.startswith("[")
    times, text = out.split("]", 1)
    start, end = (float(x) for x in times.strip("[ ").split("-"))
    assert 0 < start < end and end - start == pytest.approx(4.8, abs=0.6)
    assert corpus_wer([(reference, text.strip())]) <= 0.2
