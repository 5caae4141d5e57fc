"""The turn lifecycle: the one place where a user turn begins and ends, is transcribed, and its
answer starts, is interrupted or finishes, and where memory learns what was heard.
:class:`~voice.pipeline.conversation.Conversation` (``voice chat``, every server session) is
this plus the microphone funnel.

Every turn has an id (:class:`~voice.pipeline.turns.TurnCounter`). A new utterance while the
assistant answers (barge-in), a typed line, or :meth:`TurnLifecycle.interrupt` (the server's
``response.cancel``) stop the :class:`~voice.pipeline.answer.Answer` first (its sink is cleared
at once), then commit to memory only the text that was played. Parts return values (VAD events,
transcripts, :class:`~voice.pipeline.answer.AnswerResult`); only this class decides on them.
The answer playing now is carried by :class:`~voice.pipeline.answering.Answering` (its task,
where the sink's output ends, the ledger that :meth:`TurnLifecycle.played` hands out, the
memory commits, the echo tail): this class says when one starts and why one stops.

Preemptive answers (``pipeline.preemptive``, :class:`~voice.pipeline.ahead.AnswerAhead`): when
silence starts, the early transcript feeds a *held* answer. The hang-over's end releases it if
the final transcript is that early one; speech resuming, a new utterance, an input reset, a
typed line, an interrupt or close drop it without a trace (no event, no metrics; a debug log
line): the user never saw that turn's answer begin.

End of turn by model (``vad.end_of_turn = "smart_turn"``, :class:`~voice.pipeline.turn_end.ModelTurnEnd`):
when silence starts, Smart Turn may shorten the hang-over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.audio.vad import FRAME_SAMPLES, SilenceStarted, SpeechEnded, SpeechResumed, SpeechStarted
from voice.pipeline import events as ev
from voice.pipeline.ahead import AnswerAhead, can_hold
from voice.pipeline.answer import Answer
from voice.pipeline.answering import Answering
from voice.pipeline.hearing import Hearing, HearingEvent, InputReset, last_voiced
from voice.pipeline.io import AudioSink
from voice.pipeline.metrics import MetricsSummary, TurnTimer
from voice.pipeline.transcription import Timed, Transcription
from voice.pipeline.turn_end import ModelTurnEnd
from voice.pipeline.turns import PlaybackLedger, TaskSet, TurnCounter, TurnWaits

if TYPE_CHECKING:
    from voice.asr.base import Transcriber
    from voice.config import Config, VadConfig
    from voice.llm.chain import Chain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveSettings:
    """What may change while a conversation runs (a realtime ``session.update``); replaced
    whole by the conversation's ``set_*`` methods, never edited in place."""

    #: The VAD parameters the endpointer runs with now.
    vad: VadConfig
    #: Turn detection is off: turns end on :meth:`TurnLifecycle.commit_input` (push-to-talk).
    manual: bool
    #: The user may interrupt the assistant by speaking.
    barge_in: bool
    #: The TTS voice (None = the engine's default).
    voice: str | None = None


