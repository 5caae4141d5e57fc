"""The models a conversation needs, loaded once and warmed up: transcriber, chain (with its
knowledge base and LLM runtime), TTS engine. Used by ``voice chat`` and the pipeline benchmark."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.config import Config

log = logging.getLogger(__name__)


@dataclass
class Stack:
    cfg: Config
    transcriber: Any
    chain: Any
    tts: Any
    kb: Any
    runtime: Any
    #: Seconds each part took to load (and warm up).
    load_s: dict[str, float] = field(default_factory=dict)

    async def aclose(self) -> None:
        try:
            await self.chain.aclose()
        finally:
            try:
                await self.runtime.aclose()
            finally:
                if self.kb is not None:
                    self.kb.close()


def open_kb(cfg: Config, kb_arg: str | Path | None, *, retrieval: bool = True) -> Any:
    """The knowledge base to search (``--kb DIR`` or the configured one), or None."""
    if not retrieval or not cfg.rag.enabled:
        return None  # no knowledge base: the chain answers without retrieval
    from voice.rag import open_kb as open_rag_kb

    return open_rag_kb(cfg, kb_arg)


async def build_stack(
    cfg: Config,
    *,
    kb: Any = None,
    need_asr: bool = True,
    speak: bool = True,
    warm: bool = True,
) -> Stack:
    """Load everything in parallel (threads for the blocking parts), then warm each model once
    so the first turn does not pay for lazy initialisation."""
    from voice.asr import get_transcriber
    from voice.llm import LlmRuntime, create_chain
    from voice.tts import create_engine

    if need_asr:
        from voice.audio.smart_turn import check_configured

        check_configured(cfg)
    runtime = LlmRuntime()
    chain = create_chain(cfg, kb=kb, app=runtime)
    transcriber: Any = get_transcriber(cfg) if need_asr else None
    tts: Any = create_engine(cfg) if speak and cfg.pipeline.speak else None
    load_s: dict[str, float] = {}

    async def timed(name: str, coro: Any) -> None:
        t0 = time.perf_counter()
        await coro
        load_s[name] = round(time.perf_counter() - t0, 3)

    async def warm_asr() -> None:
        await transcriber.start()
        if warm:
            await transcriber.transcribe(np.zeros(16000, np.float32), live=True)

    async def warm_llm() -> None:
        start = getattr(chain, "start", None)
        if start is not None:
            await start()

    async def warm_tts() -> None:
        await tts.load()
        if warm:
            async for _ in tts.stream("Ready."):
                pass

    async def warm_kb() -> None:
        if kb is not None and warm:
            await asyncio.to_thread(kb.search, "warm up", 1)

    jobs = [timed("llm", warm_llm()), timed("kb", warm_kb())]
    if transcriber is not None:
        jobs.append(timed("asr", warm_asr()))
    if tts is not None:
        jobs.append(timed("tts", warm_tts()))
    try:
        await asyncio.gather(*jobs)
    except BaseException:
        await chain.aclose()
        await runtime.aclose()
        raise
    log.info("models ready: %s", load_s)
    return Stack(cfg=cfg, transcriber=transcriber, chain=chain, tts=tts, kb=kb, runtime=runtime, load_s=load_s)
