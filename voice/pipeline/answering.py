"""The answering side of the turn lifecycle: at most one current
:class:`~voice.pipeline.answer.Answer`, played to its end or stopped.

:class:`Answering` owns the current answer and its task, where the sink's output ends (the next
answer starts there), the ledger of the current or last answer (what the realtime protocol's
``conversation.item.truncate`` reads), the memory commit of an interrupted answer (the next
answer waits for it), and until when the assistant may still be heard (the echo tail). The
lifecycle decides when an answer starts and why one stops; this class carries it out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voice.pipeline import events as ev
from voice.pipeline.answer import Answer, AnswerResult
from voice.pipeline.turns import PlaybackLedger, TaskSet, TurnCounter, TurnWaits

if TYPE_CHECKING:
    from voice.llm.chain import Chain
    from voice.pipeline.hearing import Hearing
    from voice.pipeline.io import AudioSink

log = logging.getLogger(__name__)


class Answering:
    """The current answer of one conversation. ``chain()`` is the conversation's chain now
    (memory commits go to it), ``listening(turn_id)`` sets the status back to listening;
    answers run on ``tasks``, interrupted answers' commits on ``pending``."""

    def __init__(self, *, sink: AudioSink | None, turns: TurnCounter, hearing: Hearing, echo_tail_s: float,
                 tasks: TaskSet, pending: TaskSet, waits: TurnWaits, emit: Callable[[ev.Event], None],
                 notify: Callable[..., None], chain: Callable[[], Chain], listening: Callable[[int], None]) -> None:
        self.sink = sink
        self.turns = turns
        self.hearing = hearing
        self.echo_tail_s = echo_tail_s
        self._tasks = tasks
        self._pending = pending
        self._waits = waits
        self._emit = emit
        self._notify = notify
        self._chain = chain
        self._listening = listening
        #: The answer playing now (None between answers).
        self.answer: Answer | None = None
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[Any] | None = None
        self._played: tuple[int, PlaybackLedger] | None = None  # the current or last answer's
        #: Where the last answer's output ended in the sink's counter: the next one starts there.
        self.out_end = 0
        self.audible_until = 0.0

    @property
    def speaking(self) -> bool:
        """Answer audio is queued in the sink and not played yet."""
        end = self.answer.out_end if self.answer is not None else self.out_end
        return self.sink is not None and self.sink.played_samples < end

    def audible(self) -> bool:
        """The assistant's voice may be in the microphone now: it is playing, or stopped less
        than the echo tail ago (what the device and the room still hold, or a gap between two
        sentences)."""
        now = time.monotonic()
        if self.speaking:
            self.audible_until = max(self.audible_until, now + self.echo_tail_s)
            return True
        return now < self.audible_until

    def played(self, turn_id: int) -> PlaybackLedger | None:
        """What the current or last answer wrote to the sink (its samples and the text they
        speak), if that answer is turn ``turn_id``'s; None otherwise."""
        kept = self._played
        return kept[1] if kept is not None and kept[0] == turn_id else None

    def play(self, answer: Answer, run: asyncio.Task[AnswerResult] | None = None) -> None:
        """Make ``answer`` the current one and run it (``run``: its task, already running: a
        preemptive answer released)."""
        self.turns.activate(answer.turn_id)
        self.answer = answer
        self._played = (answer.turn_id, answer.ledger)
        self._task = self._tasks.spawn(self._answer_turn(answer, run), self._notify)

    async def run(self, answer: Answer) -> AnswerResult:
        if self._commit_task is not None:  # the previous turn's memory first
            await asyncio.shield(self._commit_task)
        return await answer.run()

    async def _answer_turn(self, answer: Answer, run: asyncio.Task[AnswerResult] | None) -> None:
        result = await (run if run is not None else self.run(answer))
        if result.ended == "stopped":
            return  # stop() ended the turn
        if result.ended == "failed":
            log.warning("turn %d failed: %s", result.turn_id, result.error,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            self._emit(ev.Error(turn_id=result.turn_id, stage=result.stage, message=str(result.error)))
            answer.timer.cancelled = True
        if result.ended == "played" or result.llm_started:
            commit_spoken(self._chain(), result)
        self._finish(answer)

    def _finish(self, answer: Answer) -> None:
        tid = answer.turn_id
        answer.timer.mark("done", time.monotonic())
        self.turns.deactivate(tid)
        if self.answer is answer:
            self.answer = None
            self.out_end = answer.out_end
        self._notify()
        self.audible_until = time.monotonic() + self.echo_tail_s
        self._emit(answer.timer.to_event())
        self._listening(tid)
        self._waits.end(tid)

    def stop(self, reason: str) -> str | None:
        """Stop the current answer now: clear the sink, cancel LLM and TTS, commit to memory only
        what was played. Returns that text (None when nothing was being answered)."""
        answer, task = self.answer, self._task
        if answer is None:
            return None
        spoken = answer.stop()  # first: the output must stop at once
        self.out_end = answer.out_end
        self.hearing.output_cleared(answer.out_end)
        self.turns.deactivate(answer.turn_id)
        self.answer = self._task = None
        self._notify()
        if task is not None:
            task.cancel()
        tid = answer.turn_id
        if reason == "barge_in":
            self._emit(ev.BargeIn(turn_id=tid, played_text=spoken))
        self._emit(ev.TurnCancelled(turn_id=tid, reason=reason, spoken_text=spoken))
        answer.timer.cancelled = True
        answer.timer.mark("done", time.monotonic())
        self._emit(answer.timer.to_event())
        self.audible_until = 0.0
        # commit once the LLM stream is closed (the chain records the full answer on close)
        result = AnswerResult(tid, answer.generated, spoken, "stopped", llm_started=answer.llm_started)
        self._commit_task = self._pending.spawn(commit_when_closed(self._chain(), task, result, self._waits),
                                                self._notify)
        return spoken


def commit_spoken(chain: Chain, result: AnswerResult) -> None:
    """Memory keeps what was heard (all of it in text-only mode)."""
    try:
        chain.commit_assistant(result.turn_id, result.spoken)
    except Exception as err:
        log.warning("memory commit for turn %d failed: %s", result.turn_id, err)


async def commit_when_closed(chain: Chain, task: asyncio.Task[None] | None, result: AnswerResult,
                             waits: TurnWaits) -> None:
    """An interrupted answer's memory, once its LLM stream is closed (the chain records the full
    answer on close); then its turn is over."""
    try:
        if task is not None:
            await asyncio.wait([task], timeout=5.0)
        if result.llm_started:
            commit_spoken(chain, result)
    finally:
        waits.end(result.turn_id)
