"""``LlmRuntime``: the per-process owner of LLM resources, passed around as an app context.

It starts the embedded llama.cpp server lazily on first use, shares it between every chain
(every session) made with it, and stops it in :meth:`aclose` or at interpreter exit. It also
owns each embedded server's :class:`~voice.llm.slots.SlotPool`, so every conversation keeps
its own llama.cpp slot (and its cached prefix). One runtime per application; nothing here is a
module global.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from typing import Any

from voice.llm.backends import Endpoint, make_client, resolve_endpoint
from voice.llm.embedded import EmbeddedServer, ServerInfo, embedded_key
from voice.llm.slots import SlotPool

log = logging.getLogger(__name__)


class LlmRuntime:
    """Embedded servers keyed by their config, started once; clients per endpoint."""

    def __init__(self) -> None:
        self._servers: dict[tuple[Any, ...], EmbeddedServer] = {}
        self._pools: dict[tuple[Any, ...], SlotPool] = {}
        self._atexit = False
        self._closed = False

    async def embedded(self, cfg: Any) -> ServerInfo:
        """The embedded server for ``cfg``, started on first call (concurrent callers wait)."""
        if self._closed:
            raise RuntimeError("LlmRuntime is closed")
        key = embedded_key(cfg)
        srv = self._servers.get(key)
        if srv is None:
            srv = self._servers[key] = EmbeddedServer(cfg)
            if not self._atexit:
                atexit.register(self.close)
                self._atexit = True
        try:
            # Concurrent callers share the server's start (a thread lock inside), so this
            # runtime works from any event loop.
            return await srv.start()
        except Exception:
            if self._servers.get(key) is srv:
                del self._servers[key]
            srv.close()
            raise

    async def endpoint(self, cfg: Any) -> Endpoint:
        """Where ``cfg.llm`` sends requests (starting the embedded server if that is the backend)."""
        if cfg.llm.backend == "embedded" and not cfg.llm.base_url:
            info = await self.embedded(cfg)
            ep = resolve_endpoint(cfg.llm, base_url=info.base_url)
            return Endpoint(ep.backend, ep.base_url, ep.model, None, info.api_key)
        return resolve_endpoint(cfg.llm)

    def slots(self, cfg: Any) -> SlotPool | None:
        """The slot pool of ``cfg``'s embedded server when it has more than one slot, else None
        (one slot needs no id; other servers are not sent llama.cpp's ``id_slot``)."""
        if cfg.llm.backend != "embedded" or cfg.llm.base_url or cfg.llm.embedded.parallel < 2:
            return None
        key = embedded_key(cfg)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = SlotPool(cfg.llm.embedded.parallel)
        return pool

    async def client(self, cfg: Any) -> tuple[Any, Endpoint]:
        """A fresh AsyncOpenAI client for ``cfg`` (cheap) and its endpoint."""
        ep = await self.endpoint(cfg)
        return make_client(ep, cfg.llm), ep

    def close(self) -> None:
        """Stop every server this runtime started (blocking; also run at exit)."""
        self._closed = True
        servers, self._servers = list(self._servers.values()), {}
        self._pools = {}
        for srv in servers:
            srv.close()
        if self._atexit:
            atexit.unregister(self.close)
            self._atexit = False

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> LlmRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
