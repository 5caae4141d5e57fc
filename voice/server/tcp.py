"""Ending a TCP connection at once, buffers and all.

A plain abort closes the socket gracefully: the kernel keeps what is in its send buffer (up to
twice ``SO_SNDBUF``) and trickles it to a client that reads slowly or not at all, FIN last, for
as long as that client keeps its window shut (FIN_WAIT1: 45 s and counting when measured).
Linger 0 makes the close a reset: the data is dropped, the buffer freed and the client told
now."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


def reset_on_close(transport: asyncio.BaseTransport) -> None:
    """Make whichever close or abort ends ``transport`` from now on a TCP reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset(transport: asyncio.WriteTransport) -> None:
    """Abort ``transport`` with a TCP reset."""
    reset_on_close(transport)
    transport.abort()
