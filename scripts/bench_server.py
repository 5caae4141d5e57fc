#!/usr/bin/env python3
"""Load test of `voice serve` on loopback: N concurrent sessions each speak T turns (a real clip,
streamed at real time as base64 PCM16 24 kHz); compare time to first audio (speech_stopped ->
first reply audio) against a single session in the same run. Prints JSON.

    .venv/bin/python scripts/bench_server.py --sessions 8 --turns 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
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


async def session(url: str, pcm: bytes, turns: int, out: list[float], fails: list[str],
                  stages: list[dict] | None = None) -> None:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.recv()
        for _ in range(turns):

            async def feed() -> None:
                for i in range(0, len(pcm), 4800):  # 100 ms at real time
                    await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(pcm[i:i + 4800]).decode()}))
                    await asyncio.sleep(0.1)

            feeder = asyncio.create_task(feed())
            try:
                await asyncio.wait_for(_turn(ws, out, fails, stages), timeout=180)
            except TimeoutError:
                fails.append("turn timed out")
            feeder.cancel()


async def _turn(ws, out: list[float], fails: list[str], stages: list[dict] | None) -> None:
    stopped = first = None
    while True:
        m = json.loads(await ws.recv())
        t = m["type"]
        if t == "input_audio_buffer.speech_stopped":
            stopped = time.monotonic()
        elif t == "response.output_audio.delta" and first is None and stopped is not None:
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


async def run(args: argparse.Namespace) -> dict:
    from tests.helpers.server import server_config, speech_24k, start_server

    clip = str(ROOT.parent / "shared" / "data" / "speech" / args.clip)
    audio = speech_24k(clip, silence_s=1.5)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = server_config(Path(tmp))
        cfg.llm.max_tokens = args.max_tokens
        cfg.llm.timeout_s = 120.0
        if args.llm_slots:
            cfg.llm.embedded.parallel = args.llm_slots
        running, shutdown = start_server(cfg)
        try:
            fails: list[str] = []
            # one warm-up turn (not counted): first requests pay one-off costs (caches, allocations)
            await session(running.url, pcm, 1, [], fails)
            single: list[float] = []
            single_stages: list[dict] = []
            t0 = time.monotonic()
            await session(running.url, pcm, args.turns, single, fails, single_stages)
            t_single = time.monotonic() - t0
            many: list[float] = []
            many_stages: list[dict] = []
            t0 = time.monotonic()
            await asyncio.gather(*(session(running.url, pcm, args.turns, many, fails, many_stages)
                                   for _ in range(args.sessions)))
            t_many = time.monotonic() - t0
            slots = cfg.llm.embedded.parallel
        finally:
            shutdown()
    p95_single, p95_many = pct(single, 0.95), pct(many, 0.95)
    return {
        "benchmark": "server_time_to_first_audio",
        "clip": args.clip,
        "llm": "smollm2-135m-instruct", "asr": "whisper-tiny.en", "tts": "piper-joe-medium",
        "single": {"sessions": 1, "turns": len(single), "p50_s": pct(single, 0.5), "p95_s": p95_single,
                   "mean_s": round(statistics.mean(single), 3) if single else None, "wall_s": round(t_single, 1),
                   "stage_p50_ms": stage_medians(single_stages)},
        "concurrent": {"sessions": args.sessions, "turns": len(many), "p50_s": pct(many, 0.5), "p95_s": p95_many,
                       "mean_s": round(statistics.mean(many), 3) if many else None, "wall_s": round(t_many, 1),
                       "stage_p50_ms": stage_medians(many_stages)},
        "llm_slots": slots, "warmup_turns": 1,
        "p95_ratio": round(p95_many / p95_single, 2) if p95_single and p95_many else None,
        "goal_p95_ratio": 2.0,
        "failures": fails,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--clip", default="ps_goforward.wav")
    ap.add_argument("--max-tokens", type=int, default=30)
    ap.add_argument("--llm-slots", type=int, default=0, help="llm.embedded.parallel (0 = the config's)")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
