"""Microphone and Speaker through real PulseAudio virtual devices (null sink + monitor)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voice.audio.io import Microphone, Speaker, list_devices, resolve_device
from voice.errors import DeviceError

pytestmark = pytest.mark.audio
SR = 16000
ROOT = Path(__file__).resolve().parent.parent


def tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    return (level * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def tone_span(audio: np.ndarray, level: float = 0.1) -> tuple[int, int, int]:
    """First and last sample (10 ms resolution) where the recording is louder than ``level`` RMS,
    and how many samples in all were that loud (an underrun under load leaves a gap)."""
    rms = np.array([np.sqrt(np.mean(audio[i : i + 160] ** 2)) for i in range(0, audio.shape[0] - 160, 160)])
    on = np.flatnonzero(rms > level)
    assert on.size, "nothing was heard"
    return int(on[0] * 160), int((on[-1] + 1) * 160), int(on.size * 160)


class Recorder:
    """Reads a Microphone in a task; ``frames`` grows in stream order."""

    def __init__(self, mic: Microphone) -> None:
        self.mic = mic
        self.frames: list[np.ndarray] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for f in self.mic:
            self.frames.append(f)

    @property
    def samples(self) -> int:
        return sum(f.shape[0] for f in self.frames)

    async def wait_samples(self, n: int) -> None:
        deadline = time.monotonic() + 10.0
        while self.samples < n:
            assert time.monotonic() < deadline, f"microphone delivered {self.samples}/{n} samples"
            await asyncio.sleep(0.01)

    async def stop(self) -> np.ndarray:
        self.mic.close()
        await asyncio.wait_for(self.task, 5)
        return np.concatenate(self.frames)


def test_list_devices_shows_the_virtual_devices(pulse_devices):
    names = [d.name for d in list_devices()]
    assert pulse_devices.input_device in names
    dev = next(d for d in list_devices() if d.name == "pulse")
    assert dev.max_input_channels > 0 and dev.max_output_channels > 0
    assert resolve_device("PULS", "input") == dev.index  # substring, any case
    assert resolve_device(str(dev.index), "output") == dev.index


async def test_tone_round_trip_through_speaker_and_microphone(pulse_devices):
    sent = tone(1.0)
    firsts: list[float] = []
    async with Microphone(pulse_devices.input_device, frame_samples=512) as mic:
        rec = Recorder(mic)
        await rec.wait_samples(5 * 512)
        async with Speaker(pulse_devices.output_device, sample_rate=SR,
                           on_first_sample=lambda: firsts.append(time.monotonic())) as spk:
            for i in range(0, sent.shape[0], 1600):  # 100 ms chunks, like TTS would
                await spk.write(sent[i : i + 1600])
            await spk.drain()
            assert spk.played_samples == sent.shape[0]
            assert spk.buffered_s == 0
        await asyncio.sleep(0.3)
        got = await rec.stop()
    assert len(firsts) == 1
    assert all(f.shape == (512,) and f.dtype == np.float32 for f in rec.frames)
    a, b, loud = tone_span(got)
    assert loud / SR == pytest.approx(1.0, abs=0.05)
    seg = got[a + 1600 : b - 1600]
    assert np.sqrt(np.mean(seg**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.shape[0])))
    assert np.fft.rfftfreq(seg.shape[0], 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=3)
    assert mic.dropped == 0


async def test_clear_stops_output_within_150ms_and_counts_played_samples(pulse_devices):
    sent = tone(4.0)
    async with Microphone(pulse_devices.input_device) as mic:
        rec = Recorder(mic)
        await rec.wait_samples(5 * 512)
        async with Speaker(pulse_devices.output_device, sample_rate=SR, max_buffer_s=2.0) as spk:
            t0 = time.monotonic()
            await spk.write(sent)  # 4 s into a 2 s buffer: returns once 2 s are left
            waited = time.monotonic() - t0
            await asyncio.sleep(0.5)
            heard_at_clear = rec.samples  # monitor position when clear() is called
            dropped = spk.clear()
            played = spk.played_samples
            await asyncio.sleep(0.5)
            assert spk.played_samples - played <= 0.02 * SR  # at most the block in flight
            await asyncio.sleep(0.5)
        got = await rec.stop()
    assert 1.5 < waited < 3.0, f"write() backpressure waited {waited:.2f}s"
    assert dropped + played == pytest.approx(sent.shape[0], abs=0.02 * SR)
    _, b, loud = tone_span(got)
    # What was handed to the device is what was heard, nothing buffered beyond it played ...
    assert loud / SR == pytest.approx(played / SR, abs=0.06)
    # ... and the tone stopped soon after clear(): monitor samples between clear() and silence.
    stop_latency = (b - heard_at_clear) / SR
    print(f"clear() -> silence: {stop_latency * 1000:.0f} ms (monitor clock)")
    assert stop_latency < 0.15


async def test_microphone_drops_oldest_when_the_consumer_stalls(pulse_devices):
    async with Microphone(pulse_devices.input_device, frame_samples=512, max_queued=4) as mic:
        first = await mic.read()
        await asyncio.sleep(1.0)  # ~31 frames arrive while nobody reads
        frames = [await mic.read() for _ in range(4)]
        assert first.shape == (512,)
        assert mic.dropped >= 20
        assert all(f.shape == (512,) for f in frames)


async def test_close_ends_iteration(pulse_devices):
    mic = Microphone(pulse_devices.input_device)
    async with mic:
        await mic.read()
    n = 0
    async for _ in mic:  # what was queued, then the end
        n += 1
    assert n <= mic.max_queued


async def test_unknown_devices_are_clear_errors(pulse_devices):
    with pytest.raises(DeviceError, match="no microphone.*matches 'no-such-mic'.*available: .*pulse"):
        async with Microphone("no-such-mic"):
            pass
    with pytest.raises(DeviceError, match="no audio device with index 999"):
        async with Speaker(999):
            pass


def test_no_microphone_at_all_is_one_line_error():
    """A machine where PortAudio finds no device (here: no sound server reachable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "VOICE_"))}
    env["PULSE_SERVER"] = "unix:/nonexistent/voice-test-socket"
    code = ("import asyncio\nfrom voice.audio.io import Microphone\n"
            "async def main():\n    async with Microphone():\n        pass\nasyncio.run(main())\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DeviceError: no microphone (input device) found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "voice", "listen"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("ALSA lib")]
    assert lines == [lines[0]] and lines[0].startswith("voice: error: no microphone")
    assert "voice transcribe FILE" in lines[0]
    assert "Traceback" not in r.stderr


async def test_speaker_wakes_waiters_when_playback_reaches_a_sample_and_on_clear(pulse_devices):
    async with Microphone(pulse_devices.input_device) as mic:  # a reader keeps the null sink running
        rec = Recorder(mic)
        await rec.wait_samples(5 * 512)
        async with Speaker(pulse_devices.output_device, sample_rate=SR, max_buffer_s=5.0) as spk:
            t0 = time.monotonic()
            await spk.write(tone(1.0))
            played = await asyncio.wait_for(spk.wait_played(SR // 2), 5)
            took = time.monotonic() - t0
            waiter = asyncio.create_task(spk.wait_played(10 * SR))  # beyond anything written
            await asyncio.sleep(0.1)
            pending = not waiter.done()
            t1 = time.monotonic()
            spk.clear()
            woken = await asyncio.wait_for(waiter, 1)
            wake_s = time.monotonic() - t1
        await rec.stop()
    assert SR // 2 <= played < SR  # woken near the half, not at the end
    assert 0.4 < took < 0.9, took
    assert pending and woken < 10 * SR  # a clear wakes it at once
    assert wake_s < 0.1, wake_s
