"""Turn bookkeeping: turn ids, stale-work checks, what was played, early transcripts, and the
two small asyncio helpers the lifecycle keeps its waits and tasks in.

Nothing here touches a device, so all of it is tested with scripted input.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class TurnCounter:
    """Hands out turn ids and knows which response is current.

    A response belongs to one turn; when the turn is cancelled (barge-in, a new turn) its id is
    no longer ``active`` and every stage that checks :meth:`is_stale` drops its work.
    """

    def __init__(self) -> None:
        self._last = 0
        self.active: int | None = None

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        self._last += 1
        return self._last

    def activate(self, turn_id: int) -> None:
        self.active = turn_id

    def deactivate(self, turn_id: int) -> bool:
        """Mark ``turn_id`` finished or cancelled; False if it was not the active one."""
        if self.active != turn_id:
            return False
        self.active = None
        return True

    def is_stale(self, turn_id: int) -> bool:
        return self.active != turn_id


@dataclass
class _Piece:
    start: int
    end: int
    text: str


@dataclass
class PlaybackLedger:
    """Maps output samples back to the text they speak.

    Positions count samples written to the sink since it opened (the same counter as the
    sink's ``played_samples``). ``start`` is where this turn's first sample goes.
    """

    start: int
    pieces: list[_Piece] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.pieces[-1].end if self.pieces else self.start

    @property
    def written(self) -> int:
        return self.end - self.start

    def add(self, samples: int, text: str) -> None:
        if samples <= 0:
            return
        self.pieces.append(_Piece(self.end, self.end + samples, text))

    def played(self, played_samples: int) -> int:
        """Samples of this turn already played, given the sink's counter."""
        return max(0, min(played_samples, self.end) - self.start)

    def started(self, played_samples: int) -> bool:
        return self.played(played_samples) > 0

    def finished(self, played_samples: int) -> bool:
        return played_samples >= self.end

    def full_text(self) -> str:
        return _join(p.text for p in self.pieces)

    def spoken_text(self, played_samples: int, *, whole_started: bool = False) -> str:
        """The text actually heard: whole pieces played, plus the share of words of a piece
        cut in the middle (proportional to its samples played, rounded down). This is the one
        rule from played audio to spoken text; ``whole_started``: a piece cut in the middle
        counts whole (a realtime client's ``conversation.item.truncate``: it names where it
        stopped playing, and a started sentence was heard)."""
        out: list[str] = []
        for p in self.pieces:
            if played_samples >= p.end or (whole_started and played_samples > p.start):
                out.append(p.text)
                continue
            if played_samples > p.start:
                frac = (played_samples - p.start) / (p.end - p.start)
                words = p.text.split()
                n = int(len(words) * frac)
                if n:
                    out.append(" ".join(words[:n]))
            break
        return _join(out)


def _join(parts: Iterable[str]) -> str:
    return " ".join(s.strip() for s in parts if s.strip())


@dataclass
class EarlyTranscript:
    """Bookkeeping for transcription started during the silence hang-over.

    ``begin(samples)`` when silence starts (a job for the first ``samples`` of the utterance);
    ``discard()`` when speech resumes; at the end of the utterance ``usable(total, tail)`` says
    whether that job covers the utterance: nothing but the hang-over (at most ``tail`` samples)
    came after it.
    """

    samples: int | None = None
    generation: int = 0

    def begin(self, samples: int) -> int:
        self.generation += 1
        self.samples = samples
        return self.generation

    def discard(self) -> None:
        self.generation += 1
        self.samples = None

    def usable(self, total_samples: int, tail_samples: int) -> bool:
        if self.samples is None:
            return False
        return 0 <= total_samples - self.samples <= tail_samples

    def current(self, generation: int) -> bool:
        return generation == self.generation and self.samples is not None


class TurnWaits:
    """One future per turn, done when the turn is answered, cancelled or dropped (the last 50 kept)."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._done: dict[int, asyncio.Future[None]] = {}

    def open(self, turn_id: int) -> asyncio.Future[None]:
        fut = self._done.get(turn_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[turn_id] = fut
            for old in [k for k, f in self._done.items() if f.done()][: -self.keep]:
                del self._done[old]
        return fut

    def end(self, turn_id: int) -> None:
        fut = self._done.get(turn_id)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def end_all(self) -> None:
        for turn_id in list(self._done):
            self.end(turn_id)

    async def wait(self, turn_id: int) -> None:
        """Cancelling this wait is safe: the turn's future is shielded."""
        await asyncio.shield(self.open(turn_id))


class TaskSet:
    """Tasks kept until done (so none is garbage-collected mid-run); failures are logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], on_done: Callable[[asyncio.Task[Any]], object]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(on_done)
        task.add_done_callback(_log_failure)
        return task

    @staticmethod
    async def cancel_all(grace_s: float, *sets: TaskSet) -> None:
        """Cancel every task of ``sets`` and wait at most ``grace_s`` for them to end."""
        tasks = [t for s in sets for t in s._tasks]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("pipeline task failed: %r", task.exception())
