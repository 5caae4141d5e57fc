"""The server's WebSocket connection: websockets' :class:`ServerConnection` plus deadlines that
hold when the client stops reading.

websockets' ``send``, ``ping`` and ``close`` wait for the send buffer to drain before any of their
timeouts start, so a client that never reads held its connection, its session and the memory
queued for it for as long as it liked. Here the transport's flow control is watched instead:
while writing is paused (buffer above ``write_limit``) nothing is read from the client, and
after ``send_timeout_s`` of it: close frame best-effort, then the TCP connection is reset
``close_timeout_s`` later (:mod:`voice.server.tcp`: a plain close leaves the kernel holding
its buffered data for a client that never takes it). A write buffer past ``max_buffer``
(websockets answers every ping with a pong without waiting for the buffer, so a client sending
pings and reading nothing grows it) is aborted at once.

HTTP requests with bodies (the OpenAI audio API) share the port: the first bytes' request line
decides (:func:`voice.server.http_exchange.route`); such a connection is served by an
:class:`~voice.server.http_exchange.HttpExchange` inside :meth:`handshake`, under the same
flow-control watch (``http_send_timeout_s``, then abort). The opening handshake's deadline
(``open_timeout_s``) is applied here, since websockets' own would cut a long HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from voice.server.http_exchange import Handler, HttpExchange, route
from voice.server.tcp import reset, reset_on_close

log = logging.getLogger(__name__)

#: The reason websockets writes in the close frame when a keepalive ping got no pong.
KEEPALIVE_CLOSE_REASON = "keepalive ping timeout"


class VoiceConnection(ServerConnection):
    """Use :meth:`configured` to get a subclass with the limits for ``serve(create_connection=...)``."""

    send_timeout_s: float = 20.0
    max_buffer: int = 4 << 20
    close_grace_s: float = 2.0
    socket_send_buffer: int = 0
    open_timeout_s: float = 10.0
    http_handler: Handler | None = None
    http_request_timeout_s: float = 120.0
    http_send_timeout_s: float = 20.0
    http_max_body: int = 26_214_400

    @classmethod
    def configured(cls, *, send_timeout_s: float, max_buffer: int, close_grace_s: float,
                   socket_send_buffer: int = 0, open_timeout_s: float = 10.0, http_handler: Handler | None = None,
                   http_request_timeout_s: float = 120.0, http_send_timeout_s: float = 20.0,
                   http_max_body: int = 26_214_400) -> type[VoiceConnection]:
        attrs = {"send_timeout_s": send_timeout_s, "max_buffer": max_buffer, "close_grace_s": close_grace_s,
                 "socket_send_buffer": socket_send_buffer, "open_timeout_s": open_timeout_s,
                 "http_handler": staticmethod(http_handler) if http_handler else None,
                 "http_request_timeout_s": http_request_timeout_s, "http_send_timeout_s": http_send_timeout_s,
                 "http_max_body": http_max_body}
        return type(cls.__name__, (cls,), attrs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Why the server ended the connection (a metrics label), None if the client did.
        self.end_reason: str | None = None
        #: Loop times: writing last paused, the server started closing, the connection ended.
        self.paused_at: float | None = None
        self.close_started: float | None = None
        self.lost_at: float | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._abort_at: asyncio.TimerHandle | None = None
        self.started_at = self.loop.time()
        #: The plain HTTP request on this connection, if the first bytes were one.
        self.exchange: HttpExchange | None = None
        self._head = bytearray()
        self._routed: asyncio.Future[str] = self.loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        """The WebSocket handshake within ``open_timeout_s``, or the HTTP exchange with its own
        deadlines. After an exchange the state is still CONNECTING, so websockets aborts the
        transport: the exchange has flushed and half-closed it by then."""
        deadline = self.started_at + self.open_timeout_s
        async with asyncio.timeout_at(deadline):
            waits: list[asyncio.Future[Any]] = [self._routed, self.connection_lost_waiter]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if self.exchange is not None:
            assert self.http_handler is not None
            await self.exchange.run(self.http_handler)
            return
        async with asyncio.timeout_at(deadline):
            await super().handshake(*args, **kwargs)

    async def writable(self) -> None:
        """Return once the transport takes more writes (or the connection is gone)."""
        await self._writable.wait()

    async def wait_lost(self) -> None:
        await asyncio.shield(self.connection_lost_waiter)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages.resume = self._resume_reading
        sock = transport.get_extra_info("socket")
        if self.socket_send_buffer and sock is not None:
            # Linux autotunes a socket's send buffer up to 4 MiB: ~3 MB (47 s of base64 audio)
            # vanished into the kernel for a client that never read, before flow control noticed.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)

    # Flow control: while the client leaves our writes unread, its frames are not read either
    # (TCP pushes back on it: no errors, pongs or events pile up for it), and the deadline runs.
    def pause_writing(self) -> None:
        super().pause_writing()
        self._writable.clear()
        self.paused_at = self.loop.time()
        self.transport.pause_reading()
        if self._stall is None:
            timeout = self.http_send_timeout_s if self.exchange is not None else self.send_timeout_s
            self._stall = self.loop.call_later(timeout, self._stalled)

    def resume_writing(self) -> None:
        self._cancel_stall()
        self._writable.set()
        super().resume_writing()
        if not self.recv_messages.paused:  # the message queue may still hold reading back
            self.transport.resume_reading()

    def _resume_reading(self) -> None:
        if not self.paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.receive(data)
            return
        if not self._routed.done():
            self._head += data
            kind = route(bytes(self._head)) if self.http_handler is not None else "ws"
            if kind is None:
                return
            data = bytes(self._head)
            self._head.clear()
            if kind == "http":
                self.exchange = HttpExchange(
                    self, deadline=self.started_at + self.http_request_timeout_s, max_body=self.http_max_body,
                    send_timeout_s=self.http_send_timeout_s, linger_s=self.close_grace_s)
                self._routed.set_result(kind)
                self.exchange.receive(data)
                return
            self._routed.set_result(kind)
        super().data_received(data)
        if self.transport.get_write_buffer_size() > self.max_buffer:
            log.warning("aborting %s: %d bytes unread in its write buffer", self.remote_address,
                        self.transport.get_write_buffer_size())
            self.end_reason = self.end_reason or "write_buffer"
            self.close_started = self.close_started or self.loop.time()
            reset(self.transport)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self.exchange is not None:
            self.exchange.receive(b"")  # h11 reads EOF as the end of the client's side
            return True  # keep the transport open: the response may still be written
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = self.loop.time()
        self._writable.set()
        if self.exchange is not None:
            self.exchange.lost()
        sent = self.protocol.close_sent
        if self.end_reason is None and sent is not None and sent.reason == KEEPALIVE_CLOSE_REASON:
            self.end_reason = "keepalive"  # websockets' own keepalive (its ping could be written)
        self._cancel_stall()
        if self._abort_at is not None:
            self._abort_at.cancel()
            self._abort_at = None
        super().connection_lost(exc)

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if self.exchange is not None:
            log.info("aborting %s: it left an HTTP response unread for %.1f s", self.remote_address,
                     self.http_send_timeout_s)
            self.end_reason = self.end_reason or "slow_client"
            reset(self.transport)
            return
        log.info("closing %s: it read nothing for %.1f s", self.remote_address, self.send_timeout_s)
        # whoever ends it (our abort, websockets' close timeout), what it left unread is dropped
        reset_on_close(self.transport)
        self.close_now(1008, "client is not reading", "slow_client")

    def send_data(self) -> None:
        sent = self.protocol.close_sent
        if sent is not None and sent.reason == KEEPALIVE_CLOSE_REASON:
            # websockets' keepalive gave up on the client: its end is a reset too, or the socket
            # stays in FIN_WAIT (with whatever the client left unread) after the session is gone
            reset_on_close(self.transport)
        super().send_data()

    def close_now(self, code: int, reason: str, why: str) -> None:
        """Start the closing handshake without waiting for the send buffer: the close frame goes
        behind whatever is queued, and the TCP connection is aborted ``close_grace_s`` later
        unless the client completed the handshake by then. Idempotent; never blocks."""
        if self.end_reason is None:
            self.end_reason = why
        if self.close_started is None:
            self.close_started = self.loop.time()
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            try:
                self.send_data()
            except Exception as err:  # noqa: BLE001 - a dead socket is what we are closing
                log.debug("close frame not written: %s", err)
        if self.protocol.state is not State.CLOSED and self._abort_at is None and not self.connection_lost_waiter.done():
            self._abort_at = self.loop.call_later(self.close_grace_s, self._abort)

    def _abort(self) -> None:
        self._abort_at = None
        if not self.connection_lost_waiter.done():
            reset(self.transport)
