#!/usr/bin/env python3
"""Load test of `voice serve` on loopback: N concurrent sessions each speak T turns (a real clip,
streamed at real time as base64 PCM16 24 kHz); compare time to first audio (speech_stopped ->
first reply audio) against a single session in the same run. Prints JSON.

Two concurrent runs: "synchronized" (all sessions start together, so all stop speaking at the same
instant: the worst case) and, unless ``--stagger none``, "staggered" (session i starts at an offset
spread over one turn cycle of the single session, evenly or at seeded random offsets), closer to
users who do not talk in unison. ``--listen``: each simulated user listens to the whole reply
(its audio length, at real time) before speaking again; without it a session speaks its next
turn as soon as the reply has been sent (more load than real users give). ``cpu_busy`` is the
fraction of all cores busy during a run (/proc/stat, whole machine).

    .venv/bin/python scripts/bench_server.py --sessions 8 --turns 3 [--stagger random --seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(q * (len(v) - 1))))], 3)


def stage_medians(metrics: list[dict]) -> dict[str, float | None]:
    """Median of each stage latency reported in voice.metrics (ms)."""
    keys = ("asr_ms", "transcript_ms", "llm_first_token_ms", "first_token_ms", "tts_first_chunk_ms", "first_audio_ms",
            "voice_to_voice_ms")
    out: dict[str, float | None] = {}
    for k in keys:
        vals = [float(m[k]) for m in metrics if m.get(k) is not None]
        out[k] = round(statistics.median(vals), 1) if vals else None
    return out


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def busy_since(start: tuple[int, int]) -> float | None:
    busy, total = cpu_jiffies()
    return round((busy - start[0]) / (total - start[1]), 2) if total > start[1] else None


async def session(url: str, pcm: bytes, turns: int, out: list[float], fails: list[str],
                  stages: list[dict] | None = None, delay: float = 0.0, listen: bool = False) -> None:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.recv()
        await asyncio.sleep(delay)  # connected, silent until this session's first turn
        for _ in range(turns):

            async def feed() -> None:
                for i in range(0, len(pcm), 4800):  # 100 ms at real time
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(pcm[i:i + 4800]).decode()}))
                    await asyncio.sleep(0.1)

            feeder = asyncio.create_task(feed())
            reply_s = 0.0
            try:
                reply_s = await asyncio.wait_for(_turn(ws, out, fails, stages), timeout=180)
            except TimeoutError:
                fails.append("turn timed out")
            feeder.cancel()
            if listen:
                await asyncio.sleep(reply_s)


async def _turn(ws, out: list[float], fails: list[str], stages: list[dict] | None) -> float:
    """One turn; returns the reply's audio length (s, PCM16 24 kHz)."""
    stopped = first = None
    reply_bytes = 0
    while True:
        m = json.loads(await ws.recv())
        t = m["type"]
        if t == "input_audio_buffer.speech_stopped":
            stopped = time.monotonic()
        elif t == "response.output_audio.delta":
            reply_bytes += len(m.get("delta", "")) * 3 // 4
            if first is None and stopped is not None:
                first = time.monotonic() - stopped
        elif t == "error":
            fails.append(m["error"]["message"])
        elif t == "voice.metrics":
            if stages is not None:
                stages.append(m["metrics"])
            break
    if first is None:
        fails.append("no audio")
    else:
        out.append(first)
    return reply_bytes / 2 / 24000


