"""What every session shares: models loaded once per server process (an app context, no globals)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from voice.config import Config

log = logging.getLogger(__name__)


class ServerResources:
    """Transcriber, TTS engine, VAD session and LLM runtime shared by all sessions.

    ``await start()`` loads everything once; each session then asks for a fresh chain (its own
    memory) with :meth:`make_chain`, which reuses the shared LLM runtime and knowledge base.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.transcriber: Any = None
        self.tts: Any = None
        self.vad_session: Any = None
        self.runtime: Any = None
        self.kb: Any = None
        self.ready = False
        self._warm: Any = None  # the start-up chain warming the first session's slot

    async def start(self) -> None:
        from voice.asr import get_transcriber
        from voice.audio.vad import load_silero_session
        from voice.llm.runtime import LlmRuntime
        from voice.tts.base import create_engine

        if self.cfg.server.llm_slots > 0:
            # every session's chain copies this config, so all share this one llama.cpp server
            self.cfg.llm.embedded.parallel = self.cfg.server.llm_slots
        self.transcriber = get_transcriber(self.cfg)
        piper = self.cfg.tts.piper
        if piper.cpu_mem_arena is None:  # sessions synthesize at once: no arena kept at their peak
            piper = dataclasses.replace(piper, cpu_mem_arena=False)
        self.tts = create_engine(dataclasses.replace(self.cfg, tts=dataclasses.replace(self.cfg.tts, piper=piper)))
        self.runtime = LlmRuntime()
        self.vad_session = await asyncio.to_thread(load_silero_session)
        start = getattr(self.transcriber, "start", None)
        await asyncio.gather(
            start() if start is not None else asyncio.sleep(0),
            self.tts.load(),
            self.runtime.endpoint(self.cfg),  # starts the embedded llama.cpp server once
        )
        if self.cfg.rag.enabled and self.cfg.kb_dir().exists():
            try:
                from voice.rag import open_kb

                self.kb = open_kb(self.cfg, None)  # an old-shape knowledge base is refused here
            except Exception as err:  # a broken KB must not stop the server; answers go without it
                log.warning("knowledge base not used: %s", err)
        # the first session's slot gets the fixed prompt prefix in the background: the slot pool
        # hands a free slot that holds it to the next session (make_chain)
        self._warm = await self.make_chain(self.cfg)
        self.ready = True

    def voices(self) -> list[str]:
        try:
            names = list(self.tts.voices()) if self.tts is not None else []
        except Exception:
            names = []
        return names or ["default"]

    def make_vad(self, vad_cfg: Any) -> Any:
        from voice.audio.vad import Endpointer, SileroVad

        return Endpointer(vad_cfg, SileroVad(self.vad_session))

    async def make_chain(self, cfg: Config) -> Any:
        """A new chain (its own memory, its own llama.cpp slot) on the shared LLM runtime and
        knowledge base, its fixed prompt prefix warming in the background (once per slot)."""
        from voice.llm import create_chain

        if self._warm is not None:
            warm, self._warm = self._warm, None
            if (warm.cfg.llm, warm.cfg.rag) == (cfg.llm, cfg.rag):  # what a chain reads: take it as it is
                return warm
            await warm.aclose()  # its slot is free for the next session
        chain = create_chain(cfg, kb=self.kb, app=self.runtime)
        start = getattr(chain, "start", None)
        if start is not None:
            await start()
        return chain

    async def aclose(self) -> None:
        if self._warm is not None:
            warm, self._warm = self._warm, None
            await warm.aclose()
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.kb is not None:
            close = getattr(self.kb, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

