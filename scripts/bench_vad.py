"""Cost of hearing on the event loop: :meth:`voice.pipeline.hearing.Hearing.hear` per 32 ms frame
(Silero VAD + state machine + gates), with the real Silero model, over a real speech clip.

Prints JSON: per-frame CPU and wall time in milliseconds (wall includes being preempted on a
loaded machine), the share of one core one session's hearing takes, and ``sessions_at_budget``:
how many sessions fit while hearing stays under ``--budget`` of the loop's core. Run: ``python scripts/bench_vad.py [--frames 2000] [--budget 0.25]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def stats(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {"mean": round(statistics.fmean(xs), 3), "p50": round(statistics.median(xs), 3),
            "p95": round(xs[int(0.95 * (len(xs) - 1))], 3), "max": round(xs[-1], 3)}


def main() -> int:
    from voice.audio.files import load_audio
    from voice.audio.pcm import SAMPLE_RATE
    from voice.audio.vad import FRAME_SAMPLES, Endpointer, SileroVad, load_silero_session
    from voice.config import load_config
    from voice.pipeline.hearing import Hearing, OutputFacts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=0.25, help="share of one core hearing may take")
    ap.add_argument("--clip", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
                                          / "ps_goforward.wav"))
    args = ap.parse_args()
    cfg = load_config(environ={})
    audio = load_audio(args.clip, SAMPLE_RATE)
    hearing = Hearing(cfg.pipeline, cfg.vad, endpointer=Endpointer(cfg.vad, SileroVad(load_silero_session())))
    facts = OutputFacts()
    frames = [audio[i : i + FRAME_SAMPLES] for i in range(0, audio.shape[0] - FRAME_SAMPLES, FRAME_SAMPLES)]
    for f in frames[:50]:  # warm-up
        hearing.hear(f, facts)
    wall: list[float] = []
    cpu: list[float] = []  # this thread's CPU time: what other sessions on the loop lose
    for k in range(args.frames):
        f = frames[k % len(frames)]
        t0, c0 = time.perf_counter(), time.thread_time()
        hearing.hear(f, facts)
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    frame_ms = FRAME_SAMPLES * 1000 / SAMPLE_RATE
    cpu_mean = statistics.fmean(cpu)
    out = {
        "frames": len(cpu),
        "frame_ms": frame_ms,
        "hear_cpu_ms": stats(cpu),
        "hear_wall_ms": stats(wall),
        "core_share_per_session": round(cpu_mean / frame_ms, 4),
        "budget_core_share": args.budget,
        "sessions_at_budget": int(args.budget * frame_ms / cpu_mean) if cpu_mean > 0 else None,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
