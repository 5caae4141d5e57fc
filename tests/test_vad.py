"""VAD: the state machine with scripted probabilities, and Silero + Endpointer on real clips."""

from __future__ import annotations

import numpy as np
import pytest

from voice.audio.files import load_audio
from voice.audio.vad import (
    FRAME_SAMPLES,
    Endpointer,
    SilenceStarted,
    SileroVad,
    SpeechEnded,
    SpeechResumed,
    SpeechStarted,
    VadState,
    VadStateMachine,
    load_silero_session,
)
from voice.config import VadConfig

F = 0.032  # seconds per frame


def small_cfg(**kw: float) -> VadConfig:
    base = dict(threshold=0.5, neg_threshold=0.35, min_speech_ms=96, min_silence_ms=160,
                pre_roll_ms=64, max_speech_s=30.0)
    base.update(kw)
    return VadConfig(**base)  # type: ignore[arg-type]


def run(sm: VadStateMachine, probs: list[float]) -> list[tuple[int, object]]:
    """(frame index, event) for every event the probabilities cause."""
    out = []
    for i, p in enumerate(probs):
        out += [(i, ev) for ev in sm.update(p)]
    return out


def kinds(events: list[tuple[int, object]]) -> list[str]:
    return [type(ev).__name__ for _, ev in events]


# --- state machine, scripted probabilities -------------------------------------------------


def test_short_blip_is_not_speech():
    sm = VadStateMachine(small_cfg())
    assert run(sm, [0.1] * 5 + [0.9, 0.9] + [0.1] * 20) == []  # 64 ms < min_speech 96 ms
    assert sm.state is VadState.QUIET


def test_short_dips_while_starting_pause_the_count():
    # words of 2 speech frames with 1-2 frame gaps (min_speech 3 frames, start_gap 96 ms = 3 frames)
    sm = VadStateMachine(small_cfg(start_gap_ms=96))
    ev = run(sm, [0.1] * 3 + [0.9, 0.9, 0.1, 0.1, 0.9, 0.9] + [0.1] * 20)
    assert kinds(ev)[:1] == ["SpeechStarted"]
    assert ev[0][0] == 7 and ev[0][1].t == 3 * F  # confirmed on the third speech frame, dated at the first


def test_a_dip_longer_than_start_gap_starts_over():
    sm = VadStateMachine(small_cfg(start_gap_ms=64))
    assert run(sm, [0.9, 0.9] + [0.1] * 3 + [0.9] + [0.1] * 20) == []
    sm = VadStateMachine(small_cfg(start_gap_ms=0))
    assert run(sm, [0.9, 0.9, 0.1, 0.9] + [0.1] * 20) == []


def test_speech_start_after_min_speech_is_dated_at_first_frame():
    sm = VadStateMachine(small_cfg())
    ev = run(sm, [0.1] * 5 + [0.9] * 10)
    assert kinds(ev) == ["SpeechStarted"]
    frame, started = ev[0]
    assert frame == 7  # third speech frame confirms it
    assert isinstance(started, SpeechStarted)
    assert started.t == pytest.approx(5 * F)


def test_hysteresis_between_thresholds():
    sm = VadStateMachine(small_cfg())
    # 0.4 is between neg_threshold (0.35) and threshold (0.5): it cannot start speech ...
    assert run(sm, [0.4] * 20) == []
    # ... but it keeps a starting turn going and does not start the hang-over once speaking.
    ev = run(sm, [0.9, 0.4, 0.4] + [0.4] * 30)
    assert kinds(ev) == ["SpeechStarted"]
    assert sm.state is VadState.SPEAKING


def test_false_start_drops_back_to_quiet():
    sm = VadStateMachine(small_cfg())  # start_gap 96 ms: a 4-frame dip starts over
    assert run(sm, [0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]) == []
    assert sm.state is VadState.QUIET


def test_hang_over_resume_and_end():
    sm = VadStateMachine(small_cfg())  # hang-over 160 ms = 5 frames
    probs = [0.1] * 3 + [0.9] * 10 + [0.1] * 4 + [0.9] * 5 + [0.1] * 5 + [0.1] * 5
    ev = run(sm, probs)
    assert kinds(ev) == ["SpeechStarted", "SilenceStarted", "SpeechResumed", "SilenceStarted", "SpeechEnded"]
    sil1, resumed, sil2, ended = (e for _, e in ev[1:])
    assert isinstance(sil1, SilenceStarted) and sil1.t == pytest.approx(13 * F)
    assert isinstance(resumed, SpeechResumed) and resumed.t == pytest.approx(17 * F)
    assert isinstance(sil2, SilenceStarted) and sil2.t == pytest.approx(22 * F)
    assert isinstance(ended, SpeechEnded)
    assert ended.t == pytest.approx(22 * F)  # the end is where the silence began ...
    assert ev[-1][0] == 26  # ... reported once the hang-over has run (5 frames)
    assert ended.start == pytest.approx(3 * F)
    assert ended.reason == "silence"


def test_between_values_during_hang_over_neither_resume_nor_reset_it():
    sm = VadStateMachine(small_cfg())
    ev = run(sm, [0.9] * 5 + [0.1, 0.45, 0.45, 0.45, 0.1])
    assert kinds(ev) == ["SpeechStarted", "SilenceStarted", "SpeechEnded"]


