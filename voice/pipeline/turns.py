"""Sans-I/O turn bookkeeping: turn ids, stale-work checks, what was played, early transcripts.

Nothing here awaits or touches a device, so all of it is tested with scripted input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


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

    def spoken_text(self, played_samples: int) -> str:
        """The text actually heard: whole pieces played, plus the share of words of a piece
        cut in the middle (proportional to its samples played, rounded down)."""
        out: list[str] = []
        for p in self.pieces:
            if played_samples >= p.end:
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
