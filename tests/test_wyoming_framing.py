"""The bounded Wyoming event parser, without sockets or models."""

from __future__ import annotations

import json
import random

from wyoming.audio import AudioChunk
from wyoming.event import Event
from wyoming.tts import Synthesize

from voice.wyoming.framing import EventParser, FrameError


def wire(event: Event) -> bytes:
    """What wyoming's own writer sends for ``event`` (header line, data block, payload)."""
    header: dict[str, object] = {"type": event.type, "version": "1.10.2"}
    data = json.dumps(event.data).encode() if event.data else b""
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header).encode() + b"\n" + data + (event.payload or b"")


def test_events_split_anywhere_come_out_whole_and_in_order() -> None:
    rng = random.Random(7)
    events = [Synthesize("Hello there.").event(),
              AudioChunk(16000, 2, 1, bytes(range(256)) * 8).event(),
              Event("describe")]
    stream = b"".join(wire(e) for e in events)
    for _ in range(20):
        parser = EventParser(4096, 4096)
        out: list[Event | FrameError] = []
        i = 0
        while i < len(stream):
            n = rng.randint(1, 50)
            out += parser.feed(stream[i : i + n])
            i += n
        assert [(e.type, e.data, e.payload) for e in out if isinstance(e, Event)] == [
            (e.type, e.data, e.payload) for e in events]


def test_header_data_and_data_block_are_merged() -> None:
    parser = EventParser(4096, 4096)
    (event,) = parser.feed(b'{"type": "synthesize", "data": {"a": 1}, "data_length": 8}\n{"b": 2}')
    assert isinstance(event, Event) and event.data == {"a": 1, "b": 2}


def test_oversized_events_are_skipped_without_being_kept() -> None:
    parser = EventParser(1024, 2048)
    big = wire(Synthesize("x" * 5000).event())
    huge_payload = wire(AudioChunk(16000, 2, 1, bytes(10_000)).event())
    out = parser.feed(big + huge_payload + wire(Event("describe")))
    assert [o.code if isinstance(o, FrameError) else o.type for o in out] == [
        "event-too-large", "payload-too-large", "describe"]
    assert not any(o.fatal for o in out if isinstance(o, FrameError))
    assert len(parser._buf) == 0


def test_a_declared_length_is_never_allocated() -> None:
    """A client declaring a 1 TB payload: error once, then its bytes are dropped as they come."""
    parser = EventParser(1024, 2048)
    (err,) = parser.feed(b'{"type": "audio-chunk", "payload_length": 1000000000000}\n')
    assert isinstance(err, FrameError) and err.code == "payload-too-large"
    for _ in range(100):
        assert parser.feed(bytes(65536)) == []
        assert len(parser._buf) == 0


def test_broken_framing_is_fatal_and_the_rest_is_ignored() -> None:
    for data in (b"y" * 2000, b'{"type": "x", "data_length": -1}\n', b'{"type": "x", "payload_length": true}\n'):
        parser = EventParser(1024, 1024)
        out = parser.feed(data)
        assert len(out) == 1 and isinstance(out[0], FrameError) and out[0].fatal, out
        assert parser.feed(wire(Event("describe"))) == []


def test_malformed_headers_and_data_are_errors_the_parser_survives() -> None:
    parser = EventParser(1024, 1024)
    out = parser.feed(b"not json\n[1]\n" + b'{"data": {}}\n' + b'{"type": "x", "data": 3}\n'
                      + b'{"type": "x", "data_length": 3}\n[1]' + b"\n\n" + wire(Event("describe")))
    assert [o.code if isinstance(o, FrameError) else o.type for o in out] == [
        "malformed-event"] * 5 + ["describe"]
