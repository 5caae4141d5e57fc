"""Model-free stand-ins shared by the turn-engine tests and scripts/bench_turn.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np


async def until(pred: Callable[[], Any], limit_s: float = 10.0) -> None:
    """Wait (polling every 10 ms) until ``pred()`` is true; fail after ``limit_s``."""
    for _ in range(int(limit_s / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


class QuietEndpointer:
    """Hears nothing: the caller scripts the VAD's events itself."""

    def process(self, chunk: np.ndarray) -> list[Any]:
        return []

    def flush(self) -> list[Any]:
        return []

    def reset(self) -> None:
        pass

    def set_min_speech_ms(self, ms: float) -> None:
        pass
