#!/usr/bin/env python3
"""Voice-to-voice latency of the conversation pipeline vs. its stages measured alone, as JSON.

Spoken questions are made with the configured TTS (Piper by default), then fed to the real
pipeline (VAD -> Whisper -> chain with retrieval -> chunker -> TTS -> a sink that plays at
wall-clock speed) in real time, one turn per question. In the same run each stage is timed
standalone on the same input: ASR on the utterance, the chain up to the chunker's first
speakable piece (where TTS can start; its first token is reported too), TTS's first chunk.
Memory is cleared before every turn so all prompts are alike.

    .venv/bin/python scripts/bench_pipeline.py [--turns 6] [--no-retrieval] [--out FILE]
        [--preemptive config|on|off|compare] [--max-tokens N] [--corpus kestrel|eval] [--workdir DIR]

``--corpus eval``: the realistic knowledge base instead of the one-document ``kestrel`` one:
tests/data/rag_eval's six documents among Python's 79 reference topics (2,661 units, as
scripts/bench_rag.py), its questions in order (each retrieves its own passages, so no question
finds its context in llama.cpp's cache), each answer checked by the question's keywords
(``answers_with_fact``). Ingesting takes minutes: ``--workdir`` keeps the knowledge base for a
rerun. With ``compare`` on this corpus each question is asked once, the modes alternating.

The headline is ``from_silence``: from the user's last voiced frame as heard (the
endpointer's speech end, before the hang-over) to the answer's first sound played (its first
sample at -40 dBFS), what a person feels. ``voice_to_voice`` (secondary) runs from the VAD's
decision, vad.min_silence_ms later, to the same sample. ``overhead_ratio`` = voice_to_voice
p50 / (ASR + LLM first piece + TTS first chunk) p50; early transcription during the hang-over
can push it below 1.

``--preemptive compare`` alternates turns between two conversations on the same models, one
with ``pipeline.preemptive`` off and one with it on: each question is asked twice in a row, once
in each (off first, then on first for the next question: the second of a pair finds the
first's prompt in llama.cpp's cache, so neither mode always gets it), and reports both under
``compare_preemptive``; ``preemptive_turns`` counts the turns whose answer was prepared during
the hang-over and used.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.bench import emit_json  # noqa: E402 - after the path

DOC = """# The Kestrel Point lighthouse