async def run(args: argparse.Namespace) -> dict:
    from tests.helpers.server import server_config, speech_24k, start_server

    clip = str(ROOT.parent / "shared" / "data" / "speech" / args.clip)
    audio = speech_24k(clip, silence_s=1.5)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = server_config(Path(tmp))
        cfg.llm.max_tokens = args.max_tokens
        cfg.llm.timeout_s = 120.0
        if args.live_window is not None:
            cfg.asr.live_window_s = args.live_window
        if args.llm_slots:
            cfg.llm.embedded.parallel = args.llm_slots
        running, shutdown = start_server(cfg)
        try:
            fails: list[str] = []
            # one warm-up turn (not counted): first requests pay one-off costs (caches, allocations)
            await session(running.url, pcm, 1, [], fails)

            async def measure(delays: list[float]) -> Run:
                """One session per delay, all started now; each waits its delay, then speaks."""
                r = Run()
                t0, j0 = time.monotonic(), cpu_jiffies()
                await asyncio.gather(*(session(running.url, pcm, args.turns, r.first_audio, fails, r.stages,
                                               delay=d, listen=args.listen) for d in delays))
                r.wall_s, r.cpu_busy = time.monotonic() - t0, busy_since(j0)
                return r

            single = await measure([0.0])
            many = await measure([0.0] * args.sessions)
            cycle_s = single.wall_s / max(1, args.turns)
            offsets = stagger_offsets(args.stagger, args.sessions, cycle_s, args.seed)
            stag = await measure(offsets) if offsets is not None else None
            slots = cfg.llm.embedded.parallel
        finally:
            shutdown()
    p95_single = pct(single.first_audio, 0.95)

    def ratio(r: Run | None) -> float | None:
        p95 = pct(r.first_audio, 0.95) if r is not None else None
        return round(p95 / p95_single, 2) if p95_single and p95 else None

    return {
        "benchmark": "server_time_to_first_audio",
        "clip": args.clip,
        "llm": "smollm2-135m-instruct", "asr": "whisper-tiny.en", "tts": "piper-joe-medium",
        "single": {"sessions": 1, **single.summary()},
        "concurrent": {"sessions": args.sessions, "start": "synchronized", **many.summary()},
        "staggered": None if offsets is None or stag is None else {
            "sessions": args.sessions, "start": args.stagger, "seed": args.seed, "cycle_s": round(cycle_s, 2),
            "offsets_s": [round(d, 2) for d in offsets], **stag.summary()},
        "llm_slots": slots, "warmup_turns": 1, "listen": args.listen, "cores": len(os.sched_getaffinity(0)),
        "asr_live_window_s": cfg.asr.live_window_s,
        "p95_ratio": ratio(many),
        "p95_ratio_staggered": ratio(stag),
        "goal_p95_ratio": 2.0,
        "failures": fails,
    }


@dataclass
class Run:
    """One measured run: time to first audio of every turn, stage metrics, wall time, CPU use."""

    first_audio: list[float] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_busy: float | None = None

    def summary(self) -> dict:
        fa = self.first_audio
        return {"turns": len(fa), "p50_s": pct(fa, 0.5), "p95_s": pct(fa, 0.95),
                "mean_s": round(statistics.mean(fa), 3) if fa else None, "wall_s": round(self.wall_s, 1),
                "cpu_busy": self.cpu_busy, "stage_p50_ms": stage_medians(self.stages)}


def stagger_offsets(how: str, sessions: int, cycle_s: float, seed: int) -> list[float] | None:
    """Start offsets (s) of the staggered run, spread over one turn cycle; None = no staggered run."""
    if how == "none":
        return None
    if how == "even":
        return [i * cycle_s / sessions for i in range(sessions)]
    rng = random.Random(seed)
    return sorted(rng.uniform(0.0, cycle_s) for _ in range(sessions))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--clip", default="ps_goforward.wav")
    ap.add_argument("--max-tokens", type=int, default=30)
    ap.add_argument("--llm-slots", type=int, default=0, help="llm.embedded.parallel (0 = the config's)")
    ap.add_argument("--stagger", choices=("random", "even", "none"), default="random",
                    help="also run the sessions with start offsets spread over one turn cycle (default: random)")
    ap.add_argument("--listen", action="store_true",
                    help="each user listens to the whole reply (real time) before speaking again")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random offsets")
    ap.add_argument("--live-window", type=float, default=None,
                    help="asr.live_window_s for this run (default: the config's; 30 = stock Whisper)")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
