"""Pipeline logic without models: turn ids, stale work, what was played, barge-in bookkeeping.

The sans-I/O parts (ledger, counter, early transcript, metrics) are tested directly. The
orchestrator is driven by the audio room's real VAD event classes, the LLM room's real
ConversationMemory, the real SpeechChunker, and a FileSink that plays at wall-clock speed; the
chain, transcriber and TTS are small scripted stand-ins (the real ones run in
tests/test_pipeline_e2e.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from tests.helpers.fakes import until
from voice.asr.base import Transcript
from voice.audio.vad import SilenceStarted, SpeechEnded, SpeechResumed, SpeechStarted
from voice.llm.memory import ConversationMemory
from voice.pipeline import events as ev
from voice.pipeline.conversation import Conversation
from voice.pipeline.io import FileSink, array_frames
from voice.pipeline.metrics import MetricsSummary, TurnTimer, percentile
from voice.pipeline.turns import EarlyTranscript, PlaybackLedger, TurnCounter
from voice.tts.base import AudioChunk, CancelToken

SR = 16000


# ----------------------------------------------------------------------------- sans-I/O


def test_turn_counter_stale() -> None:
    c = TurnCounter()
    a = c.next()
    c.activate(a)
    assert not c.is_stale(a)
    b = c.next()
    c.activate(b)
    assert c.is_stale(a) and not c.is_stale(b)
    assert not c.deactivate(a)  # not the active one
    assert c.deactivate(b) and c.is_stale(b)
    assert (a, b) == (1, 2)


def test_ledger_maps_played_samples_to_text() -> None:
    led = PlaybackLedger(start=1000)
    led.add(100, "Paris is the capital.")
    led.add(200, "It has four million people living there.")
    assert led.end == 1300 and led.written == 300
    assert led.spoken_text(1000) == ""
    assert not led.started(1000) and led.started(1001)
    assert led.spoken_text(1100) == "Paris is the capital."
    # half of the second piece: half of its 7 words, rounded down
    assert led.spoken_text(1200) == "Paris is the capital. It has four"
    assert led.spoken_text(5000) == led.full_text()
    assert led.finished(1300) and not led.finished(1299)
    assert led.played(900) == 0 and led.played(1150) == 150 and led.played(9999) == 300


def test_early_transcript_bookkeeping() -> None:
    e = EarlyTranscript()
    g = e.begin(16000)
    assert e.current(g)
    assert e.usable(16000 + 9000, tail_samples=10000)
    assert not e.usable(16000 + 20000, tail_samples=10000)  # speech went on after it
    e.discard()  # speech resumed
    assert not e.current(g) and not e.usable(16000, 10000)
    g2 = e.begin(30000)
    assert g2 != g and e.current(g2)


def test_metrics_relative_to_end_of_speech() -> None:
    t = TurnTimer(turn_id=3, end=10.0, silence=9.4)
    t.llm_start = 10.2
    for name, v in [("transcript", 10.2), ("first_token", 10.6), ("first_audio", 10.8),
                    ("first_played", 10.85), ("done", 13.0)]:
        t.mark(name, v)
    t.mark("first_token", 99.0)  # only the first mark counts
    m = t.to_event()
    assert m.turn_id == 3
    assert m.transcript_s == pytest.approx(0.2)
    assert m.first_token_s == pytest.approx(0.6)
    assert m.voice_to_voice_s == pytest.approx(0.85)
    assert m.from_silence_s == pytest.approx(1.45)
    assert m.llm_first_token_s == pytest.approx(0.4)
    assert m.total_s == pytest.approx(3.0)
    s = MetricsSummary()
    for v in (0.5, 1.0, 2.0):
        s.add(ev.TurnMetrics(turn_id=1, transcript_s=None, first_token_s=None, first_audio_s=None,
                             voice_to_voice_s=v, total_s=None, from_silence_s=v + 0.5))
    summ = s.summary()
    assert summ["voice_to_voice_s"] == {"p50": 1.0, "p95": 1.9, "n": 3}
    lines = [line.strip() for line in s.format().splitlines()[1:]]
    assert lines[0].startswith("from silence") and "p50 1.500 s" in lines[0]  # the headline first
    assert lines[1].startswith("VAD decision") and "p50 1.000 s" in lines[1]
    assert percentile([], 50) is None


def test_events_are_frozen_and_carry_turn_ids() -> None:
    e = ev.LlmDelta(turn_id=4, text="hi")
    with pytest.raises(AttributeError):
        e.turn_id = 5  # type: ignore[misc]
    assert e.type == "LlmDelta" and e.t > 0
    with pytest.raises(TypeError):
        ev.LlmDelta(text="no turn")  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- orchestrator


class ScriptedChain:
    """Yields a fixed answer word by word; memory is the LLM room's real ConversationMemory,
    recorded on close like the real chain does."""

    def __init__(self, answer: str, delay_s: float = 0.01) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.memory = ConversationMemory(1000)
        self.closed_early = 0

    async def astream(self, user_text: str, *, turn_id: int) -> AsyncIterator[str]:
        self.memory.add_user(turn_id, user_text)
        out: list[str] = []
        finished = False
        try:
            for w in self.answer.split(" "):
                await asyncio.sleep(self.delay_s)
                out.append(w + " ")
                yield w + " "
            finished = True
        finally:
            if not finished:
                self.closed_early += 1
            self.memory.set_assistant(turn_id, "".join(out).strip())

    def commit_assistant(self, turn_id: int, spoken_text: str) -> None:
        self.memory.commit_assistant(turn_id, spoken_text)

    def assistant(self, turn_id: int) -> str:
        t = self.memory._find(turn_id)  # noqa: SLF001
        return t.assistant if t else ""


class ToneTts:
    """0.06 s of tone per character: long enough to be interrupted mid-answer."""

    name = "tone"
    sample_rate = SR

    async def stream(self, text: str, *, voice: str | None = None, speed: float | None = None,
                     cancel: CancelToken | None = None) -> AsyncIterator[AudioChunk]:
        await asyncio.sleep(0.01)
        if cancel is not None and cancel.cancelled:
            return
        n = int(0.06 * SR * len(text))
        yield AudioChunk(audio=0.1 * np.ones(n, np.float32), sample_rate=SR, text=text, index=0)


class ScriptedAsr:
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    async def transcribe(self, audio: np.ndarray, *, live: bool = False,
                         language: str | None = None) -> Transcript:
        self.calls += 1
        await asyncio.sleep(0.02)
        return Transcript(text=self.text, segments=[], language="en", duration_s=len(audio) / SR,
                          model="scripted", device="cpu")


ANSWER = "The first sentence is here. The second sentence follows it. And a third one ends the answer."


def make(cfg, *, answer: str = ANSWER, realtime: bool = True):  # type: ignore[no-untyped-def]
    chain = ScriptedChain(answer)
    asr = ScriptedAsr("what is the answer")
    sink = FileSink(None, SR, realtime=realtime)
    conv = Conversation(cfg, transcriber=asr, chain=chain, tts=ToneTts(), sink=sink,  # type: ignore[arg-type]
                        endpointer=object())
    seen: list[ev.Event] = []
    conv.add_listener(seen.append)
    return conv, chain, asr, sink, seen


async def test_text_turn_runs_through_chain_and_tts(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, _, sink, seen = make(cfg, realtime=False)
    tid = await conv.ask("hello there")
    types = [e.type for e in seen if e.turn_id == tid]
    for t in ("TranscriptFinal", "LlmDelta", "TtsChunk", "AudioOut", "PlaybackStarted", "LlmDone",
              "PlaybackDone", "TurnMetrics"):
        assert t in types, t
    assert types.index("TranscriptFinal") < types.index("LlmDelta") < types.index("PlaybackDone")
    assert all(e.turn_id == tid for e in seen if not isinstance(e, ev.StatusChanged))
    done = next(e for e in seen if isinstance(e, ev.PlaybackDone))
    assert done.spoken_text == ANSWER
    assert chain.assistant(tid) == ANSWER
    m = next(e for e in seen if isinstance(e, ev.TurnMetrics))
    assert m.source == "text" and not m.cancelled
    assert m.first_token_s is not None and m.voice_to_voice_s is not None
    assert m.first_token_s <= m.first_audio_s <= m.voice_to_voice_s  # type: ignore[operator]
    assert sink.written_samples > 0.06 * SR * (len(ANSWER) - 5)
    assert conv.status == "listening" and not conv.busy


async def test_barge_in_clears_sink_and_keeps_only_played_text(cfg) -> None:  # type: ignore[no-untyped-def]
    cfg.pipeline.headphones = True
    conv, chain, asr, sink, seen = make(cfg)
    tid = await conv.submit_text("tell me something")
    # let it play about 2.2 s: more than the first piece (~1.6 s), less than two
    await until(lambda: any(isinstance(e, ev.PlaybackStarted) for e in seen))
    await asyncio.sleep(2.2)
    written_before = sink.written_samples
    t0 = time.monotonic()
    conv.on_vad(SpeechStarted(t=1.0))  # the VAD's event, scripted
    t_clear = time.monotonic() - t0
    played = sink.played_samples
    assert sink.written_samples == played < written_before  # unplayed audio dropped at once
    assert t_clear < 0.05
    barge = next(e for e in seen if isinstance(e, ev.BargeIn))
    assert barge.turn_id == tid
    await conv.wait_turn(tid)
    await asyncio.sleep(0.05)
    spoken = chain.assistant(tid)
    assert spoken == barge.played_text
    assert spoken.startswith("The first sentence is here.")
    assert "third" not in spoken and len(spoken) < len(ANSWER)
    # nothing of the cancelled turn reaches the sink afterwards
    n = sink.written_samples
    await asyncio.sleep(0.3)
    assert sink.written_samples == n
    assert not [e for e in seen if isinstance(e, ev.AudioOut) and e.t > barge.t]
    cancelled = [e for e in seen if isinstance(e, ev.TurnCancelled)]
    assert cancelled and cancelled[0].reason == "barge_in"
    # the new user turn has the next id and goes on normally
    new = conv.turns.last
    assert new == tid + 1
    conv.on_vad(SpeechEnded(t=2.0, audio=np.zeros(SR, np.float32), start=1.0))
    await conv.wait_turn(new)
    assert asr.calls == 1
    assert chain.assistant(new) == ANSWER
    await conv.aclose()


async def test_interrupting_takes_longer_speech_than_starting_a_turn(cfg) -> None:  # type: ignore[no-untyped-def]
    cfg.pipeline.headphones = True
    cfg.vad.min_speech_ms, cfg.pipeline.barge_in_min_speech_ms = 256, 416
    conv, _, _, _, seen = make(cfg)
    conv.hearing.set_endpointer(None)  # the real Endpointer (Silero), made on first use
    silence = np.zeros(512, np.float32)
    conv.process_frame(silence)
    assert conv.hearing.endpointer.sm.min_speech_frames == 8  # 256 ms of 32 ms frames
    tid = await conv.submit_text("tell me something")
    await until(lambda: any(isinstance(e, ev.PlaybackStarted) for e in seen))
    conv.process_frame(silence)
    assert conv.hearing.endpointer.sm.min_speech_frames == 13  # 416 ms while the answer plays
    await conv.wait_turn(tid)
    conv.process_frame(silence)
    assert conv.hearing.endpointer.sm.min_speech_frames == 8
    await conv.aclose()


async def test_stale_turn_output_is_dropped_on_new_text(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, _, sink, seen = make(cfg)
    chain.delay_s = 0.05
    a = await conv.submit_text("first")
    await asyncio.sleep(0.1)
    b = await conv.submit_text("second")
    await conv.wait_turn(b)
    cancelled = [e for e in seen if isinstance(e, ev.TurnCancelled)]
    assert [c.turn_id for c in cancelled] == [a] and cancelled[0].reason == "new_turn"
    assert chain.closed_early == 1
    last_a = max(e.t for e in seen if e.turn_id == a)
    assert not [e for e in seen if e.turn_id == a and isinstance(e, (ev.AudioOut, ev.LlmDelta)) and e.t > cancelled[0].t]
    assert last_a >= cancelled[0].t
    assert chain.assistant(a) == ""  # nothing of it was played
    assert chain.assistant(b) == ANSWER


async def test_early_transcript_used_or_discarded(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, asr, _, seen = make(cfg, realtime=False)
    speech = np.zeros(SR, np.float32)
    conv.on_vad(SpeechStarted(t=0.0))
    conv.on_vad(SilenceStarted(t=1.0, audio=speech))
    await asyncio.sleep(0.05)  # the early transcription finishes during the hang-over
    conv.on_vad(SpeechEnded(t=1.6, audio=np.zeros(SR + 9600, np.float32), start=0.0))
    await conv.wait_idle()
    assert asr.calls == 1  # used, not repeated
    m = [e for e in seen if isinstance(e, ev.TurnMetrics)][-1]
    assert m.transcript_s == 0.0 and m.from_silence_s is not None
    # speech resumed: the early job is discarded and the whole utterance transcribed again
    conv.on_vad(SpeechStarted(t=3.0))
    conv.on_vad(SilenceStarted(t=4.0, audio=speech))
    conv.on_vad(SpeechResumed(t=4.2))
    conv.on_vad(SpeechEnded(t=6.0, audio=np.zeros(3 * SR, np.float32), start=3.0))
    await conv.wait_idle()
    assert asr.calls == 3
    assert len([e for e in seen if isinstance(e, ev.PlaybackDone)]) == 2


async def test_mic_ignored_while_speaking_without_headphones(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, _, sink, seen = make(cfg)
    fed: list[int] = []

    class CountingEndpointer:
        def process(self, frame: np.ndarray) -> list[object]:
            fed.append(frame.shape[0])
            return []

        def reset(self) -> None:
            fed.append(-1)

        def set_min_speech_ms(self, ms: float) -> None:
            pass

        def flush(self) -> list[object]:
            return []

    conv.hearing.set_endpointer(CountingEndpointer())
    conv.process_frame(np.zeros(512, np.float32))
    assert fed == [512]
    tid = await conv.submit_text("hi")
    await until(lambda: conv.speaking)
    conv.process_frame(np.zeros(512, np.float32))
    assert fed == [512]  # gated: the assistant's own voice must not start a turn
    conv.set_muted(True)
    await conv.wait_turn(tid)
    conv.set_muted(False)
    await asyncio.sleep(cfg.pipeline.echo_tail_ms / 1000 + 0.05)
    conv.process_frame(np.zeros(512, np.float32))
    assert fed[-1] == 512 and -1 in fed  # reopened with a fresh VAD state


async def test_run_over_frames_holds_while_busy(cfg) -> None:  # type: ignore[no-untyped-def]
    """A recorded conversation with two turns: the second is not taken as a barge-in."""
    conv, chain, asr, _, seen = make(cfg, answer="Short answer.", realtime=False)

    class ScriptedEndpointer:
        """Speech where the signal is non-zero (a stand-in for Silero on a synthetic signal)."""

        def __init__(self) -> None:
            self.on = False
            self.buf: list[np.ndarray] = []
            self.quiet = 0

        def process(self, frame: np.ndarray) -> list[object]:
            loud = bool(np.abs(frame).max() > 0.01)
            if loud and not self.on:
                self.on, self.buf, self.quiet = True, [frame], 0
                return [SpeechStarted(t=0.0)]
            if self.on:
                self.buf.append(frame)
                self.quiet = 0 if loud else self.quiet + 1
                if self.quiet >= 10:
                    self.on = False
                    return [SpeechEnded(t=1.0, audio=np.concatenate(self.buf), start=0.0)]
            return []

        def reset(self) -> None:
            self.on = False

        def set_min_speech_ms(self, ms: float) -> None:
            pass

        def flush(self) -> list[object]:
            return []

    conv.hearing.set_endpointer(ScriptedEndpointer())
    tone = 0.3 * np.ones(SR // 2, np.float32)
    gap = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([gap, tone, gap, tone, gap])
    await conv.run(array_frames(audio, realtime=False), hold_while_busy=True)
    assert len([e for e in seen if isinstance(e, ev.PlaybackDone)]) == 2
    assert not [e for e in seen if isinstance(e, ev.BargeIn)]
    assert conv.metrics.summary()["turns"] == 2


def test_chunker_first_piece_at_word_boundary_after_first_words() -> None:
    """The first piece need not wait for a clause: after ``first_words`` words it goes."""
    from voice.config import ChunkerConfig
    from voice.tts.chunker import SpeechChunker

    answer = "The lighthouse on Kestrel Point was painted bright purple in 1987. Its keeper is Marigold."
    for words, first in [(8, "The lighthouse on Kestrel Point was painted bright"),
                         (0, "The lighthouse on Kestrel Point was painted bright purple in 1987.")]:
        c = SpeechChunker(ChunkerConfig(first_words=words))
        pieces: list[str] = []
        for w in answer.split(" "):
            pieces += c.feed(w + " ")
            if pieces:
                break
        assert pieces[0] == first
        # a word still arriving ("purp") is never cut
        c = SpeechChunker(ChunkerConfig(first_words=words))
        got = c.feed("The lighthouse on Kestrel Point was painted bright purp")
        assert got == ([first] if words else [])


def test_per_turn_line_leads_with_from_silence() -> None:
    from voice.terminal import format_latency

    m = ev.TurnMetrics(turn_id=1, transcript_s=0.0, first_token_s=0.3, first_audio_s=0.5,
                       voice_to_voice_s=0.55, total_s=2.0, from_silence_s=1.17)
    assert format_latency(m).startswith("from silence 1.17s · after VAD 0.55s")
    typed = ev.TurnMetrics(turn_id=2, transcript_s=None, first_token_s=0.3, first_audio_s=0.5,
                           voice_to_voice_s=0.55, total_s=2.0, source="text")
    assert format_latency(typed).startswith("text-to-voice 0.55s")
