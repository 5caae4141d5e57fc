"""The asyncio shell of ``voice wyoming``: sockets in, :class:`WyomingSession` per connection.

Each connection is one task: read bytes (bounded by ``wyoming.idle_timeout_s`` between
requests), feed the :class:`~voice.wyoming.framing.EventParser`, hand each event to the
session and write what it yields, in order. A connection past ``wyoming.max_clients`` gets one
``error`` event (code ``server-busy``) and is closed. Stopping the server cancels every
connection task and waits for them (each closes its chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import urlparse

from wyoming.event import Event, async_write_event

from voice.config import Config
from voice.errors import ConfigError
from voice.wyoming.framing import EventParser, FrameError
from voice.wyoming.service import WyomingService, WyomingSession, error_event

log = logging.getLogger(__name__)

READ_BYTES = 1 << 16


def parse_uri(uri: str) -> tuple[str, str, int | None]:
    """``tcp://host:port`` -> ("tcp", host, port); ``unix:///path`` -> ("unix", path, None)."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ConfigError(f"wyoming.uri {uri!r}: expected tcp://HOST:PORT (port 0 = any free port)")
        return "tcp", parsed.hostname, port
    if parsed.scheme == "unix" and parsed.path:
        return "unix", parsed.path, None
    raise ConfigError(f"wyoming.uri {uri!r}: expected tcp://HOST:PORT or unix:///path/to.sock")


class WyomingServer:
    """``async with WyomingServer(cfg) as s: await s.serve_forever()``; ``s.uri`` is where it listens."""

    def __init__(self, cfg: Config, service: WyomingService | None = None) -> None:
        self.cfg = cfg
        self.scheme, self.host, self.port = parse_uri(cfg.wyoming.uri)  # a bad URI fails before loading
        self.service = service if service is not None else WyomingService(cfg)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.active = 0

    @property
    def uri(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.host}"
        return f"tcp://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.service.start()
        if self.scheme == "unix":
            await asyncio.to_thread(Path(self.host).unlink, missing_ok=True)
            self._server = await asyncio.start_unix_server(self._accept, path=self.host)
        else:
            self._server = await asyncio.start_server(self._accept, host=self.host, port=self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            if self.scheme == "unix":
                await asyncio.to_thread(Path(self.host).unlink, missing_ok=True)
        await self.service.aclose()

    async def __aenter__(self) -> WyomingServer:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- connections
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.active >= self.cfg.wyoming.max_clients:
                await self._send(writer, error_event(
                    "server-busy", f"{self.active} clients are connected, the limit is"
                    f" {self.cfg.wyoming.max_clients} (wyoming.max_clients); try again later"))
                return
            self.active += 1
            try:
                await self._serve(reader, writer)
            finally:
                self.active -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wcfg = self.cfg.wyoming
        parser = EventParser(wcfg.max_event_bytes, wcfg.max_payload_bytes)
        session = WyomingSession(self.service)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_BYTES), wcfg.idle_timeout_s)
                except TimeoutError:
                    await self._send(writer, error_event(
                        "idle-timeout", f"nothing received for {wcfg.idle_timeout_s:g} s"
                        " (wyoming.idle_timeout_s); closing"))
                    return
                if not data:
                    return
                for item in parser.feed(data):
                    if isinstance(item, FrameError):
                        await self._send(writer, error_event(item.code, item.text))
                        if item.fatal:
                            return
                        continue
                    try:
                        async for out in session.handle(item):
                            await self._send(writer, out)
                    except (ConnectionError, asyncio.CancelledError):
                        raise
                    except Exception as err:  # a bug, not the client's fault: say so, keep serving
                        log.exception("wyoming: %s event failed", item.type)
                        await self._send(writer, error_event("internal-error", f"{type(err).__name__}: {err}"))
        finally:
            await session.aclose()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, event: Event) -> None:
        await async_write_event(event, writer)
