"""Playback progress pushed to waiters: the wall-clock sinks (file, socket) and the polling
fallback for a sink that cannot tell (the Speaker's own test is in test_audio_io)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voice.pipeline.io import FileSink, PlaybackProgress, WallClock, wait_played

SR = 16000


async def test_a_waiter_wakes_when_the_wall_clock_reaches_its_sample() -> None:
    clock = WallClock(SR)
    clock.add(SR)  # one second handed over: the clock starts
    t0 = time.monotonic()
    played = await asyncio.wait_for(clock.wait_played(SR // 4), 2)
    took = time.monotonic() - t0
    assert played >= SR // 4
    assert 0.24 < took < 0.6, took
    assert clock.played < SR  # the rest has not played yet


async def test_with_nothing_queued_a_waiter_waits_for_more_audio() -> None:
    clock = WallClock(SR)
    waiter = asyncio.create_task(clock.wait_played(SR // 10))
    await asyncio.sleep(0.2)
    assert not waiter.done()  # nothing to play: no progress, no busy loop
    clock.add(SR // 5)
    assert await asyncio.wait_for(waiter, 1) >= SR // 10


async def test_a_clear_wakes_waiters_at_once() -> None:
    clock = WallClock(SR)
    clock.add(5 * SR)
    waiter = asyncio.create_task(clock.wait_played(5 * SR))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    dropped = clock.clear()
    played = await asyncio.wait_for(waiter, 1)
    assert time.monotonic() - t0 < 0.05
    assert played < SR and dropped + played == 5 * SR


async def test_file_sink_realtime_and_instant() -> None:
    sink = FileSink(None, SR, realtime=True)
    assert isinstance(sink, PlaybackProgress)
    await sink.write(np.zeros(SR // 2, np.float32))
    t0 = time.monotonic()
    assert await asyncio.wait_for(sink.wait_played(SR // 2), 2) >= SR // 2
    assert 0.45 < time.monotonic() - t0 < 0.9
    instant = FileSink(None, SR)
    await instant.write(np.zeros(SR, np.float32))
    assert await asyncio.wait_for(instant.wait_played(SR), 0.05) == SR


class CountingSink:
    """A sink from elsewhere: no wait_played, only the counter."""

    sample_rate = SR

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def played_samples(self) -> int:
        return int((time.monotonic() - self.t0) * SR)

    async def write(self, chunk: np.ndarray) -> None:
        pass

    def clear(self) -> int:
        return 0


async def test_a_sink_without_progress_is_polled() -> None:
    sink = CountingSink()
    assert not isinstance(sink, PlaybackProgress)
    assert await asyncio.wait_for(wait_played(sink, SR // 5), 2) >= SR // 5
