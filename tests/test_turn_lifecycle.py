"""The turn lifecycle without devices, sockets or models: scripted VAD events, a chain and a TTS
that are plain async generators, a sink that plays at wall-clock speed. Covers barge-in, cancel,
a typed line during an answer, the pieces alone (Hearing, Answer), and a realtime session whose
response is cancelled by ``response.cancel`` (the session over a scripted connection)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from tests.helpers.fakes import QuietEndpointer, until
from voice.asr.base import Transcript
from voice.audio.vad import SpeechEnded, SpeechStarted
from voice.pipeline import events as ev
from voice.pipeline.answer import Answer
from voice.pipeline.conversation import Conversation
from voice.pipeline.hearing import Hearing, InputReset, OutputFacts
from voice.pipeline.io import FileSink
from voice.pipeline.metrics import TurnTimer
from voice.tts.base import AudioChunk, CancelToken

SR = 16000
ANSWER = "One two three four. Five six seven eight. Nine ten eleven twelve."


class Chain:
    """``astream`` is a plain async generator; memory is a dict of what was committed."""

    def __init__(self, answer: str = ANSWER, delay_s: float = 0.005) -> None:
        self.answer, self.delay_s = answer, delay_s
        self.committed: dict[int, str] = {}
        self.asked: list[str] = []
        self.last_sources: list[Any] = []

    async def astream(self, user_text: str, *, turn_id: int) -> AsyncIterator[str]:
        self.asked.append(user_text)
        for w in self.answer.split(" "):
            await asyncio.sleep(self.delay_s)
            yield w + " "

    def commit_assistant(self, turn_id: int, spoken_text: str) -> None:
        self.committed[turn_id] = spoken_text

    async def aclose(self) -> None:
        pass


class Tts:
    """0.1 s of tone per word, as a plain async generator."""

    name = "fake"

    def __init__(self, sample_rate: int = SR, seconds: float = 0.1) -> None:
        self.sample_rate, self.seconds = sample_rate, seconds

    def voices(self) -> list[str]:
        return ["fake"]

    async def stream(self, text: str, *, voice: str | None = None, speed: float | None = None,
                     cancel: CancelToken | None = None) -> AsyncIterator[AudioChunk]:
        await asyncio.sleep(0)
        if cancel is not None and cancel.cancelled:
            return
        n = int(self.seconds * self.sample_rate * len(text.split()))
        yield AudioChunk(audio=0.1 * np.ones(n, np.float32), sample_rate=self.sample_rate, text=text, index=0)


class Asr:
    async def transcribe(self, audio: np.ndarray, *, live: bool = False, language: str | None = None) -> Transcript:
        await asyncio.sleep(0.005)
        return Transcript(text="a question", segments=[], language="en", duration_s=len(audio) / SR,
                          model="fake", device="cpu")


def conversation(cfg, *, realtime: bool = True):  # type: ignore[no-untyped-def]
    cfg.pipeline.headphones = True
    cfg.tts.chunker.first_words = 0
    cfg.tts.chunker.min_first_chars = 20  # the piece layout these tests assert on
    chain, sink = Chain(), FileSink(None, SR, realtime=realtime)
    conv = Conversation(cfg, transcriber=Asr(), chain=chain, tts=Tts(), sink=sink,  # type: ignore[arg-type]
                        endpointer=QuietEndpointer())
    seen: list[ev.Event] = []
    conv.add_listener(seen.append)
    return conv, chain, sink, seen


def of(seen: list[ev.Event], kind: type[ev.Event], turn_id: int | None = None) -> list[Any]:
    return [e for e in seen if isinstance(e, kind) and (turn_id is None or e.turn_id == turn_id)]


# ----------------------------------------------------------------------------- the lifecycle


async def test_spoken_turn_from_scripted_vad_events(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, sink, seen = conversation(cfg, realtime=False)
    conv.on_vad(SpeechStarted(t=0.0))
    tid = conv.turns.last
    conv.on_vad(SpeechEnded(t=1.0, audio=np.zeros(SR, np.float32), start=0.0))
    await conv.wait_turn(tid)
    assert [type(e).__name__ for e in seen if e.turn_id == tid and not isinstance(e, ev.StatusChanged)][:3] == [
        "UserSpeechStarted", "UserSpeechStopped", "TranscriptFinal"]
    assert of(seen, ev.PlaybackDone, tid)[0].spoken_text == ANSWER
    assert chain.committed[tid] == ANSWER and chain.asked == ["a question"]
    assert conv.status == "listening" and not conv.busy
    await conv.aclose()


async def test_barge_in_stops_the_answer_and_keeps_what_was_heard(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, sink, seen = conversation(cfg)
    tid = await conv.submit_text("tell me")
    await until(lambda: bool(of(seen, ev.PlaybackStarted, tid)))
    await asyncio.sleep(0.6)  # more than the first sentence (0.4 s), less than the answer (1.2 s)
    conv.on_vad(SpeechStarted(t=1.0))
    assert sink.written_samples == sink.played_samples  # cleared at once
    (barge,) = of(seen, ev.BargeIn, tid)
    (cancelled,) = of(seen, ev.TurnCancelled, tid)
    assert cancelled.reason == "barge_in" and cancelled.spoken_text == barge.played_text
    assert barge.played_text.startswith("One two three four.") and "twelve" not in barge.played_text
    assert ANSWER.startswith(barge.played_text)
    await conv.wait_turn(tid)
    assert chain.committed[tid] == barge.played_text
    assert conv.turns.last == tid + 1 and conv.status == "listening"
    n = sink.written_samples
    await asyncio.sleep(0.2)
    assert sink.written_samples == n  # nothing of the stopped answer comes later
    assert of(seen, ev.TurnMetrics, tid)[0].cancelled
    await conv.aclose()


async def test_cancel_with_nothing_played_commits_nothing(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, sink, seen = conversation(cfg)
    assert conv.interrupt() is None  # nothing to cancel
    tid = await conv.submit_text("tell me")
    await until(lambda: bool(of(seen, ev.LlmDelta, tid)))
    assert conv.interrupt("client_cancelled") == ""
    await conv.wait_turn(tid)
    (cancelled,) = of(seen, ev.TurnCancelled, tid)
    assert cancelled.reason == "client_cancelled" and not of(seen, ev.BargeIn)
    assert chain.committed.get(tid) == "" and sink.written_samples == sink.played_samples
    assert not of(seen, ev.PlaybackDone, tid) and not conv.busy
    await conv.aclose()


async def test_typed_line_during_an_answer_replaces_it(cfg) -> None:  # type: ignore[no-untyped-def]
    conv, chain, sink, seen = conversation(cfg)
    a = await conv.submit_text("first")
    await until(lambda: bool(of(seen, ev.AudioOut, a)))
    b = await conv.submit_text("second")
    await conv.wait_turn(b)
    (cancelled,) = of(seen, ev.TurnCancelled)
    assert cancelled.turn_id == a and cancelled.reason == "new_turn"
    assert not [e for e in of(seen, ev.AudioOut, a) if e.t > cancelled.t]
    assert chain.asked == ["first", "second"]
    assert chain.committed[b] == ANSWER and len(chain.committed[a]) < len(ANSWER)
    assert of(seen, ev.PlaybackDone, b)[0].spoken_text == ANSWER
    await conv.aclose()


async def test_live_settings_change_through_methods_only(cfg) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    conv, _, _, _ = conversation(cfg)
    before = dataclasses.asdict(cfg)
    vad = dataclasses.replace(cfg.vad, threshold=0.7)
    conv.set_turn_detection(vad, barge_in=False)
    assert conv.settings.vad.threshold == 0.7 and not conv.settings.barge_in and not conv.settings.manual
    conv.set_turn_detection(None)
    assert conv.settings.manual and conv.hearing.manual
    conv.set_voice("other")
    assert conv.settings.voice == "other"
    assert dataclasses.asdict(cfg) == before  # the config was not touched
    with pytest.raises(dataclasses.FrozenInstanceError):
        conv.settings.manual = False  # type: ignore[misc]
    await conv.aclose()


# ----------------------------------------------------------------------------- the pieces alone


def test_one_rule_from_played_audio_to_text() -> None:
    """The pipeline's ledger and a client's truncate use the same PlaybackLedger.spoken_text."""
    from voice.pipeline.turns import PlaybackLedger

    led = PlaybackLedger(start=0)
    led.add(100, "It is noon.")
    led.add(100, "Have a nice day now.")
    assert led.spoken_text(150) == "It is noon. Have a"  # the played share of the cut piece
    assert led.spoken_text(150, whole_started=True) == "It is noon. Have a nice day now."
    assert led.spoken_text(100, whole_started=True) == "It is noon."  # the second had not started
    assert led.spoken_text(0, whole_started=True) == ""


def test_hearing_gates_and_reopens_without_echo_protection(cfg) -> None:  # type: ignore[no-untyped-def]
    fed: list[int] = []

    class Endpointer:
        def process(self, chunk: np.ndarray) -> list[Any]:
            fed.append(chunk.shape[0])
            return [SpeechStarted(t=0.0)] if chunk.max() > 0 else []

        def flush(self) -> list[Any]:
            return []

        def reset(self) -> None:
            fed.append(-1)

        def set_min_speech_ms(self, ms: float) -> None:
            pass

    h = Hearing(cfg.pipeline, cfg.vad, endpointer=Endpointer())  # type: ignore[arg-type]
    loud = np.ones(512, np.float32)
    assert h.hear(loud, OutputFacts()) == [SpeechStarted(t=0.0)]
    assert h.hear(loud, OutputFacts(audible=True)) == []  # its own voice
    assert h.hear(loud, OutputFacts(answering=True, barge_in=False)) == []
    assert h.hear(loud, OutputFacts(closed=True)) == []
    assert fed == [512]
    assert h.hear(loud, OutputFacts()) == [InputReset(), SpeechStarted(t=0.0)]
    assert fed == [512, -1, 512]


def test_hearing_manual_buffer_is_bounded(cfg) -> None:  # type: ignore[no-untyped-def]
    cfg.vad.max_speech_s = 1.0
    h = Hearing(cfg.pipeline, cfg.vad, endpointer=object(), manual=True)  # type: ignore[arg-type]
    for _ in range(100):  # 3.2 s of audio
        assert h.hear(np.zeros(512, np.float32), OutputFacts()) == []
    audio = h.take()
    assert SR - 512 <= audio.shape[0] <= SR  # the last second is kept
    assert h.take().shape[0] == 0


async def test_answer_returns_what_was_played_and_stops_on_demand(cfg) -> None:  # type: ignore[no-untyped-def]
    seen: list[ev.Event] = []
    cfg.tts.chunker.first_words = 0
    cfg.tts.chunker.min_first_chars = 20  # the piece layout these tests assert on

    def make(sink: FileSink, tid: int) -> Answer:
        return Answer(tid, "q", chain=Chain(), tts=Tts(), sink=sink, voice=None, chunker=cfg.tts.chunker,  # type: ignore[arg-type]
                      queue_size=4, timer=TurnTimer(turn_id=tid, end=0.0), start=sink.played_samples,
                      emit=seen.append)

    fast = FileSink(None, SR)
    result = await make(fast, 1).run()
    assert (result.ended, result.spoken, result.generated, result.llm_started) == ("played", ANSWER, ANSWER, True)
    assert [type(e) for e in seen].count(ev.PlaybackDone) == 1
    slow = FileSink(None, SR, realtime=True)
    answer = make(slow, 2)
    task = asyncio.create_task(answer.run())
    await until(lambda: answer.ledger.started(slow.played_samples))
    heard = answer.stop()
    result = await asyncio.wait_for(task, 5)
    assert result.ended == "stopped" and heard == "" and answer.out_end == slow.played_samples
    assert not [e for e in seen if isinstance(e, ev.PlaybackDone) and e.turn_id == 2]


# ----------------------------------------------------------------------------- a realtime session


class ScriptedConnection:
    """What the session needs of a WebSocket: messages in (a queue), messages out (a list)."""

    def __init__(self) -> None:
        from websockets.protocol import State

        self.state = State.OPEN
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    def __aiter__(self) -> ScriptedConnection:
        return self

    async def __anext__(self) -> str:
        msg = await self.inbox.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def send(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.sent.append(json.loads(payload))

    def close_now(self, code: int, reason: str, why: str) -> None:
        self.inbox.put_nowait(None)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


class Resources:
    def __init__(self) -> None:
        self.transcriber, self.tts = Asr(), Tts(sample_rate=24000)
        self.chains: list[Chain] = []

    def voices(self) -> list[str]:
        return ["fake"]

    def make_vad(self, vad_cfg: Any) -> Any:
        return object()

    async def make_chain(self, cfg: Any) -> Chain:
        self.chains.append(Chain(delay_s=0.02))
        return self.chains[-1]


def scripted_session(cfg):  # type: ignore[no-untyped-def]
    """A realtime session over a scripted connection with the stand-in chain and TTS:
    (connection, session, its running task, send(event))."""
    from voice.server.metrics import ServerMetrics
    from voice.server.session import RealtimeSession

    cfg.tts.chunker.first_words = 0
    cfg.tts.chunker.min_first_chars = 20  # the piece layout these tests assert on
    ws = ScriptedConnection()
    session = RealtimeSession(ws, Resources(), cfg, ServerMetrics())  # type: ignore[arg-type]
    run = asyncio.create_task(session.run())

    def send(event: dict[str, Any]) -> None:
        ws.inbox.put_nowait(json.dumps(event))

    return ws, session, run, send


async def test_realtime_response_cancelled_by_response_cancel(cfg) -> None:  # type: ignore[no-untyped-def]
    ws, session, run, send = scripted_session(cfg)

    send({"type": "conversation.item.create",
          "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me"}]}})
    send({"type": "response.create"})
    await until(lambda: "response.output_audio.delta" in ws.types())
    rid = next(m for m in ws.sent if m["type"] == "response.created")["response"]["id"]
    send({"type": "response.cancel", "response_id": rid})
    await until(lambda: "response.done" in ws.types())
    done = next(m for m in ws.sent if m["type"] == "response.done")["response"]
    assert done["id"] == rid and done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    # memory keeps what the client can have heard: not the whole answer
    chain = session.resources.chains[0]
    await until(lambda: bool(chain.committed))
    (spoken,) = chain.committed.values()
    assert len(spoken) < len(ANSWER)
    audio = b"".join(base64.b64decode(m["delta"]) for m in ws.sent if m["type"] == "response.output_audio.delta")
    assert 0 < len(audio) < 12 * 2400 * 2  # less than the whole answer (0.1 s a word at 24 kHz)
    await until(lambda: "voice.metrics" in ws.types())
    assert session.metrics.turns["cancelled"] == 1
    # a second response.cancel: nothing is in progress any more
    send({"type": "response.cancel"})
    await until(lambda: "error" in ws.types())
    assert next(m for m in ws.sent if m["type"] == "error")["error"]["code"] == "response_cancel_not_active"
    ws.inbox.put_nowait(None)
    await asyncio.wait_for(run, 10)


async def test_realtime_truncate_reads_the_answers_ledger(cfg) -> None:  # type: ignore[no-untyped-def]
    """conversation.item.truncate maps onto the ledger the Answer booked (the second answer's
    starts where the first one's audio ended in the sink's counter), via TurnLifecycle.played."""
    ws, session, run, send = scripted_session(cfg)

    items = []
    for n, text in enumerate(["first", "second"], 1):
        send({"type": "conversation.item.create",
              "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        send({"type": "response.create"})
        await until(lambda n=n: ws.types().count("voice.metrics") == n, limit_s=20)  # type: ignore[misc]
        items.append([m for m in ws.sent if m["type"] == "response.output_audio.done"][-1]["item_id"])
    chain = session.resources.chains[0]
    first, second = sorted(chain.committed)
    assert chain.committed[second] == ANSWER
    assert session.conv.played(first) is None  # one ledger kept: the last answer's
    played = session.conv.played(second)
    assert played is not None and played.start == 3 * 4 * 2400 and played.full_text() == ANSWER

    async def reply(item_id: str, end_ms: int) -> dict[str, Any]:
        before = len(ws.sent)
        send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": end_ms})
        await until(lambda: len(ws.sent) > before)
        return ws.sent[before]

    # 0.1 s a word: the second sentence starts at 400 ms, so 450 ms has begun it (it counts whole)
    assert (await reply(items[1], 450))["type"] == "conversation.item.truncated"
    assert chain.committed[second] == "One two three four. Five six seven eight."
    assert (await reply(items[1], 1200))["type"] == "conversation.item.truncated"  # the whole item
    assert chain.committed[second] == ANSWER
    err = await reply(items[1], 1250)
    assert err["type"] == "error" and err["error"]["param"] == "audio_end_ms"
    err = await reply(items[0], 100)  # only the last assistant item can be cut
    assert err["error"]["code"] == "item_truncate_invalid_item_id"
    ws.inbox.put_nowait(None)
    await asyncio.wait_for(run, 10)


def test_hearing_wall_time_is_when_the_stream_time_was_heard(cfg) -> None:  # type: ignore[no-untyped-def]
    h = Hearing(cfg.pipeline, cfg.vad, endpointer=QuietEndpointer())  # type: ignore[arg-type]
    before = h.wall_time(0.5)  # nothing heard yet (a scripted event): now
    assert abs(before - __import__("time").monotonic()) < 0.05
    for k in range(10):  # 10 chunks of 0.1 s, the k-th arriving at 100.0 + 0.1 k + 0.1
        h.hear(np.zeros(1600, np.float32), OutputFacts(), now=100.1 + 0.1 * k)
    # stream time 0.72 s was heard 0.28 s before the last chunk (ending at 1.0 s) arrived at 101.0
    assert h.wall_time(0.72) == pytest.approx(101.0 - 0.28)
    assert h.wall_time(5.0) == pytest.approx(101.0)  # never later than what was heard
    h.reset()  # a new stream clock
    h.hear(np.zeros(1600, np.float32), OutputFacts(), now=200.0)
    assert h.wall_time(0.05) == pytest.approx(199.95)


def test_last_voiced_finds_where_the_voice_fell_before_the_vad_said_so() -> None:
    from voice.pipeline.hearing import END_LOOKBACK_S, last_voiced

    rng = np.random.default_rng(3)
    voice = (0.2 * rng.standard_normal(SR)).astype(np.float32)  # 1 s of "speech"
    audio = np.concatenate([voice, np.zeros(1600, np.float32)])  # then 0.1 s of silence
    # the VAD's first silent frame starts at 1.05 s; the voice really ended at 1.0 s
    assert last_voiced(audio, 1.05, audio_end=1.1) == pytest.approx(1.0, abs=1e-6)
    # never earlier than the lookback, never later than the VAD's end
    assert last_voiced(np.concatenate([voice, np.zeros(8000, np.float32)]), 1.4, audio_end=1.5) == \
        pytest.approx(1.4 - END_LOOKBACK_S)
    assert last_voiced(voice, 0.5, audio_end=1.0) == pytest.approx(0.5)
    assert last_voiced(np.zeros(0, np.float32), 0.7, audio_end=0.7) == 0.7
