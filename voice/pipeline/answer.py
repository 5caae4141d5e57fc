"""The output side of a conversation: one response, LLM -> chunker -> TTS -> sink.

:class:`Answer` is handed everything it needs (the chain, the TTS engine, the sink, the voice,
where its audio starts in the sink's counter) and :meth:`Answer.run` returns an
:class:`AnswerResult`: what was generated, what was played, how it ended. It does not call back
into the conversation; its progress goes out as pipeline events through ``emit``.

The LLM stage and the TTS stage are joined by a bounded queue; the sink's own buffer bounds the
audio. Every chunk is booked in the :class:`~voice.pipeline.turns.PlaybackLedger` before it is
written, so :meth:`Answer.stop` (barge-in, cancel) knows at once what was heard. After a stop,
each stage drops its work at the next hand-over (the speech-to-speech "cancel scope" shape).

A ``held`` answer (preemptive: started during the VAD's hang-over) runs its LLM, chunker and
TTS, but its first audio chunk waits before the sink and its events are kept, until
:meth:`Answer.release`; a stop before that writes nothing and emits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from voice.pipeline import events as ev
from voice.pipeline.hearing import to_rate
from voice.pipeline.io import AudioSink, wait_played
from voice.pipeline.metrics import TurnTimer
from voice.pipeline.turns import PlaybackLedger
from voice.tts.base import CancelToken

if TYPE_CHECKING:
    from voice.config import ChunkerConfig
    from voice.llm.chain import Chain
    from voice.tts.base import TTSEngine

log = logging.getLogger(__name__)

#: Playback is taken as finished when this close to the end (resampling rounding in sinks).
END_TOLERANCE_S = 0.02
#: Give up waiting for a sink whose played counter stops moving.
STALL_S = 2.0
#: The first sound of an answer is its first sample this loud (-40 dBFS): TTS voices start
#: with tens of ms of near-silence (Piper about 45 ms), which nobody hears as an answer.
FIRST_SOUND_LEVEL = 0.01


@dataclass(frozen=True)
class AnswerResult:
    """How one response ended. ``spoken``: the text heard (all of it when there is no sink)."""

    turn_id: int
    generated: str
    spoken: str
    ended: Literal["played", "stopped", "failed"]
    #: The chain was asked (so its memory holds this turn and needs the spoken text).
    llm_started: bool = False
    error: Exception | None = None
    stage: str = "answer"


class Answer:
    """One response to ``text`` for turn ``turn_id``; run it once."""

    def __init__(self, turn_id: int, text: str, *, chain: Chain, tts: TTSEngine | None, sink: AudioSink | None,
                 voice: str | None, chunker: ChunkerConfig, queue_size: int, timer: TurnTimer, start: int,
                 emit: Callable[[ev.Event], None], far: Callable[[np.ndarray, int], None] | None = None,
                 held: bool = False) -> None:
        self.turn_id = turn_id
        self.text = text
        self.chain = chain
        self.tts = tts
        self.sink = sink
        self.voice = voice
        self.chunker = chunker
        self.queue_size = max(1, queue_size)
        self.timer = timer
        self.ledger = PlaybackLedger(start=start)
        self.token = CancelToken()
        #: Where this answer's output ends in the sink's counter (what a next answer starts from).
        self.out_end = start
        self._lead = 0  # near-silent samples before the first sound (in the first chunk)
        self._emit = emit
        self._far = far
        self._parts: list[str] = []
        self._llm_started = False
        self._live = True
        self._stage = "answer"
        self._written = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tentative = held
        self._released = asyncio.Event()
        self._kept: list[ev.Event] = []  # events of a held answer, sent on release
        if not held:
            self._released.set()

    @property
    def stopped(self) -> bool:
        return not self._live

    @property
    def llm_started(self) -> bool:
        return self._llm_started

    @property
    def generated(self) -> str:
        return "".join(self._parts).strip()

    @property
    def held(self) -> bool:
        """Nothing of it may reach the sink or the listeners yet."""
        return not self._released.is_set()

    def release(self) -> None:
        """The turn is confirmed: send the events kept so far, let the held audio go to the sink."""
        kept, self._kept = self._kept, []
        for event in kept:
            self._emit(event)
        self._released.set()

    def _send(self, event: ev.Event) -> None:
        if self._released.is_set():
            self._emit(event)
        else:
            self._kept.append(event)

    def stop(self) -> str:
        """Stop now: clear what the sink has not played, cancel TTS; the stages drop what they
        hold at their next step. Returns the text actually heard."""
        self._live = False
        self._stopping.set()
        self.token.cancel()
        if self.sink is None:
            self.out_end = 0
            return ""
        if self.ledger.written:
            self.sink.clear()  # first: the output must stop at once
        played = self.sink.played_samples
        self.out_end = played
        return self.ledger.spoken_text(played)

    async def run(self) -> AnswerResult:
        try:
            q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self.queue_size)
            llm = asyncio.create_task(self._llm_stage(q))
            speak = asyncio.create_task(self._speak_stage(q))
            watch = asyncio.create_task(self._watch_first_sample())
            stopping = asyncio.create_task(self._stopping.wait())
            stages: asyncio.Future[Any] = asyncio.gather(llm, speak)
            try:
                try:  # until both stages end, one fails, or stop() (a stage may wait on a full queue)
                    waits: list[asyncio.Future[Any]] = [stages, stopping]
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    if stages.done():
                        stages.result()
                finally:
                    for t in (llm, speak, stopping):
                        t.cancel()
                    await asyncio.gather(llm, speak, return_exceptions=True)
                    if stages.done() and not stages.cancelled():
                        stages.exception()  # retrieved: raised above or superseded by stop()
                await self._wait_played()
            finally:
                watch.cancel()
            if self.stopped:
                return self._result("stopped", "")
            spoken = self.ledger.full_text() if self.sink is not None else self.generated
            self._send(ev.PlaybackDone(turn_id=self.turn_id, spoken_text=spoken))
            return self._result("played", spoken)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if self.stopped:
                return self._result("stopped", "")
            spoken = self.stop() if self.sink is not None else ""
            return AnswerResult(self.turn_id, self.generated, spoken, "failed", self._llm_started, err, self._stage)
        finally:
            self._live = False

    def _result(self, ended: Literal["played", "stopped", "failed"], spoken: str) -> AnswerResult:
        return AnswerResult(self.turn_id, self.generated, spoken, ended, self._llm_started)

    async def _llm_stage(self, q: asyncio.Queue[str | None]) -> None:
        from voice.tts.chunker import SpeechChunker

        chunker = SpeechChunker(self.chunker)
        tid = self.turn_id
        self.timer.llm_start = time.monotonic()
        self._llm_started = True
        ahead = {"tentative": True} if self._tentative else {}  # only a chain that can hold is asked ahead
        stream = self.chain.astream(self.text, turn_id=tid, **ahead)
        try:
            async for delta in stream:
                if self.stopped:
                    return
                if not delta:
                    continue
                self.timer.mark("first_token", time.monotonic())
                self._parts.append(delta)
                self._send(ev.LlmDelta(turn_id=tid, text=delta))
                for piece in chunker.feed(delta):
                    await q.put(piece)
            for piece in chunker.flush():
                await q.put(piece)
            self._send(ev.LlmDone(turn_id=tid, text=self.generated))
        except Exception:
            self._stage = "llm"
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), timeout=2.0)
            timings = getattr(self.chain, "last_timings", None)
            self.timer.llm_timings = timings if isinstance(timings, dict) else None
            if not self.stopped:
                await q.put(None)

    async def _speak_stage(self, q: asyncio.Queue[str | None]) -> None:
        while (piece := await q.get()) is not None:
            if self.tts is None or self.sink is None:
                continue
            if self.stopped:
                return
            try:
                await self._speak(piece)
            except Exception:
                self._stage = "tts"
                raise
            if self.stopped:
                return

    async def _speak(self, piece: str) -> None:
        """Synthesize one piece and write its audio."""
        assert self.tts is not None and self.sink is not None
        tid, timer, sink = self.turn_id, self.timer, self.sink
        timer.mark("tts_start", time.monotonic())
        t_piece = time.monotonic()
        async for chunk in self.tts.stream(piece, voice=self.voice, cancel=self.token):
            if self.stopped:
                return
            now = time.monotonic()
            if timer.tts_first_chunk_s is None:
                timer.tts_first_chunk_s = now - t_piece
            timer.mark("first_audio", now)
            audio = to_rate(chunk.audio, chunk.sample_rate, sink.sample_rate)
            text = (chunk.text or piece).strip()
            self._send(ev.TtsChunk(turn_id=tid, text=text, index=chunk.index,
                                   samples=int(chunk.audio.shape[0]), sample_rate=chunk.sample_rate))
            if audio.size == 0:
                continue
            if not self._released.is_set():  # the holding buffer: this chunk (the TTS queue bounds the rest)
                await self._released.wait()
                if self.stopped:
                    return
            if not self.ledger.written:
                loud = np.flatnonzero(np.abs(audio) >= FIRST_SOUND_LEVEL)
                self._lead = int(loud[0]) if loud.size else 0
                mark_turn = getattr(sink, "mark_turn", None)
                if mark_turn is not None:
                    mark_turn()
            # Book the chunk BEFORE the write: a sink queues it at once and then waits while its
            # buffer is full (a chunk can be longer than the buffer), and all that time the chunk
            # may sound. A stop must see it (to clear it and to know what was played) and the
            # echo gate must know the assistant speaks.
            self.ledger.add(int(audio.shape[0]), text)
            self.out_end = self.ledger.end
            if self._far is not None:
                self._far(audio, sink.sample_rate)
            self._written.set()
            await sink.write(audio)
            if self.stopped:
                return  # cleared while we were waiting on the sink
            self._send(ev.AudioOut(turn_id=tid, audio=audio, sample_rate=sink.sample_rate, text=text))

    async def _watch_first_sample(self) -> None:
        """PlaybackStarted as soon as the sink has played this answer's first sound (its first
        sample at :data:`FIRST_SOUND_LEVEL`)."""
        await self._written.wait()
        assert self.sink is not None
        while self._live:
            if self.ledger.played(self.sink.played_samples) > self._lead:  # the first sound is out
                self._played_first()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALL_S):
                    await wait_played(self.sink, self.ledger.start + self._lead + 1)

    def _played_first(self) -> None:
        if self.timer.first_played is None:
            self.timer.mark("first_played", time.monotonic())
            self._emit(ev.PlaybackStarted(turn_id=self.turn_id))

    async def _wait_played(self) -> None:
        if self.sink is None or not self.ledger.written:
            return
        end = self.ledger.end - int(END_TOLERANCE_S * self.sink.sample_rate)
        while self._live:
            before = self.sink.played_samples
            if before >= end:
                self._played_first()
                return
            try:
                async with asyncio.timeout(STALL_S):
                    await wait_played(self.sink, end)
            except TimeoutError:
                if self.sink.played_samples == before:
                    log.warning("sink stopped playing (%d of %d samples); going on", before, self.ledger.end)
                    self.out_end = before
                    return