def test_max_length_cuts_and_restarts():
    sm = VadStateMachine(small_cfg(max_speech_s=0.32))  # 10 frames
    ev = run(sm, [0.9] * 25)
    assert kinds(ev) == ["SpeechStarted", "SpeechEnded", "SpeechStarted", "SpeechEnded", "SpeechStarted"]
    ended = ev[1][1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "max_length"
    assert ended.t - ended.start == pytest.approx(0.32)
    assert ev[2][1].t == pytest.approx(ended.t)  # type: ignore[attr-defined]


def test_flush_closes_open_utterance():
    sm = VadStateMachine(small_cfg())
    run(sm, [0.9] * 8)
    (ended,) = sm.flush()
    assert isinstance(ended, SpeechEnded) and ended.reason == "flush"
    assert ended.t == pytest.approx(8 * F)
    assert sm.flush() == []


def test_default_neg_threshold_is_threshold_minus_015():
    assert VadStateMachine(VadConfig(threshold=0.6)).neg_threshold == pytest.approx(0.45)


# --- Silero on real audio ---------------------------------------------------------------


@pytest.fixture(scope="module")
def session():
    return load_silero_session()


def pad(audio: np.ndarray, before: float = 1.0, after: float = 1.5) -> np.ndarray:
    return np.concatenate([np.zeros(int(before * 16000), np.float32), audio,
                           np.zeros(int(after * 16000), np.float32)])


def pink_noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[0]), 1))
    x = np.fft.irfft(spec, n)
    return (x / np.abs(x).max() * level).astype(np.float32)


def test_streaming_probs_equal_faster_whisper_batched(session, speech_clips):
    from faster_whisper.vad import get_vad_model

    clip = next(p for p in speech_clips if p.endswith("jfk.wav"))
    audio = load_audio(clip)
    audio = audio[: audio.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES]
    streamed = SileroVad(session).probs(audio)
    batched = np.asarray(get_vad_model()(audio)).reshape(-1)
    assert streamed.shape == batched.shape
    # faster-whisper zeroes the last frame's final 64 samples in place (its context trick): skip it
    assert np.abs(streamed[:-1] - batched[:-1]).max() < 1e-4
    assert (streamed > 0.5).mean() > 0.3  # and the clip is mostly speech


@pytest.mark.parametrize("name,audio", [
    ("digital silence", np.zeros(16000 * 5, np.float32)),
    ("white noise", (np.random.default_rng(1).standard_normal(16000 * 5) * 0.05).astype(np.float32)),
    ("pink noise", pink_noise(5, 0.3)),
    ("hum", (0.3 * np.sin(2 * np.pi * 50 * np.arange(16000 * 5) / 16000)).astype(np.float32)),
])
def test_no_speech_in_silence_and_noise(session, name, audio):
    ep = Endpointer(VadConfig(), SileroVad(session))
    events = ep.process(audio) + ep.flush()
    assert events == [], f"{name}: {events}"


def test_one_utterance_per_clip_covering_the_speech(session, speech_clips):
    """Every short clip (single phrase) padded with silence: exactly one utterance, right place."""
    for path, _text in speech_clips.items():
        if path.endswith("jfk.wav"):
            continue  # four phrases with long pauses: tested below
        clip = load_audio(path)
        ep = Endpointer(VadConfig(), SileroVad(session))
        events = ep.process(pad(clip)) + ep.flush()
        ends = [e for e in events if isinstance(e, SpeechEnded)]
        assert len(ends) == 1, (path, events)
        (end,) = ends
        assert end.reason == "silence"
        on, off = energy_bounds(clip)
        assert abs(end.start - (1.0 + on)) < 0.3, (path, end.start, 1.0 + on)
        assert abs(end.t - (1.0 + off)) < 0.3, (path, end.t, 1.0 + off)


def test_jfk_phrases_and_early_silence_events(session, speech_clips):
    clip = load_audio(next(p for p in speech_clips if p.endswith("jfk.wav")))
    ep = Endpointer(VadConfig(), SileroVad(session))
    events = ep.process(pad(clip)) + ep.flush()
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert 3 <= len(ends) <= 5  # "and so my fellow americans" / "ask not" / ... / "for your country"
    # every SpeechEnded is preceded by a SilenceStarted at the same time, with the audio so far
    for i, ev in enumerate(events):
        if isinstance(ev, SpeechEnded):
            sil = events[i - 1]
            assert isinstance(sil, SilenceStarted) and sil.t == ev.t
            assert sil.audio.shape[0] >= ev.audio.shape[0] - int(0.3 * 16000)


def test_utterance_audio_is_the_exact_slice_with_pre_roll(session, speech_clips):
    cfg = VadConfig(pre_roll_ms=320)
    clip = load_audio(next(p for p in speech_clips if p.endswith("ps_goforward.wav")))
    stream = pad(clip)
    ep = Endpointer(cfg, SileroVad(session))
    events = []
    for i in range(0, stream.shape[0], 700):  # odd chunk size: the endpointer re-frames
        events += ep.process(stream[i : i + 700])
    (end,) = [e for e in events if isinstance(e, SpeechEnded)]
    a = round(end.start * 16000) - 10 * FRAME_SAMPLES  # 320 ms = 10 frames of pre-roll
    b = round(end.t * 16000) + 10 * FRAME_SAMPLES
    assert end.audio.shape[0] == b - a
    np.testing.assert_array_equal(end.audio, stream[a:b])


def energy_bounds(audio: np.ndarray, rel: float = 0.05) -> tuple[float, float]:
    """First and last 10 ms hop whose 20 ms RMS exceeds ``rel`` of the loudest: a VAD-free truth."""
    rms = np.array([np.sqrt(np.mean(audio[i : i + 320] ** 2)) for i in range(0, audio.shape[0] - 320, 160)])
    on = np.flatnonzero(rms > rms.max() * rel)
    return on[0] * 0.01, on[-1] * 0.01 + 0.02
