"""``voice serve``: the websockets server (HTTP + ``/v1/realtime``, and OpenAI's audio API over
plain HTTP on the same port) over shared models.

    async with VoiceServer(cfg) as server:   # loads models once, binds, serves
        await server.serve_forever()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from voice.config import Config
from voice.server.audio_api import AudioApi
from voice.server.connection import VoiceConnection
from voice.server.heap import heap_trimmer
from voice.server.http import (
    BINARY_SUBPROTOCOL,
    Gate,
    HostPolicy,
    check_token,
    is_loopback,
    offered_subprotocols,
    select_subprotocol,
)
from voice.server.metrics import ServerMetrics
from voice.server.resources import ServerResources

log = logging.getLogger(__name__)


class VoiceServer:
    def __init__(self, cfg: Config, *, host: str | None = None, port: int | None = None,
                 resources: ServerResources | None = None, environ: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.host = host or cfg.server.host
        self.port = cfg.server.port if port is None else port
        env = os.environ if environ is None else environ
        self.token = check_token(env.get(cfg.server.token_env), self.host, cfg.server.token_env)
        from voice.audio.smart_turn import check_configured

        check_configured(cfg)  # sessions use it: a missing model fails here, not in each session
        self.resources = resources or ServerResources(cfg)
        self._own_resources = resources is None
        self.metrics = ServerMetrics()
        self.started = time.monotonic()
        self._server: Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._sessions: set[asyncio.Task[Any]] = set()
        self._trim_heap = heap_trimmer()
        scfg = cfg.server
        self.policy = HostPolicy(
            allowed_hosts=scfg.allowed_hosts, allowed_origins=scfg.allowed_origins, port=self.port,
            bound_host=self.host, loopback_only=is_loopback(self.host) and self.token is None and not scfg.allowed_hosts,
        )
        self.gate = Gate(
            token=self.token, policy=self.policy, max_sessions=cfg.server.max_sessions,
            sessions=lambda: self.metrics.sessions_active, metrics_text=self.metrics.render, health=self.health,
            on_reject=lambda reason: self.metrics.sessions_rejected.update([reason]),
        )
        self.audio_api = AudioApi(cfg, self.resources, self.gate, self.metrics)

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.resources.ready else "loading", "sessions": self.metrics.sessions_active,
                "max_sessions": self.cfg.server.max_sessions, "uptime_s": round(time.monotonic() - self.started, 1),
                # the browser page shows its token field when this is true
                "token_required": self.token is not None}

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        # Blocking inference runs in the loop's default executor; its stock size (cores + 4) is
        # filled by sessions waiting on the shared Whisper lock, which would hold back TTS work.
        workers = self.cfg.server.worker_threads or 4 + 2 * self.cfg.server.max_sessions
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voice-serve")
        asyncio.get_running_loop().set_default_executor(self._executor)
        if not self.resources.ready:
            await self.resources.start()
        scfg = self.cfg.server
        connection = VoiceConnection.configured(
            send_timeout_s=scfg.send_timeout_s, max_buffer=2 * scfg.send_queue_bytes, close_grace_s=scfg.close_timeout_s,
            socket_send_buffer=scfg.socket_send_buffer_bytes, open_timeout_s=scfg.open_timeout_s,
            http_handler=self.audio_api, http_request_timeout_s=scfg.http_request_timeout_s,
            http_send_timeout_s=scfg.http_send_timeout_s, http_max_body=scfg.http_max_body_bytes)
        self._server = await serve(
            self._handle, self.host, self.port,
            create_connection=connection,
            process_request=self._process_request,
            select_subprotocol=lambda conn, offered: select_subprotocol(offered),
            max_size=scfg.max_message_bytes,
            max_queue=16,
            write_limit=1 << 16,
            ping_interval=scfg.ping_interval_s, ping_timeout=scfg.ping_timeout_s, close_timeout=scfg.close_timeout_s,
            open_timeout=None,  # VoiceConnection applies it to WebSocket handshakes only
            server_header="voice",
        )
        self.policy.port = self.bound_port  # port 0 = chosen by the OS
        log.info("voice serve: listening on http://%s:%d", self.host, self.bound_port)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        return self.gate.process(request)

    async def _handle(self, ws: ServerConnection) -> None:
        from voice.server.session import RealtimeSession

        assert isinstance(ws, VoiceConnection)

        if self.metrics.sessions_active >= self.cfg.server.max_sessions:
            self.metrics.sessions_rejected.update(["capacity"])
            await ws.close(1013, "too many sessions")
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self.metrics.sessions_active += 1
        self.metrics.sessions_total += 1
        binary = BINARY_SUBPROTOCOL in offered_subprotocols(ws.request.headers) if ws.request else False
        try:
            await RealtimeSession(ws, self.resources, self.cfg, self.metrics, binary=binary).run()
        except Exception:  # a session bug must not kill the server; the client gets 1011
            log.exception("session failed")
            ws.close_now(1011, "internal error", "internal_error")
        finally:
            self.metrics.sessions_active -= 1
            self.metrics.sessions_closed[ws.end_reason or "client"] += 1
            self._sessions.discard(task)
            if not self.metrics.sessions_active:  # the last one out gives the heap back
                await asyncio.to_thread(self._trim_heap)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def aclose(self) -> None:
        self.audio_api.abort_all()
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._own_resources:
            await self.resources.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> VoiceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
