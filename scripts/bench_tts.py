"""TTS benchmark: JSON per engine, each measured against its own baseline in the same run.

- ``rtf``: synthesis seconds / audio seconds for a five-sentence paragraph (warm).
- ``first_audio``: a three-sentence reply fed as LLM text through the SpeechChunker and streamed:
  seconds until the first audio chunk, vs seconds for the whole reply synthesized at once
  (goal: first <= 0.3 x whole).
- ``synth`` (Piper only by default): ``voice synth`` wall time on the same input with the
  default workers (= cores) vs ``--workers 1`` (goal >= 1.7x on 2 cores). A worker is one
  single-threaded process; for context the run also times one worker whose ONNX Runtime uses
  every core (``tts.piper.threads``), i.e. what threading alone gets.

Engines that are not installed or have no weights are reported as skipped. Settings come from
the usual config (``-c FILE``, ``VOICE_TTS__...`` environment), e.g. model folders for ChatTTS.
Usage: .venv/bin/python scripts/bench_tts.py [--engines piper,chattts] [--rows 24] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.bench import cpu_name  # noqa: E402 - after the path

PARAGRAPH = (
    "The museum opens at nine in the morning and closes at six in the evening. "
    "Tickets can be bought at the entrance or online. "
    "Children under twelve enter for free when they come with an adult. "
    "The guided tour takes about an hour and starts every thirty minutes. "
    "Please leave large bags in the lockers near the main hall."
)
REPLY = (
    "Sure, the nearest pharmacy is on Maple Street, about five minutes from here on foot. "
    "It stays open until ten tonight, so you have plenty of time. "
    "If you need anything urgent after that, the hospital on the hill has a night counter."
)


async def _bench_engine(engine: Any, repeat: int) -> dict[str, Any]:
    from voice.tts.base import synthesize
    from voice.tts.chunker import SpeechChunker

    t0 = time.perf_counter()
    await engine.load()
    load_s = time.perf_counter() - t0
    await synthesize(engine, "Warm up.")

    rtfs, audio_s = [], 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        audio = await synthesize(engine, PARAGRAPH)
        took = time.perf_counter() - t0
        audio_s = len(audio) / engine.sample_rate
        rtfs.append(took / audio_s)

    firsts, wholes = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await synthesize(engine, REPLY)  # baseline: the whole reply, then play
        wholes.append(time.perf_counter() - t0)

        chunker = SpeechChunker(engine.cfg.tts.chunker) if hasattr(engine, "cfg") else SpeechChunker()
        t0 = time.perf_counter()
        first = None
        pieces = chunker.feed(REPLY) + chunker.flush()
        for piece in pieces:
            async for _chunk in engine.stream(piece):
                if first is None:
                    first = time.perf_counter() - t0
        firsts.append(first or 0.0)
    first_s, whole_s = statistics.median(firsts), statistics.median(wholes)
    return {
        "device": engine.device.device,
        "sample_rate": engine.sample_rate,
        "load_s": round(load_s, 3),
        "rtf": round(statistics.median(rtfs), 4),
        "paragraph_audio_s": round(audio_s, 2),
        "first_audio_s": round(first_s, 3),
        "whole_reply_s": round(whole_s, 3),
        "first_over_whole": round(first_s / whole_s, 3) if whole_s else None,
        "first_over_whole_goal": 0.3,
        "first_piece": pieces[0] if pieces else None,
    }


def _synth_run(inp: Path, engine: str, workers: int | None, piper_threads: int = 0) -> tuple[float, str]:
    out = inp.parent / f"out_{workers or 'default'}_{piper_threads}"
    cmd = [sys.executable, "-m", "voice", "synth", str(inp), "-o", str(out), "--engine", engine, "-q"]
    if workers:
        cmd += ["--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_TTS__ENGINE")}
    if piper_threads:
        env["VOICE_TTS__PIPER__THREADS"] = str(piper_threads)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"voice synth failed: {r.stderr.strip()[-300:]}")
    summary = r.stderr.strip().splitlines()[-1]
    return took, summary.split("; manifest")[0]


def _bench_synth(engine: str, rows: int) -> dict[str, Any]:
    from voice.synth import default_workers

    with tempfile.TemporaryDirectory() as d:
        inp = Path(d) / "rows.txt"
        sentences = PARAGRAPH.split(". ")
        inp.write_text("".join(f"Row {i}. {sentences[i % len(sentences)].rstrip('.')}.\n" for i in range(rows)))
        one_s, _ = _synth_run(inp, engine, 1)
        default_s, summary = _synth_run(inp, engine, None)
        # Context, not the goal: one worker whose ONNX Runtime uses every core's threads.
        one_all_threads_s, _ = _synth_run(inp, engine, 1, piper_threads=default_workers()) if engine == "piper" else (0.0, "")
    return {
        "rows": rows,
        "cores": default_workers(),
        "one_worker_s": round(one_s, 2),
        "default_workers_s": round(default_s, 2),
        "speedup": round(one_s / default_s, 2),
        "speedup_goal": 1.7,
        "rows_per_s_default": round(rows / default_s, 2),
        "one_worker_all_threads_s": round(one_all_threads_s, 2) or None,
        "default_vs_one_worker_all_threads": round(one_all_threads_s / default_s, 2) if one_all_threads_s else None,
        "summary": summary,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="piper,chattts,chatterbox")
    ap.add_argument("--device", default=None, help="tts.device (default: config)")
    ap.add_argument("--rows", type=int, default=48, help="rows for the voice synth comparison")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-synth", action="store_true", help="skip the voice synth comparison")
    ap.add_argument("--synth-engines", default="piper")
    args = ap.parse_args()

    from voice.config import load_config
    from voice.errors import VoiceError
    from voice.tts.base import create_engine

    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
        cfg = load_config()
        cfg.tts.fallback_to_piper = False
        if args.device:
            cfg.tts.device = args.device
        result: dict[str, Any] = {"engine": name, "machine": machine}
        try:
            engine = create_engine(cfg, name)
            result.update(asyncio.run(_bench_engine(engine, args.repeat)))
            if not args.no_synth and name in args.synth_engines.split(","):
                result["synth"] = _bench_synth(name, args.rows)
        except (VoiceError, RuntimeError) as err:
            result["skipped"] = str(err)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
