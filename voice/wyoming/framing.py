"""Bytes -> Wyoming events, bounded (sans-I/O: no sockets, no asyncio).

A Wyoming event on the wire is one JSON header line, then ``data_length`` bytes of JSON that
are merged into the header's ``data``, then ``payload_length`` bytes of binary payload::

    {"type": "audio-chunk", "data": {...}, "data_length": 43, "payload_length": 2048}\\n
    <data_length bytes><payload_length bytes>

The wyoming library's own reader trusts both lengths and drops the connection without a word on
a bad line. :class:`EventParser` bounds every part instead and reports what was wrong:

- a header line longer than ``max_event_bytes`` is fatal (nothing after it can be framed): a
  :class:`FrameError` with ``fatal=True``; the connection should answer it and close;
- a header that is not a JSON object with a string ``type``, or bad lengths, or a data block
  that is not a JSON object: a non-fatal :class:`FrameError`; the parser goes on with the next
  event (the declared data and payload, when the lengths were readable, are skipped);
- header plus data over ``max_event_bytes``, or a payload over ``max_payload_bytes``: a
  non-fatal :class:`FrameError` once the header is read; the declared bytes are skipped without
  being kept, so memory stays bounded by the limits whatever a client declares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event


@dataclass(frozen=True)
class FrameError:
    """Input that is not a usable event. ``code`` goes into the Wyoming ``error`` event."""

    code: str
    text: str
    #: The byte stream cannot be framed any further: answer, then close.
    fatal: bool = False


def _length(header: dict[str, Any], key: str) -> int | None:
    """A non-negative integer length field (absent = 0), or None when it is not one."""
    value = header.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class EventParser:
    """Feed bytes, get events (and errors) back in order; never holds more than the limits."""

    def __init__(self, max_event_bytes: int, max_payload_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_payload_bytes = max_payload_bytes
        self._buf = bytearray()
        self._header: dict[str, Any] | None = None
        self._data_len = 0
        self._payload_len = 0
        self._skip = 0  # bytes still to drop (an oversized or broken event's body)
        self._broken = False

    def feed(self, data: bytes) -> list[Event | FrameError]:
        """Everything complete in ``data`` plus what was buffered before."""
        if self._broken:
            return []
        self._buf += data
        out: list[Event | FrameError] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if self._header is None:
                item = self._read_header()
                if item is None:
                    return out
                if isinstance(item, FrameError):
                    out.append(item)
                    if item.fatal:
                        self._broken = True
                        self._buf.clear()
                        return out
                continue
            need = self._data_len + self._payload_len
            if len(self._buf) < need:
                return out
            out.append(self._finish(bytes(self._buf[: self._data_len]),
                                    bytes(self._buf[self._data_len:need])))
            del self._buf[:need]

    def _read_header(self) -> FrameError | bool | None:
        """Parse one header line from the buffer: None = need more bytes, True = header set."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.max_event_bytes:
                return FrameError(
                    "event-too-large",
                    f"event header line is longer than {self.max_event_bytes} bytes; closing",
                    fatal=True,
                )
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        if not line.strip():
            return True  # blank lines between events are harmless
        if len(line) > self.max_event_bytes:
            return FrameError("event-too-large",
                              f"event header line is longer than {self.max_event_bytes} bytes; closing",
                              fatal=True)
        try:
            header = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return FrameError("malformed-event", "event header is not JSON")
        if not isinstance(header, dict):
            return FrameError("malformed-event", "event header is not a JSON object")
        data_len = _length(header, "data_length")
        payload_len = _length(header, "payload_length")
        if data_len is None or payload_len is None:
            return FrameError(
                "malformed-event",
                "data_length and payload_length must be non-negative integers; closing",
                fatal=True,  # the event's end is unknown: nothing after it can be framed
            )
        event_type = header.get("type")
        data = header.get("data", {})
        if not isinstance(event_type, str) or not event_type or (data is not None and not isinstance(data, dict)):
            self._skip = data_len + payload_len
            return FrameError("malformed-event", "event needs a string 'type' and an object 'data'")
        if len(line) + data_len > self.max_event_bytes:
            self._skip = data_len + payload_len
            return FrameError(
                "event-too-large",
                f"'{event_type}' event of {len(line) + data_len} bytes is over the limit of"
                f" {self.max_event_bytes} (wyoming.max_event_bytes); skipped",
            )
        if payload_len > self.max_payload_bytes:
            self._skip = data_len + payload_len
            return FrameError(
                "payload-too-large",
                f"'{event_type}' payload of {payload_len} bytes is over the limit of"
                f" {self.max_payload_bytes} (wyoming.max_payload_bytes); skipped",
            )
        self._header = {"type": event_type, "data": dict(data or {})}
        self._data_len = data_len
        self._payload_len = payload_len
        return True

    def _finish(self, data_block: bytes, payload: bytes) -> Event | FrameError:
        header = self._header
        assert header is not None
        self._header = None
        self._data_len = self._payload_len = 0
        data: dict[str, Any] = header["data"]
        if data_block:
            try:
                extra = json.loads(data_block)
            except (ValueError, UnicodeDecodeError):
                return FrameError("malformed-event", f"'{header['type']}' event data is not JSON")
            if not isinstance(extra, dict):
                return FrameError("malformed-event", f"'{header['type']}' event data is not a JSON object")
            data.update(extra)
        return Event(type=header["type"], data=data, payload=payload or None)
