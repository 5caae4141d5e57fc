"""The input side of a conversation: microphone frames in, typed VAD events out.

:class:`Hearing` owns what stands between the microphone and the turn lifecycle: the echo
canceller (near end here, far end fed by :meth:`Hearing.far`), the residual echo gate, the
microphone gate (muted, no barge-in, or no echo protection while the assistant is audible),
push-to-talk buffering and the endpointer (Silero VAD + state machine). It starts no tasks and
knows no turn ids: the caller passes the facts it needs (is the assistant audible, is it
answering) with each frame and gets back :data:`HearingEvent` values.

Cost on the event loop: Silero runs inside :meth:`Hearing.hear`, synchronously, one
single-threaded ONNX call per 32 ms frame. Budget: 0.5 ms of CPU per frame on average (1.6 % of
the loop's core per session). Measured by ``scripts/bench_vad.py`` (2-core EPYC VM, load 8):
0.20 ms mean, 0.43 ms p95, so 39 sessions keep hearing under a quarter of the loop's core.
Cheaper than a thread hand-off per frame; past that many sessions, run it in a thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.audio.vad import VadEvent
from voice.pipeline.echo import ResidualEchoGate

if TYPE_CHECKING:
    from voice.config import PipelineConfig, VadConfig


class VadEndpointer(Protocol):
    """What hearing needs of an endpointer (:class:`voice.audio.vad.Endpointer` is one)."""

    def process(self, chunk: np.ndarray) -> list[VadEvent]: ...

    def flush(self) -> list[VadEvent]: ...

    def reset(self) -> None: ...

    def set_min_speech_ms(self, ms: float) -> None: ...

    def shorten_hangover(self, ms: float, silence_t: float) -> bool: ...


class EchoCancel(Protocol):
    """What hearing needs of an echo canceller (:class:`voice.pipeline.echo.EchoCanceller`)."""

    def far(self, audio: np.ndarray) -> None: ...

    def played(self, n: int) -> None: ...

    def near(self, frame: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class InputReset:
    """The microphone reopened after being gated: an utterance in progress was dropped."""


HearingEvent = VadEvent | InputReset


@dataclass(frozen=True)
class OutputFacts:
    """What hearing must know of the output side for one frame."""

    #: The assistant's voice may be in the microphone (playing, or just stopped).
    audible: bool = False
    #: A response is in progress.
    answering: bool = False
    #: The user may interrupt it (barge-in).
    barge_in: bool = True
    #: The microphone is closed on purpose (muted, conversation closed).
    closed: bool = False
    #: The sink's ``played_samples`` and rate (for the echo canceller's far end).
    played: int = 0
    sink_rate: int = SAMPLE_RATE


#: How far before the VAD's speech end the last word may have ended (Silero's probability lags
#: the voice: on Piper speech its first silent frame came ~50 ms after the energy fell).
END_LOOKBACK_S = 0.128
#: A 10 ms window is voiced when this loud relative to the utterance's loudest window.
END_REL_DB = -30.0


def last_voiced(audio: np.ndarray, t: float, *, audio_end: float) -> float:
    """Where the voice ended, in stream time: the end of the last 10 ms window of ``audio`` (an
    utterance whose last sample is at ``audio_end``) within :data:`END_LOOKBACK_S` before the
    VAD's speech end ``t`` that is at most :data:`END_REL_DB` below its loudest window; ``t``
    itself when there is no such audio."""
    w = SAMPLE_RATE // 100
    n = audio.shape[0] // w
    if n == 0:
        return t
    x = np.asarray(audio[audio.shape[0] - n * w:], dtype=np.float64).reshape(n, w)
    level = np.sqrt(np.mean(x * x, axis=1))
    ends = audio_end - (n - 1 - np.arange(n)) * (w / SAMPLE_RATE)  # stream time each window ends
    near = (ends <= t + 1e-9) & (ends > t - END_LOOKBACK_S)
    if not near.any() or level.max() <= 0:
        return t
    loud = np.flatnonzero(near & (level >= level.max() * 10 ** (END_REL_DB / 20)))
    return float(ends[loud[-1]]) if loud.size else t - END_LOOKBACK_S


def to_rate(audio: np.ndarray, sr: int, to_sr: int) -> np.ndarray:
    """``audio`` as float32 mono at ``to_sr`` (the one converter between pipeline edges)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sr == to_sr or audio.size == 0:
        return audio
    from voice.audio.resample import resample

    return resample(audio, sr, to_sr)


