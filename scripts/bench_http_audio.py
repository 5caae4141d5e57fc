#!/usr/bin/env python3
"""OpenAI audio API over HTTP vs the engines called directly, in one run. Prints JSON.

Starts ``voice serve`` in this process (loopback, a free port, the default Whisper model and
Piper voice; the small SmolLM2 as LLM since no answer is asked for) and, alternating the two
ways clip by clip so both see the same load:

- transcription real-time factor (processing seconds / audio seconds) of the real clips in
  ../shared/data/speech: ``client.audio.transcriptions.create(model="whisper-1")`` (upload,
  decode, Whisper, JSON) vs ``load_audio`` + ``transcribe_sync`` on the server's own transcriber;
- speech first-byte time: ``client.audio.speech.with_streaming_response.create(model="tts-1",
  voice="alloy")`` until the first body bytes vs the engine's first chunk (``tts.stream``).

    .venv/bin/python scripts/bench_http_audio.py [--rounds 3] [--formats wav,mp3] > bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.bench import cpu_name  # noqa: E402 - after the path

TEXTS = (
    "Turn on the lights in the kitchen, please.",
    "The weather tomorrow will be sunny with a light breeze from the west, and a high of twenty degrees.",
    "Sure. I have added milk, eggs and bread to your shopping list. Is there anything else you need?",
)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="passes over the clips and texts (default 3)")
    ap.add_argument("--formats", default="wav,mp3", help="speech formats to time (default wav,mp3)")
    ap.add_argument("--speech-dir", default=str(ROOT.parent / "shared" / "data" / "speech"))
    args = ap.parse_args()

    from openai import OpenAI

    from tests.helpers.server import server_config, start_server
    from voice.audio.files import load_audio

    load_before = load_avg()
    speech_dir = Path(args.speech_dir)
    with (speech_dir / "transcripts.tsv").open(newline="") as fh:
        clips = [speech_dir / row["file"] for row in csv.DictReader(fh, delimiter="\t")]
    tmp = Path(tempfile.mkdtemp(prefix="voice-bench-http-"))
    running, shutdown = start_server(server_config(tmp))
    try:
        res = running.server.resources
        client = OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key="unused", timeout=300)
        # warm both paths once
        with clips[0].open("rb") as fh:
            client.audio.transcriptions.create(model="whisper-1", file=fh)
        res.transcriber.transcribe_sync(load_audio(clips[0], 16000))

        asr: dict[str, list[float]] = {"http": [], "direct": []}
        audio_s = 0.0
        def direct_asr(clip: Path) -> tuple[float, float]:
            t0 = time.perf_counter()
            audio = load_audio(clip, 16000)
            res.transcriber.transcribe_sync(audio)
            return time.perf_counter() - t0, len(audio) / 16000

        def http_asr(clip: Path) -> float:
            t0 = time.perf_counter()
            with clip.open("rb") as fh:
                client.audio.transcriptions.create(model="whisper-1", file=fh)
            return time.perf_counter() - t0

        for n in range(args.rounds):
            for i, clip in enumerate(clips):
                if (n + i) % 2:
                    http = http_asr(clip)
                    direct, duration = direct_asr(clip)
                else:
                    direct, duration = direct_asr(clip)
                    http = http_asr(clip)
                asr["direct"].append(direct / duration)
                asr["http"].append(http / duration)
                audio_s += duration

        async def engine_first_chunk(text: str) -> float:
            # the whole stream is consumed (as the HTTP responses are) so that no synthesis
            # of one measurement runs on into the next
            t0 = time.perf_counter()
            first = None
            async for _ in res.tts.stream(text):
                first = first or time.perf_counter() - t0
            assert first is not None
            return first

        def http_first_byte(text: str, fmt: str) -> float:
            t0 = time.perf_counter()
            first = None
            with client.audio.speech.with_streaming_response.create(
                    model="tts-1", voice="alloy", input=text, response_format=fmt) as r:  # type: ignore[arg-type]
                for piece in r.iter_bytes(1024):
                    if piece and first is None:
                        first = time.perf_counter() - t0
            assert first is not None
            return first

        tts: dict[str, list[float]] = {"direct": []}
        formats = [f for f in args.formats.split(",") if f]
        for fmt in formats:
            tts[f"http_{fmt}"] = []
        ways = ["direct", *formats]
        for n in range(args.rounds):
            for i, text in enumerate(TEXTS):
                k = (n + i) % len(ways)
                for way in ways[k:] + ways[:k]:  # the order rotates: none always goes first
                    if way == "direct":
                        tts["direct"].append(asyncio.run(engine_first_chunk(text)))
                    else:
                        tts[f"http_{way}"].append(http_first_byte(text, way))

        asr_http, asr_direct = median(asr["http"]), median(asr["direct"])
        out: dict[str, Any] = {
            "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores",
            "load_before": load_before,
            "asr_model": res.transcriber.model_name,
            "tts": f"{res.tts.name} {res.tts.default_voice}" if hasattr(res.tts, "default_voice") else res.tts.name,
            "clips": len(clips), "rounds": args.rounds, "audio_s": round(audio_s, 1),
            "transcription_rtf": {"http_median": asr_http, "direct_median": asr_direct,
                                  "ratio_http_over_direct": round(asr_http / asr_direct, 3)},
            "speech_first_byte_s": {"direct_first_chunk_median": median(tts["direct"]),
                                    **{f"{k}_median": median(v) for k, v in tts.items() if k != "direct"},
                                    **{f"ratio_{k}_over_direct": round(median(v) / median(tts["direct"]), 3)
                                       for k, v in tts.items() if k != "direct"}},
        }
        out["load_after"] = load_avg()
        print(json.dumps(out, indent=2))
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
