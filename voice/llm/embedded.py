"""The embedded llama.cpp server (xllamacpp) on 127.0.0.1 and a free port.

``EmbeddedServer`` loads nothing in its constructor: ``await start()`` resolves the GGUF through
the model registry, picks GPU layers from the llama.cpp device probe, and builds the server in a
worker thread (loading takes seconds). Each start makes a random API key so that other local
programs (or web pages: llama.cpp allows every CORS origin) cannot use it. ``close()`` stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice.errors import ModelNotAvailable, VoiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server: where it listens and how it was started."""

    base_url: str  # ends in /v1
    root_url: str  # for /health, /slots, /metrics, /tokenize
    api_key: str
    model_path: Path
    device: str
    n_gpu_layers: int
    load_s: float


def embedded_key(cfg: Any) -> tuple[Any, ...]:
    """What makes two embedded servers different (used to share one per process)."""
    e = cfg.llm.embedded
    spec = (e.speculative, e.draft_model if e.speculative == "draft" else None, e.draft_max)
    return (e.model, e.n_ctx, e.n_gpu_layers, e.threads, e.device, e.parallel, e.cache_ram_mib, *spec)


class EmbeddedServer:
    """One xllamacpp server. Thread-safe start/stop; owned by :class:`voice.llm.runtime.LlmRuntime`."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._server: Any = None
        self._info: ServerInfo | None = None
        self._lock = threading.Lock()

    @property
    def info(self) -> ServerInfo | None:
        return self._info

    async def start(self) -> ServerInfo:
        """Start (once) and wait until healthy; raises ModelNotAvailable / VoiceError."""
        if self._info is not None:
            return self._info
        timeout = self.cfg.llm.embedded.start_timeout_s
        try:
            info = await asyncio.wait_for(asyncio.to_thread(self._start_blocking), timeout)
        except TimeoutError:
            raise VoiceError(
                f"the embedded LLM did not start within {timeout:g} s (llm.embedded.start_timeout_s)"
            ) from None
        await self._wait_healthy(info, timeout)
        return info

    def _start_blocking(self) -> ServerInfo:
        with self._lock:
            if self._info is not None:
                return self._info
            from voice.devices import choose, probe_for
            from voice.models import registry_for

            e = self.cfg.llm.embedded
            registry = registry_for(self.cfg)
            path = registry.resolve(e.model, kind="llm").path
            if not path.is_file():
                raise ModelNotAvailable(f"llm.embedded.model {e.model!r} resolves to {path}, which is not a GGUF file")
            try:
                import xllamacpp
            except ImportError:
                raise ModelNotAvailable("the embedded LLM needs xllamacpp: pip install xllamacpp") from None
            choice = choose(e.device, probe_for("llama.cpp"), runtime="llama.cpp",
                            cpu_compute="q", cuda_compute="q")
            n_gpu = e.n_gpu_layers if choice.device == "cuda" else 0
            threads = e.threads or (os.cpu_count() or 1)
            key = secrets.token_urlsafe(24)
            p = xllamacpp.CommonParams()
            p.model.path = str(path)
            p.n_ctx = e.n_ctx
            p.n_parallel = e.parallel
            p.kv_unified = True  # every slot may use the whole context
            p.cache_ram_mib = e.cache_ram_mib
            # llama.cpp would otherwise copy every idle slot to the host cache and, the KV cache
            # being unified, clear it at each new request: a session's slot (id_slot) would lose
            # its history and system prompt before its next turn.
            p.cache_idle_slots = False
            p.n_gpu_layers = n_gpu
            p.cpuparams.n_threads = threads
            p.cpuparams_batch.n_threads = threads
            p.hostnames = ["127.0.0.1"]
            p.port = 0  # a free port, chosen by the OS
            p.api_keys = [key]
            _speculative(p, e, registry, n_gpu, threads)
            p.endpoint_metrics = True
            p.endpoint_slots = True
            p.verbosity = 0
            t0 = time.perf_counter()
            try:
                server = xllamacpp.Server(p)
            except Exception as err:  # noqa: BLE001 - llama.cpp reports load failures as plain errors
                raise ModelNotAvailable(f"llama.cpp could not load {path}: {err}") from None
            load_s = time.perf_counter() - t0
            root = str(server.listening_address).rstrip("/")
            self._server = server
            self._info = ServerInfo(root + "/v1", root, key, Path(path), choice.device, n_gpu, load_s)
            log.info("embedded LLM %s on %s (%s, %d GPU layers, %.1f s)", path.name, root,
                     choice.device, n_gpu, load_s)
            return self._info

    async def _wait_healthy(self, info: ServerInfo, limit_s: float) -> None:
        import httpx

        deadline = time.monotonic() + limit_s
        last = "no answer"
        async with httpx.AsyncClient(timeout=5.0) as http:
            while time.monotonic() < deadline:
                try:
                    r = await http.get(info.root_url + "/health")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as err:
                    last = type(err).__name__
                await asyncio.sleep(0.1)
        raise VoiceError(f"the embedded LLM at {info.root_url} is not healthy after {limit_s:g} s ({last})")

    def close(self) -> None:
        """Stop the server (blocking, quick). Safe to call twice."""
        with self._lock:
            server, self._server, self._info = self._server, None, None
        if server is not None:
            del server  # xllamacpp stops its HTTP thread and frees the model on deallocation


#: Tokens an n-gram draft is keyed on (llama.cpp's default of 12 never matched within the
#: one- to three-sentence answers voice asks for; 3 is the usual prompt-lookup key).
NGRAM_KEY = 3


def _speculative(p: Any, e: Any, registry: Any, n_gpu: int, threads: int) -> None:
    """Set llama.cpp's speculative decoding from ``llm.embedded.speculative``."""
    if e.speculative == "off":
        return
    import xllamacpp

    kinds = xllamacpp.common_speculative_type
    s = p.speculative
    if e.speculative == "ngram":
        # map-k: drafts the continuation that followed the same key n-gram earlier in the prompt
        # (grounded answers copy phrases from their context); it accepted the most per draft here.
        s.types = [kinds.COMMON_SPECULATIVE_TYPE_NGRAM_MAP_K]
        s.ngram_map_k.size_n = NGRAM_KEY
        s.ngram_map_k.size_m = e.draft_max
        return
    draft = registry.resolve(e.draft_model, kind="llm").path
    if not draft.is_file():
        raise ModelNotAvailable(f"llm.embedded.draft_model {e.draft_model!r} resolves to {draft}, which is not a GGUF file")
    s.types = [kinds.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
    s.draft.mparams.path = str(draft)
    s.draft.n_max = e.draft_max
    s.draft.n_gpu_layers = n_gpu
    s.draft.cpuparams.n_threads = threads
    s.draft.cpuparams_batch.n_threads = threads