class Hearing:
    """Frames in (float32 16 kHz mono, any length), :data:`HearingEvent` out.

    ``manual`` (push-to-talk, a server session without turn detection): audio is buffered, at
    most ``vad.max_speech_s`` of it, until :meth:`take`; no VAD runs. ``echo_path = False``
    (a recording): the input cannot hear the output, so it is never gated.
    """

    def __init__(self, pcfg: PipelineConfig, vad: VadConfig, *, endpointer: VadEndpointer | None = None,
                 echo: EchoCancel | None = None, manual: bool = False) -> None:
        self.vad = vad
        self.echo = echo
        self.manual = manual
        self.echo_path = True
        self._headphones = pcfg.headphones
        self._suppress_db = pcfg.echo_suppress_db
        self._barge_in_min_ms = pcfg.barge_in_min_speech_ms
        self._endpointer = endpointer
        self._gate: ResidualEchoGate | None = None
        self._gated = False
        self._echo_pos = 0
        self._buf: list[np.ndarray] = []
        self._buf_samples = 0
        self._fed = 0  # samples given to the endpointer since its clock started (its stream time)
        self._fed_at = 0.0  # time.monotonic() when the last of them arrived

    @property
    def endpointer(self) -> VadEndpointer:
        if self._endpointer is None:
            from voice.audio.vad import Endpointer

            self._endpointer = Endpointer(self.vad)
        return self._endpointer

    def set_endpointer(self, endpointer: VadEndpointer | None, vad: VadConfig | None = None) -> None:
        """Use ``endpointer`` (None: a new one made from ``vad`` on first use) from the next frame."""
        self._endpointer = endpointer
        self._fed = 0
        if vad is not None:
            self.vad = vad

    def set_manual(self, manual: bool) -> None:
        self.manual = manual

    def hear(self, frame: np.ndarray, out: OutputFacts, now: float | None = None) -> list[HearingEvent]:
        """One chunk of microphone audio, its last sample heard at ``now`` (default: this call);
        the events it causes (often none). Never blocks on I/O."""
        audio = np.asarray(frame, dtype=np.float32).reshape(-1)
        if self.echo is not None:
            audio = self._cancel_echo(audio, out)
        if not self._mic_open(out):
            self._gated = True
            return []
        events: list[HearingEvent] = []
        if self._gated:
            self._gated = False
            self.reset()
            events.append(InputReset())
        if self.manual:
            self._buffer(audio)
            return events
        self.endpointer.set_min_speech_ms(self._barge_in_min_ms if out.answering else self.vad.min_speech_ms)
        self._fed += audio.shape[0]
        self._fed_at = time.monotonic() if now is None else now
        events += self.endpointer.process(audio)
        return events

    def shorten_hangover(self, ms: float, silence_t: float) -> bool:
        """End the silence that began at stream time ``silence_t`` after ``ms`` of it (an
        end-of-turn model said the turn is complete); False when that silence is already over."""
        if self.manual or self._endpointer is None:
            return False
        return self._endpointer.shorten_hangover(ms, silence_t)

    def wall_time(self, t: float) -> float:
        """The ``time.monotonic()`` at which stream time ``t`` (a VAD event's ``t``) was heard:
        the last chunk's arrival minus the audio that came after ``t`` in it. Arrival is the best
        clock a frame has (a device or socket may have held it a little longer)."""
        if self._fed == 0:  # nothing heard on this clock (an event scripted by a test)
            return time.monotonic()
        return self._fed_at - max(0.0, self._fed / SAMPLE_RATE - t)

    def _cancel_echo(self, audio: np.ndarray, out: OutputFacts) -> np.ndarray:
        assert self.echo is not None
        if out.played > self._echo_pos:
            self.echo.played(round((out.played - self._echo_pos) * SAMPLE_RATE / out.sink_rate))
        self._echo_pos = out.played
        cleaned = self.echo.near(audio)
        if self._suppress_db <= 0:
            return cleaned
        if self._gate is None:
            self._gate = ResidualEchoGate(self._suppress_db)
        return self._gate.process(audio, cleaned, out.audible)

    def _mic_open(self, out: OutputFacts) -> bool:
        if out.closed or (out.answering and not out.barge_in):
            return False
        if self._headphones or self.echo is not None or not self.echo_path:
            return True
        # No echo protection: the speaker's sound would come back as "user speech".
        return not out.audible

    def _buffer(self, audio: np.ndarray) -> None:
        self._buf.append(audio)
        self._buf_samples += audio.shape[0]
        limit = int(self.vad.max_speech_s * SAMPLE_RATE)
        while self._buf_samples > limit and len(self._buf) > 1:
            self._buf_samples -= self._buf.pop(0).shape[0]

    def far(self, audio: np.ndarray, sample_rate: int) -> None:
        """The assistant's audio as written to the sink (the echo canceller's far end)."""
        if self.echo is not None:
            self.echo.far(to_rate(audio, sample_rate, SAMPLE_RATE))

    def output_cleared(self, played: int) -> None:
        """The sink dropped what it had not played (barge-in): so must the far end."""
        if self.echo is not None:
            self.echo.reset()
            self._echo_pos = played

    def take(self) -> np.ndarray:
        """Manual mode: the audio buffered since the last take/clear (then forgotten)."""
        audio = np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)
        self.clear()
        return audio

    def clear(self) -> None:
        """Drop buffered audio (manual mode)."""
        self._buf = []
        self._buf_samples = 0

    def reset(self) -> None:
        """Forget an utterance in progress (fresh VAD state and stream clock)."""
        if self._endpointer is not None:
            self._endpointer.reset()
        self._fed = 0

    def flush(self) -> list[HearingEvent]:
        """End of input: close an open utterance."""
        if self.manual or self._endpointer is None:
            return []
        return list(self._endpointer.flush())
