"""Hostile input: thousands of malformed, truncated, oversized, out-of-order and wrongly typed
messages and binary garbage. The server answers each with an error event or a proper close code,
never crashes, other sessions keep working, and 100 disconnects mid-turn leak nothing."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import random
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.server import RunningServer, text_turn

pytestmark = pytest.mark.slow


def bad_messages(rng: random.Random, n: int) -> list[str | bytes]:
    good = [
        {"type": "session.update", "session": {"voice": "alloy"}},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.cancel"},
        {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 5},
        {"type": "input_audio_buffer.append", "audio": "AAA"},
        {"type": "conversation.item.create", "item": {"type": "message", "role": "system", "content": []}},
        {"type": "response.create"},  # nothing to respond to
    ]
    junk = [None, 1, -7, 2.5, "x", [], {}, True, "../../../etc/passwd", {"$ref": "/"}, "A" * 300]
    out: list[str | bytes] = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(rng.choice(["{", "}", "[1,2", "nul", '{"type":', "\"unterminated", "{'single': 1}", ""]))
        elif kind == 1:
            msg = dict(rng.choice(good))
            key = rng.choice([*msg.keys(), "item", "audio", "session"])
            msg[key] = rng.choice(junk)
            out.append(json.dumps(msg))
        elif kind == 2:
            raw = json.dumps(rng.choice(good))
            out.append(raw[: rng.randint(1, len(raw) - 1)])
        elif kind == 3:
            out.append(json.dumps({"type": rng.choice(["x", "session.delete", "response.create.now", 3, None]),
                                   "event_id": f"ev{i}"}))
        elif kind == 4:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))))  # binary not negotiated
        else:
            out.append(json.dumps(rng.choice(good) | {"event_id": f"ev{i}"}))
    return out


async def _count_errors(ws, expected: int) -> int:
    n = 0
    async with asyncio.timeout(60):
        while n < expected:
            m = json.loads(await ws.recv())
            assert m["type"] in ("error", "session.updated"), m
            n += 1
    return n


async def test_thousands_of_bad_messages_each_answered(voice_server: RunningServer) -> None:
    msgs = bad_messages(random.Random(3), 3000)
    before = voice_server.server.metrics.sessions_total

    async def good_session() -> dict:
        async with connect(voice_server.url) as ws:
            await ws.recv()
            return await text_turn(ws, "Say one word.")

    async def hostile_session(chunk: list[str | bytes]) -> None:
        async with connect(voice_server.url) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            reader = asyncio.create_task(_count_errors(ws, len(chunk)))
            for m in chunk:
                await ws.send(m)
            assert await reader == len(chunk)  # every message got exactly one answer
            # echo of event_id
            await ws.send(json.dumps({"type": "bogus", "event_id": "mine-1"}))
            assert json.loads(await ws.recv())["error"]["event_id"] == "mine-1"

    good = asyncio.create_task(good_session())
    await asyncio.gather(*(hostile_session(msgs[i::3]) for i in range(3)))
    r = await good
    assert r["status"] == "completed" and r["audio"] > 0  # the other session kept working
    assert voice_server.server.metrics.sessions_total - before == 4


async def test_oversized_and_invalid_frames_close_properly(voice_server: RunningServer) -> None:
    limit = voice_server.server.cfg.server.max_message_bytes
    async with connect(voice_server.url, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (limit + 10))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1009
    # invalid UTF-8 in a text frame -> 1007 (websockets enforces it)
    async with connect(voice_server.url) as ws:
        await ws.recv()
        await ws.send(b"\xff\xfe{}", text=True)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1007
    # base64 audio larger than the limit inside a legal frame is an error event, not a crash
    async with connect(voice_server.url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (limit - 100)}))
        m = json.loads(await ws.recv())
        assert m["type"] == "error"
        r = await text_turn(ws, "Hi.")  # the session still works
        assert r["status"] == "completed"


def _tasks(server: RunningServer) -> int:
    return server.call(lambda: len(asyncio.all_tasks(server.loop)))


async def test_disconnects_mid_turn_leak_nothing(voice_server: RunningServer) -> None:
    import tracemalloc

    async def drop_mid_turn(i: int) -> None:
        async with connect(voice_server.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Count to {i}."}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(b"\x00\x10" * 4800).decode()}))
            async with asyncio.timeout(60):  # leave once the answer is under way
                while True:
                    m = await ws.recv()
                    if isinstance(m, str) and json.loads(m)["type"] in ("response.created",):
                        break
            if i % 2:
                ws.transport.abort()  # no close handshake at all

    async def settle() -> None:
        for _ in range(200):
            if voice_server.server.metrics.sessions_active == 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)

    # warm-up round at the measured concurrency (10), so the executor's workers and the lazily
    # created caches that ten concurrent turns bring exist before we measure
    await asyncio.gather(*(drop_mid_turn(i) for i in range(10)))
    await settle()
    threads0, tasks0 = threading.active_count(), _tasks(voice_server)
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for start in range(0, 100, 10):
        await asyncio.gather(*(drop_mid_turn(start + i) for i in range(10)))
    await settle()
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert voice_server.server.metrics.sessions_active == 0
    assert _tasks(voice_server) <= tasks0
    assert threading.active_count() <= threads0 + 2  # thread pools may add a worker, never one per session
    assert grown < 8 * 1024 * 1024, f"python heap grew by {grown} bytes over 100 sessions"
    async with connect(voice_server.url) as ws:  # and the server still answers
        await ws.recv()
        assert (await text_turn(ws, "Hello."))["status"] == "completed"
