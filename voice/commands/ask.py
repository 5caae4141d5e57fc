"""``voice ask "question" [--kb DIR] [--no-retrieval] [--speak]``: one answer, streamed, then its sources."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from voice.commands import Subparsers
from voice.config import Config
from voice.errors import InputError


def register(sub: Subparsers) -> None:
    p = sub.add_parser("ask", help="ask the assistant one question (text in, streamed text out)")
    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--kb", metavar="DIR", help="knowledge base folder (default: from config)")
    p.add_argument("--no-retrieval", action="store_true", help="do not search the knowledge base")
    p.add_argument("--speak", action="store_true", help="also speak the answer (tts.engine)")
    p.set_defaults(handler=run)


async def _speak(cfg: Config, text: str) -> None:
    from voice.audio.io import play
    from voice.tts import create_engine
    from voice.tts.chunker import SpeechChunker

    # The chunker, as in `voice chat`: no markdown read aloud, at most max_response_chars.
    chunker = SpeechChunker(cfg.tts.chunker)
    pieces = chunker.feed(text) + chunker.flush()
    engine = create_engine(cfg)
    await engine.load()
    for piece in pieces:
        async for chunk in engine.stream(piece):
            await play(chunk.audio, chunk.sample_rate, device=cfg.audio.output_device)


async def ask(cfg: Config, question: str, kb: Any, *, speak: bool = False, out: Any = None) -> str:
    """Stream the answer to ``out`` (stdout), then the sources; returns the answer."""
    from voice.llm import LlmRuntime, create_chain

    out = out or sys.stdout
    async with LlmRuntime() as runtime:
        chain = create_chain(cfg, kb=kb, app=runtime)
        parts: list[str] = []
        try:
            async for delta in chain.astream(question, turn_id=0):
                parts.append(delta)
                out.write(delta)
                out.flush()
        finally:
            await chain.aclose()
        out.write("\n")
        answer = "".join(parts).strip()
        if chain.last_sources:
            print("\nSources:", file=out)
            seen: set[str] = set()
            for p in chain.last_sources:
                if p.source not in seen:
                    seen.add(p.source)
                    print(f"  - {p.source} (score {p.score:.2f})", file=out)
        out.flush()
    if speak and answer:
        await _speak(cfg, answer)
    return answer


def run(args: argparse.Namespace, cfg: Config) -> int:
    question = args.question.strip()
    if not question:
        raise InputError("the question is empty")
    from voice.rag import open_kb

    kb = None if args.no_retrieval else open_kb(cfg, args.kb)
    try:
        asyncio.run(ask(cfg, question, kb, speak=args.speak))
    finally:
        if kb is not None:
            kb.close()
    return 0