The lighthouse on Kestrel Point was painted bright purple in 1987. Its keeper is Marigold
Fenwick, who has looked after it for twenty years. The light can be seen from forty kilometres.
The island has one bakery, which sells blueberry bread on Sundays.
"""

QUESTIONS = [
    "What color is the lighthouse on Kestrel Point?",
    "Who is the keeper of the lighthouse?",
    "How far away can the light be seen?",
    "What does the bakery sell on Sundays?",
    "When was the lighthouse painted?",
    "What is the capital of France?",
]


def pct(xs: list[float], q: float) -> float | None:
    from voice.pipeline.metrics import percentile

    v = percentile(xs, q)
    return None if v is None else round(v, 3)


def stats(xs: list[float]) -> dict[str, float | int | None]:
    return {"p50": pct(xs, 50), "p95": pct(xs, 95), "n": len(xs)}


async def speak_to_16k(tts, text: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    from voice.audio.resample import resample

    parts = [resample(c.audio, c.sample_rate, 16000) async for c in tts.stream(text)]
    return np.concatenate(parts).astype(np.float32)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--no-retrieval", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--preemptive", choices=["config", "on", "off", "compare"], default="config",
                    help="pipeline.preemptive for the run; compare: alternate off/on turn by turn")
    ap.add_argument("--max-tokens", type=int, help="llm.max_tokens (shorter answers: a shorter run)")
    ap.add_argument("--corpus", choices=["kestrel", "eval"], default="kestrel",
                    help="the knowledge base: one short document, or the retrieval evaluation set")
    ap.add_argument("--workdir", type=Path, help="--corpus eval: keep (and reuse) the knowledge base here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from voice.config import load_config
    from voice.pipeline import events as ev
    from voice.pipeline.conversation import Conversation
    from voice.pipeline.io import FileSink, array_frames
    from voice.pipeline.stack import build_stack, open_kb
    from voice.tts.chunker import SpeechChunker

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cfg = load_config()
    cfg.general.data_dir = str(tmp / "data")
    if args.max_tokens is not None:
        cfg.llm.max_tokens = args.max_tokens
    if args.preemptive in ("on", "off"):
        cfg.pipeline.preemptive = args.preemptive == "on"
    kb_dir = (args.workdir or tmp) / "kb"
    keywords: dict[str, list[list[str]]] = {}
    base_questions = QUESTIONS
    if not args.no_retrieval:
        from voice.rag import KnowledgeBase

        if args.corpus == "eval":
            from tests.helpers.rag import EVAL_DIR, eval_set, write_distractors

            docs = [p for p in sorted(EVAL_DIR.iterdir()) if p.name != "questions.json"]
            docs += write_distractors((args.workdir or tmp) / "distractors")
            items = eval_set()["questions"]
            base_questions = [it["q"] for it in items]
            keywords = {it["q"]: it["keywords"] for it in items}
        else:
            (tmp / "docs").mkdir()
            (tmp / "docs" / "kestrel.md").write_text(DOC)
            docs = [tmp / "docs" / "kestrel.md"]
        with KnowledgeBase(cfg, kb_dir) as kb0:
            kb0.ingest(docs)  # a rerun with --workdir finds the files unchanged
    kb = open_kb(cfg, kb_dir if not args.no_retrieval else None, retrieval=not args.no_retrieval)
    t0 = time.perf_counter()
    stack = await build_stack(cfg, kb=kb)
    load_s = time.perf_counter() - t0
    questions = (base_questions * (args.turns // len(base_questions) + 1))[: args.turns]
    if args.preemptive == "compare" and args.corpus == "kestrel":
        # each question twice, once per mode, in turn off-on, on-off, ...
        questions = [q for q in QUESTIONS * (args.turns // (2 * len(QUESTIONS)) + 1) for _ in (0, 1)][: args.turns]
    audios = [await speak_to_16k(stack.tts, q) for q in questions]

    metrics: list[ev.TurnMetrics] = []
    answers: list[str] = []
    heard: list[str] = []
    modes = [False, True] if args.preemptive == "compare" else [cfg.pipeline.preemptive]
    convs: list[Conversation] = []
    by_mode: dict[bool, list[ev.TurnMetrics]] = {m: [] for m in modes}
    for mode in modes:  # one sink each: a sink's counter belongs to one conversation
        c_cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, preemptive=mode))
        sink = FileSink(None, stack.tts.sample_rate, realtime=True)
        c = Conversation(c_cfg, transcriber=stack.transcriber, chain=stack.chain, tts=stack.tts, sink=sink)
        c.add_listener(lambda e: metrics.append(e) if isinstance(e, ev.TurnMetrics) else None)
        c.add_listener(lambda e, ms=by_mode[mode]: ms.append(e) if isinstance(e, ev.TurnMetrics) else None)
        c.add_listener(lambda e: answers.append(e.text) if isinstance(e, ev.LlmDone) else None)
        c.add_listener(lambda e: heard.append(e.text) if isinstance(e, ev.TranscriptFinal) else None)
        convs.append(c)

    asr_s: list[float] = []
    llm_s: list[float] = []
    piece_s: list[float] = []
    tts_s: list[float] = []
    memory = getattr(stack.chain, "memory", None)
    per_turn: list[tuple[str, str]] = []  # (question, the answer played for it)
    for i, (q, audio) in enumerate(zip(questions, audios, strict=True)):
        # --- the pipeline first, fed in real time: its LLM prompt is new to llama.cpp's cache
        # (only the system prompt prefix is warm, as in a conversation) ...
        if memory is not None:
            memory.clear()
        pad = np.zeros(8000, np.float32)
        if len(convs) == 2:
            conv = convs[i % 2] if args.corpus == "eval" else convs[(i % 2) ^ (i // 2 % 2)]
        else:
            conv = convs[0]
        n_answers = len(answers)
        await conv.run(array_frames(np.concatenate([pad, audio]), realtime=True, tail_silence_s=1.5),
                       hold_while_busy=True)
        conv.hearing.reset()
        per_turn.append((q, " ".join(answers[n_answers:])))
        # --- ... then each stage alone on the same input. The standalone LLM call repeats the
        # prompt the pipeline just sent (a cache hit), so its time is a lower bound and the
        # overhead ratio errs high.
        t = time.perf_counter()
        tr = await stack.transcriber.transcribe(audio, live=True)
        asr_s.append(time.perf_counter() - t)
        if memory is not None:
            memory.clear()
        # The LLM stage ends where TTS can start: at the chunker's first speakable piece.
        t = time.perf_counter()
        first = ""
        chunker = SpeechChunker(cfg.tts.chunker)
        pieces: list[str] = []
        async for d in stack.chain.astream(tr.text, turn_id=10_000 + i):
            if not first and d:
                first = d
                llm_s.append(time.perf_counter() - t)
            if not pieces:
                pieces = chunker.feed(d)
                if pieces:
                    piece_s.append(time.perf_counter() - t)
        if not pieces:
            pieces = chunker.flush()
            piece_s.append(time.perf_counter() - t)
        piece = pieces[0] if pieces else "Hello."
        t = time.perf_counter()
        async for _ in stack.tts.stream(piece):
            tts_s.append(time.perf_counter() - t)
            break

    for c in convs:
        await c.aclose()
    await stack.aclose()
    done = [m for m in metrics if not m.cancelled and m.voice_to_voice_s is not None]
    v2v = [m.voice_to_voice_s for m in done if m.voice_to_voice_s is not None]
    from_sil = [m.from_silence_s for m in done if m.from_silence_s is not None]
    stage_sum = [a + b + c for a, b, c in zip(asr_s, piece_s, tts_s, strict=False)]
    v2v50, sum50 = pct(v2v, 50), pct(stage_sum, 50)
    ratio = round(v2v50 / sum50, 3) if v2v50 is not None and sum50 else None
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m": round(os.getloadavg()[0], 2)},
        "stack": {"asr": cfg.asr.model, "max_tokens": cfg.llm.max_tokens, "llm": f"{cfg.llm.backend}:{cfg.llm.embedded.model}",
                  "tts": f"{cfg.tts.engine}:{cfg.tts.piper.voice}", "retrieval": not args.no_retrieval,
                  "vad_hangover_ms": cfg.vad.min_silence_ms, "early_transcribe": cfg.pipeline.early_transcribe},
        "turns": len(questions),
        "turns_answered": len(done),
        "from_silence_s": stats(from_sil),
        "voice_to_voice_s": stats(v2v),
        "definitions": {
            "from_silence_s": "last voiced frame heard (before the VAD hang-over) -> first sound played",
            "voice_to_voice_s": "VAD decision (vad_hangover_ms after the last voiced frame) -> first sound played",
        },
        "pipeline_stages_s": {
            "transcript": stats([m.transcript_s for m in done if m.transcript_s is not None]),
            "first_token": stats([m.first_token_s for m in done if m.first_token_s is not None]),
            "first_audio": stats([m.first_audio_s for m in done if m.first_audio_s is not None]),
        },
        "standalone_s": {"asr": stats(asr_s), "llm_first_token": stats(llm_s),
                         "llm_first_piece": stats(piece_s), "tts_first_chunk": stats(tts_s),
                         "sum": stats(stage_sum)},
        "overhead_ratio": ratio,
        "goals": {"from_silence_p50_le_1.0s": (fs50 := pct(from_sil, 50)) is not None and fs50 <= 1.0,
                  "from_silence_p95_le_1.5s": (fs95 := pct(from_sil, 95)) is not None and fs95 <= 1.5,
                  "overhead_ratio_le_1.10": ratio is not None and ratio <= 1.10,
                  "voice_to_voice_p50_le_1.2s": v2v50 is not None and v2v50 <= 1.2},
        "preemptive": args.preemptive if args.preemptive == "compare" else cfg.pipeline.preemptive,
        "preemptive_turns": sum(1 for m in done if m.preemptive),
        "load_s": round(load_s, 2),
        "corpus": args.corpus,
        "heard": heard,
        "answers": answers,
    }
    if keywords:
        from tests.helpers.rag import answer_ok

        carried = [answer_ok(a, keywords[q]) for q, a in per_turn]
        out["answers_with_fact"] = f"{sum(carried)}/{len(carried)}"
        out["missed"] = [{"q": q, "answer": a[:160]} for (q, a), good in zip(per_turn, carried, strict=True)
                         if not good]
    if args.preemptive == "compare":
        out["compare_preemptive"] = {
            ("on" if mode else "off"): {
                "turns_answered": len(ok := [m for m in ms if not m.cancelled and m.voice_to_voice_s is not None]),
                "preemptive_turns": sum(1 for m in ok if m.preemptive),
                "from_silence_s": stats([m.from_silence_s for m in ok if m.from_silence_s is not None]),
                "voice_to_voice_s": stats([m.voice_to_voice_s for m in ok if m.voice_to_voice_s is not None]),
                "first_token_s": stats([m.first_token_s for m in ok if m.first_token_s is not None]),
            } for mode, ms in by_mode.items()}
    emit_json(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
