#!/usr/bin/env python3
"""Speculative decoding (``llm.embedded.speculative``) on grounded answers, printed as JSON.

Each mode gets its own embedded llama.cpp server, started through voice's own runtime; all stay
loaded and the questions go to them in turn (the order rotates per question), so load on the
machine hits every mode alike. The questions are the retrieval evaluation set
(tests/data/rag_eval), each with the compact context voice retrieves for it from the six
evaluation documents (the distractors are left out: they change which passages rank, not how
long the context is). The prompt cache is on, as in a conversation: the system prompt is the
cached prefix, each question's context is new. Temperature 0.

Reported per mode: time to the first token and to the chunker's first speakable piece (where TTS
starts), the decode rate and whole-answer time from llama.cpp's own timings, tokens drafted and
accepted, answer accuracy (required keywords), and each figure's ratio to ``off``.

``draft`` needs a second model of the same family (``--draft``, default the 0.5B drafting for
the 1.5B); it is skipped when the draft is the main model itself.

Usage: .venv/bin/python scripts/bench_speculative.py [--llm qwen2.5-0.5b-instruct]
       [--modes off ngram draft] [--questions 38] [--draft qwen2.5-0.5b-instruct]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


def contexts(cfg: Any, n: int) -> list[dict[str, Any]]:
    from tests.helpers.rag import EVAL_DIR, eval_set
    from voice.rag import KnowledgeBase

    items = eval_set()["questions"][:n]
    with tempfile.TemporaryDirectory() as d:
        kb = KnowledgeBase(cfg, Path(d) / "kb")
        kb.ingest(sorted(p for p in EVAL_DIR.iterdir() if p.name != "questions.json"))
        out = [{"item": it, "passages": kb.context(it["q"])} for it in items]
        kb.close()
    return out


async def ask(client: Any, model: str, messages: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    from voice.tts.chunker import SpeechChunker

    chunker = SpeechChunker(cfg.tts.chunker)
    t0 = time.perf_counter()
    first = piece = None
    parts: list[str] = []
    timings: dict[str, Any] = {}
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, temperature=0.0, max_tokens=cfg.llm.max_tokens,
        extra_body={"cache_prompt": True})
    async for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            now = time.perf_counter() - t0
            first = now if first is None else first
            if piece is None and chunker.feed(delta):
                piece = now
            parts.append(delta)
        extra = getattr(chunk, "model_extra", None) or {}
        timings = extra.get("timings") or timings
    total = time.perf_counter() - t0
    if piece is None and chunker.flush():
        piece = total
    return {"ttft": first or total, "first_piece": piece or total, "total": total, "answer": "".join(parts),
            "predicted_n": timings.get("predicted_n", 0), "predicted_ms": timings.get("predicted_ms", 0.0),
            "prompt_n": timings.get("prompt_n", 0),
            "draft_n": timings.get("draft_n", 0), "draft_accepted": timings.get("draft_n_accepted", 0)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.helpers.rag import answer_ok
    from voice.config import load_config
    from voice.llm import LlmRuntime
    from voice.llm.prompt import SPEECH_SYSTEM_PROMPT, build_messages

    base = load_config()
    base.llm.embedded.model = args.llm
    base.llm.embedded.parallel = 1
    modes = [m for m in args.modes if not (m == "draft" and args.draft == args.llm)]
    qs = contexts(base, args.questions)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    async with LlmRuntime() as runtime:
        clients = {}
        for m in modes:
            cfg = copy.deepcopy(base)
            cfg.llm.embedded.speculative = m
            cfg.llm.embedded.draft_model = args.draft
            clients[m] = (await runtime.client(cfg), cfg)
            (client, ep), _ = clients[m]
            await ask(client, ep.model, build_messages(SPEECH_SYSTEM_PROMPT, [], "Hello", []), cfg)  # warm
        for i, q in enumerate(qs):
            order = modes[i % len(modes):] + modes[:i % len(modes)]
            for m in order:
                (client, ep), cfg = clients[m]
                r = await ask(client, ep.model, build_messages(SPEECH_SYSTEM_PROMPT, [], q["item"]["q"], q["passages"]), cfg)
                r["ok"] = answer_ok(r["answer"], q["item"]["keywords"])
                rows[m].append(r)

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        rate = [r["predicted_n"] / r["predicted_ms"] * 1000 for r in rs if r["predicted_ms"]]
        drafted = sum(r["draft_n"] for r in rs)
        return {
            "first_token_p50_s": _p([r["ttft"] for r in rs], 0.5),
            "first_piece_p50_s": _p([r["first_piece"] for r in rs], 0.5),
            "first_piece_p95_s": _p([r["first_piece"] for r in rs], 0.95),
            "answer_p50_s": _p([r["total"] for r in rs], 0.5),
            "decode_tokens_per_s_p50": round(statistics.median(rate), 1) if rate else None,
            "tokens_per_answer_p50": statistics.median(r["predicted_n"] for r in rs),
            "prefilled_tokens_p50": statistics.median(r["prompt_n"] for r in rs),
            "drafted": drafted, "accepted": sum(r["draft_accepted"] for r in rs),
            "accuracy": round(sum(r["ok"] for r in rs) / len(rs), 3),
        }

    out: dict[str, Any] = {"model": args.llm, "draft_model": args.draft if "draft" in modes else None,
                           "questions": len(qs), "modes": {m: summary(rs) for m, rs in rows.items()}}
    if "off" in out["modes"]:
        off = out["modes"]["off"]
        for m, s in out["modes"].items():
            if m != "off":
                s["ratio_to_off"] = {k: round(s[k] / off[k], 3) for k in
                                     ("first_piece_p50_s", "answer_p50_s", "decode_tokens_per_s_p50") if s[k] and off[k]}
        same = [a["answer"] == b["answer"] for m in modes if m != "off" for a, b in zip(rows["off"], rows[m], strict=True)]
        out["answers_identical_to_off"] = round(sum(same) / len(same), 3) if same else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="qwen2.5-0.5b-instruct", help="main model (registry name)")
    ap.add_argument("--draft", default="qwen2.5-0.5b-instruct", help="draft model for the draft mode")
    ap.add_argument("--modes", nargs="+", default=["off", "ngram", "draft"], choices=["off", "ngram", "draft"])
    ap.add_argument("--questions", type=int, default=38, help="how many evaluation questions (at most 38)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(run(args))
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "load_1m": round(os.getloadavg()[0], 2), "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
