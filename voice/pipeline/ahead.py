"""The preemptive answer (``pipeline.preemptive``): at most one answer prepared ahead of the
VAD's hang-over, held, and then released to the turn lifecycle or dropped without a trace.

When silence starts, :meth:`AnswerAhead.start` waits for the early transcript and runs a *held*
:class:`~voice.pipeline.answer.Answer` for it (LLM, chunker and TTS run; nothing reaches the
sink, the listeners or memory). At the end of the turn :meth:`AnswerAhead.take` hands it over
if it answers the final transcript and has not failed; :meth:`AnswerAhead.drop` throws it
away: the answer is stopped before it wrote anything, the chain forgets the tentative turn and
the LLM request is aborted as its task is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice.pipeline.turns import TaskSet

if TYPE_CHECKING:
    from voice.llm.chain import Chain
    from voice.pipeline.answer import Answer, AnswerResult
    from voice.pipeline.transcription import Timed

log = logging.getLogger(__name__)


@dataclass
class _Ahead:
    turn_id: int
    early: asyncio.Task[Timed]
    chain: Chain
    waiter: asyncio.Task[None] | None = None
    text: str = ""
    answer: Answer | None = None
    run: asyncio.Task[AnswerResult] | None = field(default=None, repr=False)


def can_hold(chain: Any) -> bool:
    """A chain that can keep a turn tentative (``astream(tentative=True)``, confirm, discard)."""
    return callable(getattr(chain, "confirm", None)) and callable(getattr(chain, "discard", None))


class AnswerAhead:
    """At most one held answer. ``make(turn_id, text)`` builds it, ``run(answer)`` runs it (on
    ``tasks``); ``wanted(chain)`` says, when its transcript is ready, whether it is still worth
    starting (no answer is playing and the chain is still that one)."""

    def __init__(self, tasks: TaskSet, on_done: Callable[[asyncio.Task[Any]], object], *,
                 make: Callable[[int, str], Answer], run: Callable[[Answer], Coroutine[Any, Any, AnswerResult]],
                 wanted: Callable[[Chain], bool]) -> None:
        self._tasks = tasks
        self._on_done = on_done
        self._make = make
        self._run = run
        self._wanted = wanted
        self._ahead: _Ahead | None = None

    @property
    def held(self) -> _Ahead | None:
        """The answer prepared ahead (None when there is none)."""
        return self._ahead

    def start(self, turn_id: int, early: asyncio.Task[Timed], chain: Chain) -> None:
        """Silence started and ``early`` transcribes the utterance: prepare its answer, held."""
        self.drop("silence started again")
        ahead = self._ahead = _Ahead(turn_id, early, chain)
        ahead.waiter = self._tasks.spawn(self._hold(ahead), self._on_done)

    async def _hold(self, ahead: _Ahead) -> None:
        await asyncio.wait([ahead.early])  # not cancelling it with us: the turn's end may use it
        if ahead.early.cancelled() or ahead.early.exception() is not None:
            return
        text = (ahead.early.result()[0].text or "").strip()
        if not text or self._ahead is not ahead or not self._wanted(ahead.chain):
            return
        ahead.text, ahead.answer = text, self._make(ahead.turn_id, text)
        ahead.run = self._tasks.spawn(self._run(ahead.answer), self._on_done)
        log.debug("turn %d: answering ahead of the hang-over: %r", ahead.turn_id, text)

    def covers(self, turn_id: int, early: asyncio.Task[Timed] | None) -> bool:
        """The held answer (if any) is for this turn's final audio: ``early`` is its transcript
        and the answer has started."""
        a = self._ahead
        return a is None or (a.turn_id == turn_id and a.answer is not None and a.early is early)

    def pending_for(self, turn_id: int) -> bool:
        return self._ahead is not None and self._ahead.turn_id == turn_id

    def take(self, turn_id: int, text: str, chain: Chain) -> tuple[Answer, asyncio.Task[AnswerResult]] | None:
        """The turn is confirmed with ``text``: the held answer and its running task, if it is
        for exactly that, on that chain, and has not failed (then it is forgotten here)."""
        a = self._ahead
        if a is None or a.turn_id != turn_id or a.text != text or a.answer is None or a.run is None:
            return None
        if a.run.done() and (a.run.cancelled() or a.run.exception() is not None
                             or a.run.result().ended != "played"):
            return None  # it failed: answer again, live
        if a.chain is not chain:
            return None
        self._ahead = None
        return a.answer, a.run

    def drop(self, why: str) -> None:
        """Throw the held answer away: nothing was played, memory forgets it, the LLM stream is
        closed (the request aborted) as its task is cancelled."""
        a, self._ahead = self._ahead, None
        if a is None:
            return
        if a.waiter is not None:
            a.waiter.cancel()
        if a.answer is not None:
            a.answer.stop()  # it wrote nothing: the sink is not touched
            with contextlib.suppress(Exception):
                a.chain.discard(a.turn_id)
        if a.run is not None:
            a.run.cancel()
        log.debug("turn %d: the answer prepared ahead is dropped (%s)", a.turn_id, why)