class TurnLifecycle:
    """Turns and their answers for one conversation; ``hearing`` is its input side."""

    def __init__(self, cfg: Config, *, transcriber: Transcriber | None, chain: Chain, tts: Any | None,
                 sink: AudioSink | None, hearing: Hearing, settings: LiveSettings) -> None:
        self.cfg = cfg
        self.transcriber = transcriber
        self.chain = chain
        self.tts = tts if cfg.pipeline.speak else None
        self.sink = sink if cfg.pipeline.speak else None
        self.settings = settings
        self.hearing = hearing
        self.turns = TurnCounter()
        self.metrics = MetricsSummary()
        self.status: ev.Status = "listening"
        self._listeners = ev.Listeners()
        self._preemptive = cfg.pipeline.preemptive
        self._user_turn: int | None = None
        self._user_timer: TurnTimer | None = None
        self._waits = TurnWaits()
        self._pending = TaskSet()  # user turns being transcribed, cancelled answers committing
        self._bg = TaskSet()
        self._asr = Transcription(transcriber, language=cfg.asr.language, early=cfg.pipeline.early_transcribe,
                                  tasks=self._bg, on_done=self._notify)
        self._out = Answering(sink=self.sink, turns=self.turns, hearing=hearing, tasks=self._bg, pending=self._pending,
                              waits=self._waits, emit=self._emit, notify=self._notify, chain=lambda: self.chain,
                              echo_tail_s=cfg.pipeline.echo_tail_ms / 1000.0,
                              listening=lambda tid: self._set_status("listening", tid))
        self._ahead = AnswerAhead(self._bg, self._notify, run=self._out.run,
                                  make=lambda tid, text: self._new_answer(
                                      tid, text, TurnTimer(turn_id=tid, end=time.monotonic()), held=True),
                                  wanted=lambda chain: self._out.answer is None and chain is self.chain)
        self._closed = False
        self._changed = asyncio.Event()
        self._turn_end = ModelTurnEnd(cfg, hearing, self._bg, self._notify,
                                      check=settings.vad.end_of_turn == "smart_turn")

    def add_listener(self, fn: Callable[[ev.Event], None]) -> None:
        """Call ``fn(event)`` synchronously for every event (keep it quick)."""
        self._listeners.add(fn)

    def _emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            self.metrics.add(event)
        self._listeners.send(event)
        if isinstance(event, ev.PlaybackStarted) and self._out.answer is not None:
            self._set_status("speaking", event.turn_id)

    def _set_status(self, status: ev.Status, turn_id: int) -> None:
        if status != self.status:
            self.status = status
            self._emit(ev.StatusChanged(turn_id=turn_id, status=status))

    @property
    def busy(self) -> bool:
        """A user turn is being transcribed or an answer is being generated or played."""
        return bool(self._pending) or self._out.answer is not None

    @property
    def speaking(self) -> bool:
        """Answer audio is queued in the sink and not played yet."""
        return self._out.speaking

    def played(self, turn_id: int) -> PlaybackLedger | None:
        """What the current or last answer wrote to the sink (its samples and the text they
        speak), if that answer is turn ``turn_id``'s; None otherwise."""
        return self._out.played(turn_id)

    async def wait_turn(self, turn_id: int) -> None:
        """Until turn ``turn_id`` is answered, cancelled or dropped."""
        await self._waits.wait(turn_id)

    async def wait_idle(self) -> None:
        """Until no turn is being transcribed, answered or played."""
        while self.busy:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self, *_: object) -> None:
        self._changed.set()

    def _reset_input(self, *, hearing: bool = True) -> None:
        if hearing:
            self.hearing.reset()
        self._ahead.drop("input reset")
        self._asr.discard()
        if self._user_turn is not None and not self._pending:
            self._waits.end(self._user_turn)
        self._user_turn = None
        self._user_timer = None

    def on_vad(self, event: HearingEvent) -> None:
        """One event from :class:`Hearing` (or scripted, in tests)."""
        now = time.monotonic()
        if isinstance(event, SpeechStarted):
            self._begin_user_turn()
            if self.settings.vad.end_of_turn == "smart_turn":
                self._turn_end.speech_started()
        elif isinstance(event, SilenceStarted):
            if self._user_timer is not None:  # the audio ends with the first silent frame
                end = last_voiced(event.audio, event.t, audio_end=event.t + FRAME_SAMPLES / SAMPLE_RATE)
                self._user_timer.silence = self.hearing.wall_time(end)
            early, tid = self._asr.silence(event.audio), self._user_turn
            if early is not None and self._may_answer_ahead() and tid is not None:
                self._ahead.start(tid, early, self.chain)
            if self.settings.vad.end_of_turn == "smart_turn" and tid is not None:
                self._turn_end.silence_started(tid, event, self.settings.vad, lambda: self._user_turn)
        elif isinstance(event, SpeechResumed):
            if self._user_timer is not None:
                self._user_timer.silence = None
            self._ahead.drop("speech resumed")
            self._asr.discard()
        elif isinstance(event, SpeechEnded):
            if self._user_turn is None:  # e.g. an utterance cut short by muting
                self._begin_user_turn()
            if self._user_timer is not None and self._user_timer.silence is None:  # flush, max_length
                self._user_timer.silence = self.hearing.wall_time(event.t)
            self._end_user_turn(event.audio, now, event.start, event.t)
        elif isinstance(event, InputReset):  # hearing has reset itself
            self._reset_input(hearing=False)

    def _begin_user_turn(self) -> int:
        self._ahead.drop("new utterance")
        if self._out.answer is not None:
            self.interrupt("barge_in")
        tid = self.turns.next()
        self._user_turn = tid
        self._user_timer = TurnTimer(turn_id=tid, end=time.monotonic())
        self._waits.open(tid)
        self._asr.discard()
        self._emit(ev.UserSpeechStarted(turn_id=tid))
        self._set_status("listening", tid)
        return tid

    def _end_user_turn(self, audio: np.ndarray, now: float, start: float, end: float) -> None:
        tid, timer = self._user_turn, self._user_timer
        assert tid is not None and timer is not None
        timer.end = now
        self._user_turn = self._user_timer = None
        self._emit(ev.UserSpeechStopped(turn_id=tid, duration_s=max(0.0, end - start)))
        self._set_status("thinking", tid)
        vad = self.settings.vad
        tail = int((vad.min_silence_ms + vad.pre_roll_ms + 100) * SAMPLE_RATE / 1000)
        early = self._asr.take_early(int(audio.shape[0]), tail)
        if not self._ahead.covers(tid, early):
            # other audio than the early transcript's (it is transcribed again), or the early
            # transcript is not ready yet (the answer then starts from it as usual, live)
            self._ahead.drop("not the final transcript's audio")
        self._pending.spawn(self._transcribe_and_answer(tid, timer, audio, early), self._notify)

    async def commit_input(self) -> int | None:
        """Manual turn detection (push-to-talk, server without VAD): end the user's turn now
        with the audio buffered since the last commit/clear. Returns the turn id."""
        audio = self.hearing.take()
        self.clear_input()
        if audio.size == 0:
            return None
        tid = self._begin_user_turn()
        self._end_user_turn(audio, time.monotonic(), 0.0, audio.shape[0] / SAMPLE_RATE)
        return tid

    def clear_input(self) -> None:
        """Drop buffered input audio (manual mode) and any utterance in progress."""
        self.hearing.clear()
        if not self.settings.manual:
            self._reset_input()

    async def _transcribe_and_answer(self, tid: int, timer: TurnTimer, audio: np.ndarray,
                                     early: asyncio.Task[Timed] | None) -> None:
        try:
            tr, timer.asr_s, t_done = await self._asr.final(audio, early)
            timer.transcript = max(t_done, timer.end)
            text = (tr.text or "").strip()
            self._emit(ev.TranscriptFinal(turn_id=tid, text=text, language=getattr(tr, "language", None)))
            if self.turns.last != tid:
                log.info("turn %d superseded by a newer utterance before it was answered", tid)
                self._emit(ev.TurnCancelled(turn_id=tid, reason="superseded", spoken_text=""))
            elif not text:
                self._set_status("listening", tid)
            else:
                self._start_answer(tid, text, timer)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("turn %d: transcription failed: %s", tid, err, exc_info=True)
            self._emit(ev.Error(turn_id=tid, stage="asr", message=str(err)))
            self._set_status("listening", tid)
        finally:
            if self._ahead.pending_for(tid):  # not used
                self._ahead.drop("turn not answered")
            if self._out.answer is None or self._out.answer.turn_id != tid:
                self._waits.end(tid)

    async def submit_text(self, text: str) -> int:
        """A typed user turn (``--text``, the server's conversation.item.create): same chain and
        TTS path as speech. Cancels an answer in progress. Returns the turn id."""
        self._ahead.drop("typed line")
        if self._out.answer is not None:
            self.interrupt("new_turn")
        tid = self.turns.next()
        self._waits.open(tid)
        timer = TurnTimer(turn_id=tid, end=time.monotonic(), source="text")
        text = text.strip()
        self._emit(ev.TranscriptFinal(turn_id=tid, text=text, source="text"))
        if not text:
            self._waits.end(tid)
            return tid
        self._set_status("thinking", tid)
        self._start_answer(tid, text, timer)
        return tid

    async def ask(self, text: str) -> int:
        """:meth:`submit_text` and wait until the answer is played (or cancelled)."""
        tid = await self.submit_text(text)
        await self.wait_turn(tid)
        return tid

    def _new_answer(self, tid: int, text: str, timer: TurnTimer, *, held: bool = False) -> Answer:
        return Answer(tid, text, chain=self.chain, tts=self.tts, sink=self.sink, voice=self.settings.voice,
                      chunker=self.cfg.tts.chunker, queue_size=self.cfg.pipeline.queue_size, timer=timer,
                      start=self._out.out_end, emit=self._emit, far=self.hearing.far, held=held)

    def _start_answer(self, tid: int, text: str, timer: TurnTimer) -> None:
        if self._release_ahead(tid, text, timer):
            return
        self._ahead.drop("the transcript changed")
        if self._out.answer is not None:
            self.interrupt("new_turn")
        self._out.play(self._new_answer(tid, text, timer))

    # ------------------------------------------------------------------ preemptive answers

    def _may_answer_ahead(self) -> bool:
        self._ahead.drop("silence started again")
        return (self._preemptive and not self.settings.manual and self._out.answer is None
                and can_hold(self.chain))

    def _release_ahead(self, tid: int, text: str, timer: TurnTimer) -> bool:
        """The turn is confirmed with ``text``: play the answer prepared ahead, if it is for it."""
        held = self._ahead.take(tid, text, self.chain) if self._out.answer is None else None
        if held is None:
            return False
        answer, run = held
        self.chain.confirm(tid)  # memory first: the held stream's answer goes on into it
        answer.timer.adopt(timer)
        self._out.play(answer, run)
        answer.release()
        log.debug("turn %d: the answer prepared ahead is released", tid)
        return True

    def interrupt(self, reason: str = "cancelled") -> str | None:
        """Stop the current answer now: clear the sink, cancel LLM and TTS, commit to memory only
        what was played. Returns that text (None when nothing was being answered)."""
        self._ahead.drop(reason)
        return self._out.stop(reason)

    async def aclose(self, grace_s: float = 3.0) -> None:
        """Cancel everything in flight (answer, transcriptions)."""
        self._closed = True
        self.interrupt("closed")
        await TaskSet.cancel_all(grace_s, self._pending, self._bg)
        self._waits.end_all()
        self._set_status("stopped", self.turns.last)

