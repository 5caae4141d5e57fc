"""A user turn's speech to text, with the early start: transcription begins when the user falls
silent (during the VAD's hang-over) and is used at the end of the turn if nothing but the
hang-over came after it; otherwise the whole utterance is transcribed again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.pipeline.turns import EarlyTranscript, TaskSet

if TYPE_CHECKING:
    from voice.asr.base import Transcriber

log = logging.getLogger(__name__)

#: (transcript, seconds the ASR took, when it finished)
Timed = tuple[Any, float, float]


class Transcription:
    """``silence(audio)`` starts the early job, ``discard()`` drops it (speech resumed),
    ``take_early(total, tail)`` hands it over at the end of the turn, ``final()`` awaits the text."""

    def __init__(self, transcriber: Transcriber | None, *, language: str | None, early: bool, tasks: TaskSet,
                 on_done: Callable[[asyncio.Task[Any]], object]) -> None:
        self.transcriber = transcriber
        self.language = language
        self.early = early
        self._tasks = tasks
        self._on_done = on_done
        self._book = EarlyTranscript()
        self._task: asyncio.Task[Timed] | None = None
        self._gen = -1

    def silence(self, audio: np.ndarray) -> asyncio.Task[Timed] | None:
        """Start the early job (returned; None when there is none)."""
        if self.transcriber is None or audio.size == 0 or not self.early:
            return None
        self._gen = self._book.begin(int(audio.shape[0]))
        self._task = self._tasks.spawn(self.timed(audio), self._on_done)
        return self._task

    def discard(self) -> None:
        self._book.discard()

    def take_early(self, total_samples: int, tail_samples: int) -> asyncio.Task[Timed] | None:
        """The early job if it covers the utterance (then forgotten here), else None."""
        task, self._task = self._task, None
        usable = self._book.usable(total_samples, tail_samples) and self._book.current(self._gen)
        self._book.discard()
        return task if task is not None and usable else None

    async def timed(self, audio: np.ndarray) -> Timed:
        if self.transcriber is None:
            raise RuntimeError("no transcriber")
        t0 = time.monotonic()
        tr = await self.transcriber.transcribe(audio, live=True, language=self.language)
        t1 = time.monotonic()
        return tr, t1 - t0, t1

    async def final(self, audio: np.ndarray, early: asyncio.Task[Timed] | None) -> Timed:
        """The early job's result, or (it failed or there is none) a transcription of ``audio``."""
        if early is not None:
            try:
                return await early
            except Exception:
                log.warning("early transcription failed; transcribing again", exc_info=True)
        return await self.timed(audio)
