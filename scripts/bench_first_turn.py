#!/usr/bin/env python3
"""The first turn after start-up vs the median of the later turns, warm-up off and on, as JSON.

Each mode starts the stack afresh as ``voice chat --text`` does (build_stack: LLM, Piper, no
Whisper), waits ``--delay`` seconds (the user starting to talk), then asks ``--turns`` typed
questions in one conversation (memory kept, so later turns have a cached history, as in a
chat), each answered and spoken (Piper into a file sink). Per turn: end of the typed turn ->
first LLM token and -> first TTS audio, and llama.cpp's prompt tokens evaluated / cached.

    .venv/bin/python scripts/bench_first_turn.py [--turns 6] [--delay 5] [--max-tokens 40] [--modes off,on] [--out FILE]

``ratio`` = first turn / median of turns 2..N (target: at most 1.3 with the warm-up on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.bench import emit_json  # noqa: E402 - after the path

QUESTIONS = [
    "What is a good name for a cat?",
    "How long should I boil an egg?",
    "Why is the sky blue?",
    "What can I cook with rice and beans?",
    "How far away is the moon?",
    "What is a quick way to fall asleep?",
    "Why do leaves change colour in autumn?",
    "How many legs does a spider have?",
]


async def run_mode(warm: bool, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from voice.config import load_config
    from voice.pipeline import events as ev
    from voice.pipeline.conversation import Conversation
    from voice.pipeline.io import FileSink
    from voice.pipeline.stack import build_stack

    cfg = load_config()
    cfg.general.data_dir = str(tmp / "data")
    cfg.rag.enabled = False
    cfg.llm.temperature = 0.0
    cfg.llm.max_tokens = args.max_tokens
    cfg.llm.embedded.warm_up = warm
    t0 = time.perf_counter()
    stack = await build_stack(cfg, kb=None, need_asr=False)
    ready_s = time.perf_counter() - t0
    await asyncio.sleep(args.delay)
    sink = FileSink(None, stack.tts.sample_rate)
    conv = Conversation(cfg, transcriber=None, chain=stack.chain, tts=stack.tts, sink=sink)
    metrics: list[ev.TurnMetrics] = []
    conv.add_listener(lambda e: metrics.append(e) if isinstance(e, ev.TurnMetrics) else None)
    questions = (QUESTIONS * (args.turns // len(QUESTIONS) + 1))[: args.turns]
    for q in questions:
        await conv.ask(q)
    await conv.aclose()
    await stack.aclose()
    turns = [{"first_token_s": m.first_token_s, "first_audio_s": m.first_audio_s,
              "llm_prompt_tokens": m.llm_prompt_tokens, "llm_cached_tokens": m.llm_cached_tokens,
              "llm_prompt_s": m.llm_prompt_s} for m in metrics if not m.cancelled]
    out: dict[str, Any] = {"warm_up": warm, "ready_s": round(ready_s, 2), "turns": turns}
    for key in ("first_token_s", "first_audio_s", "llm_prompt_s"):
        vals = [t[key] for t in turns]
        later = [v for v in vals[1:] if v is not None]
        if vals and vals[0] is not None and later:
            med = statistics.median(later)
            out[key] = {"first": round(vals[0], 3), "median_later": round(med, 3),
                        "ratio": round(vals[0] / med, 2) if med else None}
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--delay", type=float, default=5.0, help="seconds between start-up and the first turn")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--modes", default="off,on", help="warm-up modes to run, in order (may repeat)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-first-turn-"))
    load = [round(os.getloadavg()[0], 2)]
    modes = {}
    for i, mode in enumerate(args.modes.split(",")):  # a mode may repeat: "off,on,off,on"
        modes[f"{mode}_{i + 1}"] = await run_mode(mode == "on", args, tmp)
        load.append(round(os.getloadavg()[0], 2))
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_1m": load},
           "turns": args.turns, "delay_s": args.delay, "max_tokens": args.max_tokens, "modes": modes}
    emit_json(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
