"""Plain HTTP requests with bodies on the WebSocket port: one request per TCP connection, parsed
by h11 (sans-I/O) over a :class:`~voice.server.connection.VoiceConnection`'s transport.

websockets parses GET requests without a body only, so the connection looks at the request line
first (:func:`route`): a request for the OpenAI audio API (any method on ``/v1/audio/...`` or
``/v1/models``) or any method but GET becomes an :class:`HttpExchange`; everything else goes to
websockets as before. Deadlines: the whole request (headers and body) must arrive within
``server.http_request_timeout_s`` of connecting (else 408); a response left unread for
``server.http_send_timeout_s`` aborts the connection (the connection's flow-control watch). The
response always ends the connection (``Connection: close``), half-closing first so that the
client reads all of it before the socket goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from voice.server.openai_audio import ApiError
from voice.server.tcp import reset

if TYPE_CHECKING:
    from voice.server.connection import VoiceConnection

log = logging.getLogger(__name__)

#: Paths served by :class:`HttpExchange` whatever the method.
API_PREFIXES = ("/v1/audio/", "/v1/models")
#: Longest request line looked at before deciding; longer goes to websockets, which refuses it.
MAX_REQUEST_LINE = 8192
#: Largest header block h11 accepts.
MAX_HEADER_BYTES = 16384

Handler = Callable[["HttpExchange"], Awaitable[None]]


def route(head: bytes) -> str | None:
    """"http", "ws" or None (need more bytes) from the first bytes of a connection."""
    end = head.find(b"\r\n")
    if end < 0:
        return "ws" if len(head) > MAX_REQUEST_LINE else None
    parts = head[:end].split(b" ")
    if len(parts) != 3:
        return "ws"  # websockets answers malformed requests as it always did
    method, target = parts[0], parts[1]
    if method != b"GET":
        return "http"
    path = target.split(b"?", 1)[0].decode("latin-1")
    return "http" if path.startswith(API_PREFIXES) else "ws"


class HttpExchange:
    """One request and its response. The connection calls :meth:`receive` / :meth:`lost`; the
    handler awaits :meth:`read_request`, iterates :meth:`body`, and answers with
    :meth:`respond` or :meth:`start` + :meth:`write` + :meth:`end`."""

    def __init__(self, conn: VoiceConnection, *, deadline: float, max_body: int, send_timeout_s: float,
                 linger_s: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.max_body = max_body
        self.send_timeout_s = send_timeout_s
        self.linger_s = linger_s
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.request: h11.Request | None = None
        self.headers: dict[str, str] = {}
        self.status: int | None = None
        self.extra_headers: list[tuple[str, str]] = []
        self._data = asyncio.Event()
        self._closed = False
        self._request_done = False
        self._response_done = False
        self._discard = False
        #: Called once with the status sent (0 = none) when the exchange ends; set by the handler.
        self.on_status: Callable[[int], None] | None = None

    # ------------------------------------------------------------ from the connection
    def receive(self, data: bytes) -> None:
        if self._request_done or self._discard:
            return  # one request per connection: anything after it (or after an error) is dropped
        self.h11.receive_data(data)
        self._data.set()

    def lost(self) -> None:
        self._closed = True
        self._data.set()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ reading
    async def _next(self) -> h11.Event:
        while True:
            event = self.h11.next_event()  # RemoteProtocolError on malformed HTTP
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            if self._closed:
                raise ConnectionResetError("client went away")
            self._data.clear()
            async with asyncio.timeout_at(self.deadline):
                await self._data.wait()

    async def read_request(self) -> h11.Request:
        event = await self._next()
        if isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("client went away")
        assert isinstance(event, h11.Request)
        self.request = event
        self.headers = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise ApiError(413, f"the request body is {int(length):,} bytes; at most {self.max_body:,} "
                                "(server.http_max_body_bytes)", code="request_too_large")
        return event

    @property
    def path(self) -> str:
        assert self.request is not None
        return self.request.target.decode("latin-1").split("?", 1)[0]

    @property
    def method(self) -> str:
        return self.request.method.decode("latin-1") if self.request is not None else ""

    async def body(self) -> AsyncIterator[bytes]:
        """The body piece by piece; ApiError 413 past ``max_body``; TimeoutError past the deadline."""
        got = 0
        if self.h11.they_are_waiting_for_100_continue:  # curl asks before uploads over 1 MB
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                got += len(event.data)
                if got > self.max_body:
                    raise ApiError(413, f"the request body is over {self.max_body:,} bytes "
                                        "(server.http_max_body_bytes)", code="request_too_large")
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._request_done = True
                return
            else:
                raise ConnectionResetError("client went away")

    async def read_body(self) -> bytes:
        out = bytearray()
        async for piece in self.body():
            out += piece
        return bytes(out)

    # ------------------------------------------------------------ writing
    async def _send(self, event: h11.Event) -> None:
        if self._closed:
            raise ConnectionResetError("client went away")
        data = self.h11.send(event)
        if data:
            self.conn.transport.write(data)
        await self.conn.writable()
        if self._closed:
            raise ConnectionResetError("client went away")

    @property
    def started(self) -> bool:
        return self.status is not None

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status line and headers; the body follows with :meth:`write` (chunked when
        no Content-Length is among ``headers``)."""
        self.status = status
        base = [("Server", "voice"), ("Connection", "close"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")]
        await self._send(h11.Response(status_code=status, reason=HTTPStatus(status).phrase.encode(),
                                      headers=[*base, *self.extra_headers, *headers]))

    async def write(self, data: bytes) -> None:
        if data and self.method != "HEAD":  # a HEAD response has headers only
            await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())
        self._response_done = True

    async def respond(self, status: int, content_type: str, body: bytes,
                      headers: list[tuple[str, str]] | None = None) -> None:
        await self.start(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  *(headers or [])])
        await self.write(body)
        await self.end()

    async def respond_error(self, err: ApiError, headers: list[tuple[str, str]] | None = None) -> None:
        await self.respond(err.status, "application/json", err.body(), headers)

    # ------------------------------------------------------------ the whole exchange
    async def run(self, handler: Handler) -> None:
        """Serve the one request with ``handler``, answer errors it leaves, end the connection."""
        try:
            try:
                await handler(self)
            except ApiError as err:
                if not self.started:
                    await self.respond_error(err)
            except TimeoutError:
                if not self.started:
                    await self.respond_error(ApiError(408, "the request did not arrive in time "
                                                      "(server.http_request_timeout_s)", code="request_timeout"))
            except h11.RemoteProtocolError as err:
                if not self.started and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self.respond_error(ApiError(400, f"malformed HTTP request: {err}", code="bad_request"))
            except (ConnectionError, h11.LocalProtocolError):
                raise
            except Exception:  # a handler bug must not kill the server; the client gets a 500
                log.exception("HTTP %s %s failed", self.method, self.path if self.request else "")
                if not self.started:
                    await self.respond_error(ApiError(500, "internal error (see the server log)", code="internal_error"))
        except (ConnectionError, h11.LocalProtocolError) as err:
            log.debug("HTTP exchange with %s ended: %s", self.conn.remote_address, err)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self._discard = True
        if self.on_status is not None:
            self.on_status(self.status if self._response_done and self.status is not None else 0)
        transport = self.conn.transport
        if self._closed or transport.is_closing():
            return
        if not self._response_done:
            reset(transport)  # a response cut short cannot be told apart from a whole one otherwise
            return
        loop = asyncio.get_running_loop()
        # Half-close (the transport sends FIN once its buffer is out); the client reads to the end
        # and closes. Nothing it sends now is read; the stall deadline still aborts a non-reader.
        with contextlib.suppress(OSError, RuntimeError):
            if transport.can_write_eof():
                transport.write_eof()
        # A client whose body was refused part-way may still be sending it: it gets until the
        # request deadline to finish and read the answer (its bytes are dropped unread).
        until = loop.time() + self.send_timeout_s + self.linger_s
        if not self._request_done:
            until = max(until, self.deadline)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(until):
                await self.conn.wait_lost()
