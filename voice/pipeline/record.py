"""``voice chat --record``: one stereo WAV on the wall clock, left what the conversation heard
(the microphone, or the ``--input`` file as it was fed), right what the assistant played, so
latency and barge-in can be checked by ear or with sox.

Both channels are placed by ``time.monotonic()``: a microphone frame ends when it reached the
pipeline (the clock :meth:`voice.pipeline.hearing.Hearing.wall_time` uses), an answer chunk
starts when the sink will play it (now plus what the sink holds unplayed). Audio streams to a
temp file beside the target as it ages past :data:`WINDOW_S` (memory stays that window plus the
audio a sink holds ahead), and the file replaces the target on :meth:`Recorder.close`. A
session longer than ``max_s`` (:data:`MAX_S`, 4 hours, 0.9 GB of 16 kHz 16-bit stereo; WAV
itself stops at 4 GiB) keeps its first ``max_s``: the rest is not recorded (one warning).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.pipeline.hearing import to_rate
from voice.pipeline.io import AudioSink, wait_played

log = logging.getLogger(__name__)

#: Longest recording kept, seconds.
MAX_S = 4 * 3600.0
#: Audio younger than this stays in memory (a cleared sink may still cut it); older goes to disk.
WINDOW_S = 2.0


class Recorder:
    """Stereo 16 kHz recording on one clock; ``left``/``right`` place audio, ``close`` writes."""

    def __init__(self, path: str | Path, *, rate: int = SAMPLE_RATE, max_s: float = MAX_S,
                 window_s: float = WINDOW_S) -> None:
        self.path = Path(path)
        self.rate = rate
        self.max_samples = int(max_s * rate)
        self.window = int(window_s * rate)
        self.t0: float | None = None
        self.truncated = False
        self._buf = np.zeros((0, 2), np.float32)  # samples from self._base on
        self._base = 0  # first sample not yet on disk
        self._end = 0  # one past the last sample placed
        self._files: contextlib.ExitStack | None = None
        self._snd: Any = None

    @property
    def samples(self) -> int:
        """Length of the recording so far (samples per channel)."""
        return self._end

    def _index(self, t: float) -> int:
        if self.t0 is None:
            self.t0 = t
        return round((t - self.t0) * self.rate)

    def _place(self, channel: int, audio: np.ndarray, start: int) -> None:
        if start < self._base:  # already on disk: keep the part still to come
            audio, start = audio[self._base - start:], self._base
        stop = min(start + audio.shape[0], self.max_samples)
        if stop <= start:
            if audio.size and not self.truncated:
                self.truncated = True
                log.warning("recording %s reached its %.0f min cap; the rest is not recorded",
                            self.path, self.max_samples / self.rate / 60)
            return
        need = stop - self._base
        if need > self._buf.shape[0]:
            grown = np.zeros((max(need, 2 * self._buf.shape[0]), 2), np.float32)
            grown[: self._buf.shape[0]] = self._buf
            self._buf = grown
        self._buf[start - self._base: stop - self._base, channel] = audio[: stop - start]
        self._end = max(self._end, stop)

    def left(self, audio: np.ndarray, end: float, sample_rate: int = SAMPLE_RATE) -> None:
        """What was heard, its last sample at ``end`` (monotonic seconds)."""
        a = to_rate(audio, sample_rate, self.rate)
        start = self._index(end - a.shape[0] / self.rate)
        self._place(0, a, start)
        upto = start + a.shape[0] - self.window
        if upto - self._base >= self.rate:  # a second at a time: one small write, on the loop
            self._spill(upto)

    def right(self, audio: np.ndarray, sample_rate: int, start: float) -> None:
        """What the assistant plays, its first sample at ``start``."""
        self._place(1, to_rate(audio, sample_rate, self.rate), self._index(start))

    def cut_right(self, at: float) -> None:
        """The sink dropped what it had not played: so does the right channel from ``at`` on."""
        i = max(self._index(at), self._base) - self._base
        self._buf[i:, 1] = 0.0

    def _spill(self, upto: int) -> None:
        """Write the samples before ``upto`` to the temp file."""
        n = min(upto, self._end) - self._base
        if n <= 0:
            return
        self._open().write(np.clip(self._buf[:n], -1.0, 1.0))
        self._buf = self._buf[n:].copy()
        self._base += n

    def _open(self) -> Any:
        if self._snd is None:
            import soundfile as sf

            from voice.fsutil import atomic_write

            self._files = contextlib.ExitStack()
            fh = self._files.enter_context(atomic_write(self.path))
            self._snd = self._files.enter_context(
                sf.SoundFile(fh, "w", samplerate=self.rate, channels=2, format="WAV", subtype="PCM_16"))
        return self._snd

    def close(self) -> Path:
        """Write what is left and put the file in place (atomic; a valid empty WAV when nothing
        was recorded)."""
        self._spill(self._end)
        self._open()
        assert self._files is not None
        self._files.close()
        self._files = self._snd = None
        return self.path


class RecordingSink:
    """An :class:`AudioSink` that passes audio on to ``sink`` and records it as it will play."""

    def __init__(self, sink: AudioSink, recorder: Recorder) -> None:
        self.sink = sink
        self.recorder = recorder
        self.sample_rate = sink.sample_rate
        self._written = sink.played_samples

    @property
    def played_samples(self) -> int:
        return self.sink.played_samples

    async def wait_played(self, samples: int) -> int:
        return await wait_played(self.sink, samples)

    async def write(self, chunk: np.ndarray) -> None:
        audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
        queued = max(0, self._written - self.sink.played_samples)
        self.recorder.right(audio, self.sample_rate, time.monotonic() + queued / self.sample_rate)
        self._written += audio.shape[0]
        await self.sink.write(audio)

    def clear(self) -> object:
        dropped = self.sink.clear()
        self._written = self.sink.played_samples
        self.recorder.cut_right(time.monotonic())
        return dropped

    def mark_turn(self) -> None:
        mark = getattr(self.sink, "mark_turn", None)
        if mark is not None:
            mark()
