"""Voice activity detection: streaming Silero VAD, a sans-I/O state machine, and an endpointer.

Data flow: 16 kHz float32 frames -> :class:`SileroVad` (one speech probability per 32 ms
frame) -> :class:`VadStateMachine` (hysteresis, minimum speech, silence hang-over, maximum
length) -> events. :class:`Endpointer` glues the two and attaches the utterance audio
(with pre-roll) to the events. Times are seconds of stream time (samples fed / 16000).

Event order per utterance::

    SpeechStarted -> (SilenceStarted -> SpeechResumed)* -> SilenceStarted -> SpeechEnded

A cut at ``max_speech_s`` ends with ``SpeechEnded(reason="max_length")`` without a
``SilenceStarted`` and, if speech goes on, a new ``SpeechStarted`` follows at once.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.config import VadConfig

FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at ``t`` (the first speech frame, before pre-roll)."""

    t: float


@dataclass(frozen=True)
class SilenceStarted:
    """Silence began at ``t``; the hang-over runs. ``audio`` is the utterance so far (with pre-roll),
    so a pipeline can start transcribing before :class:`SpeechEnded` arrives."""

    t: float
    audio: np.ndarray = field(default_factory=_empty, repr=False)


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back at ``t`` during the hang-over: the utterance goes on."""

    t: float


@dataclass(frozen=True)
class SpeechEnded:
    """The utterance ``start``..``t`` ended. ``audio`` has pre-roll before and up to as much after.

    ``reason``: "silence" (hang-over elapsed), "max_length" (cut at max_speech_s) or "flush".
    """

    t: float
    audio: np.ndarray = field(default_factory=_empty, repr=False)
    start: float = 0.0
    reason: str = "silence"


VadEvent = SpeechStarted | SilenceStarted | SpeechResumed | SpeechEnded


def silero_model_path() -> Path:
    """The Silero VAD v6 ONNX file that faster-whisper ships."""
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


def load_silero_session(path: str | Path | None = None) -> Any:
    """An onnxruntime session for Silero VAD, single-threaded (it is ~0.2 ms per frame).

    A session is stateless and thread-safe: share one between many :class:`SileroVad`.
    """
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(
        str(path or silero_model_path()), providers=["CPUExecutionProvider"], sess_options=opts
    )


class SileroVad:
    """Streaming Silero VAD: :meth:`prob` of one 512-sample 16 kHz frame, state carried.

    The previous frame's last 64 samples are prepended and the LSTM ``h``/``c`` state is
    carried between calls, which gives exactly the probabilities of faster-whisper's batched
    run over the same audio. The ONNX session loads on first use (or pass one to share it).
    """

    def __init__(self, session: Any | None = None) -> None:
        self._session = session
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame starts a new one."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = load_silero_session()
        return self._session

    def prob(self, frame: np.ndarray) -> float:
        """Speech probability (0..1) of the next 512-sample frame of 16 kHz float32 audio."""
        frame = np.asarray(frame, dtype=np.float32).reshape(-1)
        if frame.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"SileroVad wants {FRAME_SAMPLES}-sample frames, got {frame.shape[0]}")
        x = np.concatenate([self._context, frame])[None, :]
        out, self._h, self._c = self.session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = frame[-CONTEXT_SAMPLES:].copy()
        return float(np.asarray(out).reshape(-1)[0])

    def probs(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of consecutive frames of ``audio`` (a trailing partial frame is dropped)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = audio.shape[0] // FRAME_SAMPLES
        return np.array([self.prob(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)])


class VadState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


class VadStateMachine:
    """Speech start/end from per-frame probabilities, with hysteresis. No I/O, no audio.

    - QUIET -> STARTING when p >= threshold.
    - STARTING -> SPEAKING (``SpeechStarted`` at the first frame) once frames with
      p >= neg_threshold have lasted min_speech_ms; back to QUIET when p < neg_threshold for
      longer than start_gap_ms (shorter dips pause the count).
    - SPEAKING -> STOPPING (``SilenceStarted``) on p < neg_threshold.
    - STOPPING -> SPEAKING (``SpeechResumed``) on p >= threshold; values in between keep the
      hang-over running. After min_silence_ms of it: ``SpeechEnded`` at the silence start.
      :meth:`shorten_hangover` (an end-of-turn model said "complete") shortens this silence's
      hang-over; speech resuming cancels it.
    - An utterance reaching max_speech_s is cut (``SpeechEnded(reason="max_length")``).
    """

    def __init__(self, cfg: VadConfig, frame_ms: float = 32.0) -> None:
        self.cfg = cfg
        self.frame_s = frame_ms / 1000.0
        self.threshold = cfg.threshold
        neg = cfg.neg_threshold if cfg.neg_threshold is not None else cfg.threshold - 0.15
        self.neg_threshold = max(0.01, min(neg, cfg.threshold))
        self.frame_ms = frame_ms
        self.min_speech_frames = max(1, round(cfg.min_speech_ms / frame_ms))
        self.start_gap_frames = max(0, int(cfg.start_gap_ms / frame_ms))
        self.min_silence_frames = max(1, round(cfg.min_silence_ms / frame_ms))
        self.max_frames = max(self.min_speech_frames + 1, int(cfg.max_speech_s * 1000 / frame_ms))
        self.reset()

    def reset(self) -> None:
        self.state = VadState.QUIET
        self.frame = 0  # index of the next frame
        self.start_frame = 0  # first speech frame of the current (or starting) utterance
        self.silence_frame = 0  # first silent frame of the hang-over
        self._run = 0
        self._gap = 0
        self._hangover = self.min_silence_frames  # frames this silence's hang-over lasts

    def shorten_hangover(self, ms: float, silence_t: float) -> bool:
        """End the silence that began at ``silence_t`` after ``ms`` of it (at the next frame if that
        has passed) instead of min_silence_ms. False, and nothing changes, when that silence is over
        (speech resumed, or the utterance ended)."""
        if self.state is not VadState.STOPPING or abs(self.t(self.silence_frame) - silence_t) > self.frame_s / 4:
            return False
        self._hangover = min(self._hangover, max(1, round(ms / self.frame_ms)))
        return True

    def set_min_speech_ms(self, ms: float) -> None:
        """Change how long speech must last to start (takes effect on the next frame)."""
        self.min_speech_frames = max(1, round(ms / self.frame_ms))

    def starting_frames(self) -> int:
        """At most how many frames a start can span (speech plus the dips allowed in it)."""
        return self.min_speech_frames * (1 + self.start_gap_frames)

    @property
    def in_utterance(self) -> bool:
        """True between SpeechStarted and SpeechEnded."""
        return self.state in (VadState.SPEAKING, VadState.STOPPING)

    def t(self, frame: int) -> float:
        return frame * self.frame_s

    def update(self, p: float) -> list[VadEvent]:
        """Feed the next frame's probability; returns the events it causes (often none)."""
        i = self.frame
        self.frame += 1
        st = self.state
        out: list[VadEvent] = []
        if st is VadState.QUIET:
            if p >= self.threshold:
                self.state, self.start_frame, self._run, self._gap = VadState.STARTING, i, 1, 0
                if self._run >= self.min_speech_frames:
                    self.state = VadState.SPEAKING
                    out.append(SpeechStarted(self.t(i)))
        elif st is VadState.STARTING:
            if p < self.neg_threshold:
                self._gap += 1
                if self._gap > self.start_gap_frames:
                    self.state = VadState.QUIET
            else:
                self._gap = 0
                self._run += 1
                if self._run >= self.min_speech_frames:
                    self.state = VadState.SPEAKING
                    out.append(SpeechStarted(self.t(self.start_frame)))
        elif st is VadState.SPEAKING:
            if p < self.neg_threshold:
                self.state, self.silence_frame = VadState.STOPPING, i
                self._hangover = self.min_silence_frames
                out.append(SilenceStarted(self.t(i)))
                if self.min_silence_frames <= 1:
                    return out + self._end(self.silence_frame, "silence")
        else:  # STOPPING
            if p >= self.threshold:
                self.state = VadState.SPEAKING
                out.append(SpeechResumed(self.t(i)))
            elif i + 1 - self.silence_frame >= self._hangover:
                return self._end(self.silence_frame, "silence")
        if self.in_utterance and i + 1 - self.start_frame >= self.max_frames:
            speaking = self.state is VadState.SPEAKING
            end = self.silence_frame if self.state is VadState.STOPPING else i + 1
            out += self._end(end, "max_length")
            if speaking:  # speech goes on: the next utterance starts right here
                self.state, self.start_frame = VadState.SPEAKING, i + 1
                out.append(SpeechStarted(self.t(i + 1)))
        return out

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance (``reason="flush"``)."""
        if not self.in_utterance:
            self.state = VadState.QUIET
            return []
        end = self.silence_frame if self.state is VadState.STOPPING else self.frame
        return self._end(end, "flush")

    def _end(self, end_frame: int, reason: str) -> list[VadEvent]:
        self.state = VadState.QUIET
        return [SpeechEnded(self.t(end_frame), start=self.t(self.start_frame), reason=reason)]


class Endpointer:
    """Audio in, utterances out: Silero VAD + :class:`VadStateMachine` + audio buffering.

    ``process(chunk)`` takes 16 kHz float32 mono audio of any length (it re-frames to
    512 samples) and returns events; :class:`SilenceStarted` and :class:`SpeechEnded` carry
    the utterance audio from ``start - pre_roll`` (and, for SpeechEnded, up to ``pre_roll``
    past the end). Memory is bounded by max_speech_s plus pre-roll.
    """

    def __init__(self, cfg: VadConfig, vad: SileroVad | None = None) -> None:
        self.cfg = cfg
        self.vad = vad or SileroVad()
        self.sm = VadStateMachine(cfg, frame_ms=FRAME_SAMPLES * 1000 / SAMPLE_RATE)
        self.pre_roll_frames = max(0, round(cfg.pre_roll_ms * SAMPLE_RATE / 1000 / FRAME_SAMPLES))
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=self._history_len())
        self._utt: list[np.ndarray] = []
        self._utt_first = 0  # frame index of self._utt[0]
        self._pending = _empty()
        self.last_prob = 0.0

    def _history_len(self) -> int:
        return self.pre_roll_frames + self.sm.starting_frames() + 2

    def set_min_speech_ms(self, ms: float) -> None:
        """How long speech must last to start an utterance, from the next frame on."""
        self.sm.set_min_speech_ms(ms)
        if self._history_len() > (self._history.maxlen or 0):
            self._history = deque(self._history, maxlen=self._history_len())

    def shorten_hangover(self, ms: float, silence_t: float) -> bool:
        """See :meth:`VadStateMachine.shorten_hangover`."""
        return self.sm.shorten_hangover(ms, silence_t)

    def reset(self) -> None:
        """Start a new stream (VAD state, buffers and the clock)."""
        self.vad.reset()
        self.sm.reset()
        self._history.clear()
        self._utt = []
        self._pending = _empty()

    @property
    def speaking(self) -> bool:
        return self.sm.in_utterance

    @property
    def time(self) -> float:
        """Stream time (s) of the audio processed so far."""
        return self.sm.t(self.sm.frame)

    def process(self, chunk: np.ndarray) -> list[VadEvent]:
        audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        n = audio.shape[0] // FRAME_SAMPLES
        self._pending = audio[n * FRAME_SAMPLES :].copy()
        out: list[VadEvent] = []
        for k in range(n):
            out += self._frame(audio[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].copy())
        return out

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance."""
        return [self._attach(ev) for ev in self.sm.flush()]

    def _frame(self, frame: np.ndarray) -> list[VadEvent]:
        idx = self.sm.frame
        if self.sm.in_utterance:
            self._utt.append(frame)
        else:
            self._history.append((idx, frame))
        self.last_prob = self.vad.prob(frame)
        events = self.sm.update(self.last_prob)
        return [self._attach(ev) for ev in events]

    def _attach(self, ev: VadEvent) -> VadEvent:
        if isinstance(ev, SpeechStarted):
            first = max(0, self.sm.start_frame - self.pre_roll_frames)
            self._utt = [f for j, f in self._history if j >= first]
            self._history.clear()
            self._utt_first = self.sm.frame - len(self._utt)
            return ev
        if isinstance(ev, SilenceStarted):
            return SilenceStarted(ev.t, self._audio())
        if isinstance(ev, SpeechEnded):
            end_frame = round(ev.t / self.sm.frame_s)
            last = end_frame + self.pre_roll_frames  # exclusive frame index kept after the end
            frames = [f for j, f in enumerate(self._utt) if self._utt_first + j < last]
            # frames after the end go back to history: they may pre-roll the next utterance
            for j, f in enumerate(self._utt):
                if self._utt_first + j >= end_frame - self.pre_roll_frames:
                    self._history.append((self._utt_first + j, f))
            audio = np.concatenate(frames) if frames else _empty()
            self._utt = []
            return SpeechEnded(ev.t, audio, start=ev.start, reason=ev.reason)
        return ev

    def _audio(self) -> np.ndarray:
        return np.concatenate(self._utt) if self._utt else _empty()
