#!/usr/bin/env python3
"""How long the first speakable piece should be: first sound vs how the answer sounds, as JSON.

The chunker's first piece (``tts.chunker.min_first_chars`` / ``first_words``) trades the time to
the first sound against the flow of the answer: a short first piece starts sooner, but it may
end mid-phrase (Piper closes every piece like a sentence) and it may finish playing before the
next piece is synthesized, so the answer stalls. Each setting answers the same grounded
questions through the real stack (retrieval over the evaluation corpus, llama.cpp, chunker,
Piper, a sink that plays at wall-clock speed), each question new to llama.cpp's cache (memory
cleared), the settings' order rotating from question to question. Per setting:

- ``first_sound_s``: typed question submitted -> first sound played (p50/p95);
- ``first_piece_chars`` and ``mid_phrase_first_piece``: the first piece's length, and the share
  of answers whose first piece was cut at a word, not at a clause or sentence end;
- ``stalls``: silences inside an answer where playback ran dry waiting for the next piece
  (``answers_with_stall`` counts answers with one over 100 ms; ``stall_ms`` is their total).

    .venv/bin/python scripts/bench_first_piece.py [--questions 16] [--workdir DIR] [--out FILE]

Not covered: spoken questions (ASR and the hang-over come before all of this and are the same
for every setting), other voices or engines, and listening tests: mid-phrase cuts and stalls
stand in for "natural".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.bench import emit_json  # noqa: E402 - after the path

#: (name, min_first_chars, first_words)
SETTINGS = [("short", 8, 3), ("default", 20, 8), ("clause", 40, 0), ("long", 80, 0)]
#: A silence inside an answer this long counts as a stall.
STALL_MS = 100.0


class GapSink:
    """A wall-clock sink (FileSink realtime) that also books where playback ran dry: a write
    that comes after everything written before it has finished playing."""

    def __init__(self, sample_rate: int) -> None:
        from voice.pipeline.io import FileSink

        self.inner = FileSink(None, sample_rate, realtime=True)
        self.sample_rate = sample_rate
        self.gaps: list[float] = []  # seconds of silence inside the current answer
        self._end: float | None = None  # when the audio written so far finishes playing

    @property
    def played_samples(self) -> int:
        return self.inner.played_samples

    def mark_turn(self) -> None:  # the Answer calls this before its first chunk
        self.gaps, self._end = [], None

    async def write(self, chunk: np.ndarray) -> None:
        now = time.monotonic()
        if self._end is not None and now > self._end:
            self.gaps.append(now - self._end)
        self._end = max(now, self._end or now) + chunk.shape[0] / self.sample_rate
        await self.inner.write(chunk)

    def clear(self) -> int:
        return self.inner.clear()


def stats(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50": None, "p95": None}
    s = sorted(xs)
    return {"n": len(s), "p50": round(statistics.median(s), 3),
            "p95": round(s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], 3)}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--workdir", type=Path, help="keep (and reuse) the evaluation knowledge base here")
    ap.add_argument("--settings", help="NAME:MIN_FIRST_CHARS:FIRST_WORDS,... (must include a 'default';"
                    " default: " + ",".join(f"{n}:{c}:{w}" for n, c, w in SETTINGS) + ")")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    settings_list = SETTINGS
    if args.settings:
        settings_list = [(n, int(c), int(w)) for n, c, w in (x.split(":") for x in args.settings.split(","))]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tests.helpers.rag import EVAL_DIR, answer_ok, eval_set, write_distractors
    from voice.config import load_config
    from voice.pipeline import events as ev
    from voice.pipeline.conversation import Conversation
    from voice.pipeline.stack import build_stack, open_kb
    from voice.rag import KnowledgeBase
    from voice.tts.chunker import SpeechChunker

    tmp = Path(tempfile.mkdtemp(prefix="bench-first-piece-"))
    work = args.workdir or tmp
    cfg = load_config()
    cfg.general.data_dir = str(tmp / "data")
    cfg.llm.temperature = 0.0
    docs = [p for p in sorted(EVAL_DIR.iterdir()) if p.name != "questions.json"]
    docs += write_distractors(work / "distractors")
    items = eval_set()["questions"][: args.questions]
    with KnowledgeBase(cfg, work / "kb") as kb0:
        kb0.ingest(docs)  # a rerun with --workdir finds the files unchanged
    stack = await build_stack(cfg, kb=open_kb(cfg, work / "kb"), need_asr=False)
    memory = getattr(stack.chain, "memory", None)
    load = [round(os.getloadavg()[0], 2)]

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in settings_list}
    convs: dict[str, tuple[Conversation, GapSink, list[Any]]] = {}
    for name, first_chars, first_words in settings_list:
        chunker = dataclasses.replace(cfg.tts.chunker, min_first_chars=first_chars, first_words=first_words)
        c_cfg = dataclasses.replace(cfg, tts=dataclasses.replace(cfg.tts, chunker=chunker))
        sink = GapSink(stack.tts.sample_rate)
        conv = Conversation(c_cfg, transcriber=None, chain=stack.chain, tts=stack.tts, sink=sink)
        seen: list[Any] = []

        def keep(e: ev.Event, seen: list[Any] = seen) -> None:
            if isinstance(e, (ev.TurnMetrics, ev.LlmDone, ev.LlmDelta)):
                seen.append(e)

        conv.add_listener(keep)
        convs[name] = (conv, sink, seen)
    for i, item in enumerate(items):
        k = i % len(settings_list)
        order = settings_list[k:] + settings_list[:k]
        for name, _, _ in order:
            conv, sink, seen = convs[name]
            if memory is not None:
                memory.clear()
            seen.clear()
            await conv.ask(item["q"])
            m = next(e for e in seen if isinstance(e, ev.TurnMetrics))
            text = next((e.text for e in seen if isinstance(e, ev.LlmDone)), "")
            replay = SpeechChunker(conv.cfg.tts.chunker)  # the same deltas give the same first piece
            pieces = [p for e in seen if isinstance(e, ev.LlmDelta) for p in replay.feed(e.text)]
            first = (pieces or replay.flush() or [text])[0].strip()
            runs[name].append({
                "q": item["q"], "first_sound_s": m.voice_to_voice_s, "first_piece": first,
                "mid_phrase": bool(first) and first[-1] not in ".!?,;:" and len(first) < len(text.strip()),
                "stalls_ms": [round(g * 1000) for g in sink.gaps if g * 1000 >= STALL_MS],
                "fact": answer_ok(text, item["keywords"]),
            })
        load.append(round(os.getloadavg()[0], 2))
    for conv, _, _ in convs.values():
        await conv.aclose()
    await stack.aclose()

    settings: dict[str, Any] = {}
    for name, first_chars, first_words in settings_list:
        rs = runs[name]
        settings[name] = {
            "min_first_chars": first_chars, "first_words": first_words,
            "first_sound_s": stats([r["first_sound_s"] for r in rs if r["first_sound_s"] is not None]),
            "first_piece_chars": stats([float(len(r["first_piece"])) for r in rs]),
            "mid_phrase_first_piece": f"{sum(r['mid_phrase'] for r in rs)}/{len(rs)}",
            "answers_with_stall": f"{sum(bool(r['stalls_ms']) for r in rs)}/{len(rs)}",
            "stall_ms_total": sum(sum(r["stalls_ms"]) for r in rs),
            "answers_with_fact": f"{sum(r['fact'] for r in rs)}/{len(rs)}",
            "examples": [r["first_piece"] for r in rs[:4]],
        }
    base = settings["default"]["first_sound_s"]["p50"]
    for s in settings.values():
        p50 = s["first_sound_s"]["p50"]
        s["first_sound_p50_vs_default"] = round(p50 / base, 3) if p50 and base else None
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_1m": load},
           "questions": len(items), "llm": cfg.llm.embedded.model, "tts": cfg.tts.piper.voice,
           "stall_threshold_ms": STALL_MS, "settings": settings}
    emit_json(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
