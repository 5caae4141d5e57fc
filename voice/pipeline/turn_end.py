"""End of turn by model (``vad.end_of_turn = "smart_turn"``): when silence starts, Smart Turn
(:mod:`voice.audio.smart_turn`) hears the utterance so far, in a thread; if it says the turn is
complete, hearing ends that silence after ``vad.smart_turn_silence_ms`` instead of
``vad.min_silence_ms``. Speech resuming first makes the verdict moot (hearing only shortens
the silence that began at the given time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voice.pipeline.turns import TaskSet

if TYPE_CHECKING:
    from voice.audio.smart_turn import SmartTurn
    from voice.audio.vad import SilenceStarted
    from voice.config import Config, VadConfig
    from voice.pipeline.hearing import Hearing

log = logging.getLogger(__name__)


class ModelTurnEnd:
    """The Smart Turn model, loaded on first use (``check`` now: a missing package fails here,
    not at the first silence), and its verdicts applied to ``hearing``."""

    def __init__(self, cfg: Config, hearing: Hearing, tasks: TaskSet, on_done: Callable[[asyncio.Task[Any]], object],
                 *, check: bool) -> None:
        self._cfg = cfg
        self._hearing = hearing
        self._tasks = tasks
        self._on_done = on_done
        self._model: SmartTurn | None = None
        if check:
            self.model()

    def model(self) -> SmartTurn:
        if self._model is None:
            from voice.audio.smart_turn import load_smart_turn
            from voice.models import registry_for

            self._model = load_smart_turn(registry_for(self._cfg))  # the ONNX loads on first use
        return self._model

    def speech_started(self) -> None:
        """Load the model in a thread now, so the first silence does not wait for it."""
        if not self.model().loaded:
            self._tasks.spawn(asyncio.to_thread(self.model().load), self._on_done)

    def silence_started(self, tid: int, event: SilenceStarted, vad: VadConfig, current: Callable[[], int | None]) -> None:
        """Judge the utterance so far; ``current()`` is the user turn then in progress."""
        if event.audio.size:
            self._tasks.spawn(self._judge(tid, event, vad, current), self._on_done)

    async def _judge(self, tid: int, event: SilenceStarted, vad: VadConfig, current: Callable[[], int | None]) -> None:
        p = await asyncio.to_thread(self.model().predict, event.audio)
        early = p >= vad.smart_turn_threshold and current() == tid
        if early:
            early = self._hearing.shorten_hangover(min(vad.smart_turn_silence_ms, vad.min_silence_ms), event.t)
        log.debug("smart turn: turn %d complete p=%.3f, hang-over shortened: %s", tid, p, early)
