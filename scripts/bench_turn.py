"""The turn lifecycle's own cost: turns through :class:`~voice.pipeline.conversation.Conversation`
with instant stand-ins for the chain, TTS and ASR (no models, no devices), alternating a spoken
turn from scripted VAD events and a typed one, each to its answer written to a FileSink.

Prints JSON: wall and CPU milliseconds per turn, and end of speech -> first TTS audio.
Run: ``python scripts/bench_turn.py [--turns 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.helpers


class Chain:
    async def astream(self, user_text: str, *, turn_id: int) -> AsyncIterator[str]:
        for w in ("One two three four five six seven eight. " * 3).split():
            await asyncio.sleep(0)
            yield w + " "

    def commit_assistant(self, turn_id: int, spoken_text: str) -> None:
        pass


class Tts:
    sample_rate = 16000

    async def stream(self, text: str, **_: Any) -> AsyncIterator[Any]:
        from voice.tts.base import AudioChunk

        await asyncio.sleep(0)
        yield AudioChunk(audio=np.zeros(1600, np.float32), sample_rate=16000, text=text, index=0)


class Asr:
    async def transcribe(self, audio: np.ndarray, **_: Any) -> Any:
        from voice.asr.base import Transcript

        await asyncio.sleep(0)
        return Transcript(text="q", segments=[], language="en", duration_s=1.0, model="none", device="cpu")


def stats(xs: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(xs), 3), "mean": round(statistics.fmean(xs), 3)}


async def run(turns: int) -> dict[str, Any]:
    from tests.helpers.fakes import QuietEndpointer
    from voice.audio.vad import SpeechEnded, SpeechStarted
    from voice.config import load_config
    from voice.pipeline import events as ev
    from voice.pipeline.conversation import Conversation
    from voice.pipeline.io import FileSink

    cfg = load_config(environ={})
    cfg.pipeline.headphones = True
    conv = Conversation(cfg, transcriber=Asr(), chain=Chain(), tts=Tts(), sink=FileSink(None, 16000),  # type: ignore[arg-type]
                        endpointer=QuietEndpointer())
    metrics: list[ev.TurnMetrics] = []
    conv.add_listener(lambda e: metrics.append(e) if isinstance(e, ev.TurnMetrics) else None)
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(turns):
        t0, c0 = time.perf_counter(), time.process_time()
        if i % 2:
            await conv.ask("hello")
        else:
            conv.on_vad(SpeechStarted(t=0.0))
            tid = conv.turns.last
            conv.on_vad(SpeechEnded(t=1.0, audio=np.zeros(16000, np.float32), start=0.0))
            await conv.wait_turn(tid)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    await conv.aclose()
    first = [m.first_audio_s * 1000 for m in metrics if m.first_audio_s is not None]
    return {"turns": turns, "turn_wall_ms": stats(wall), "turn_cpu_ms": stats(cpu), "first_audio_ms": stats(first),
            "load_average": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=300)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.turns)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
