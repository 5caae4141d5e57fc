"""No client can hold the server: raw never-reading clients (4 KB receive buffer, the WebSocket
handshake done by hand) that flood invalid frames, flood pings or ask for a long answer are closed
within the configured deadline, server memory returns to its baseline, and normal clients are
served during and after. DNS-rebinding-safe Host/Origin defaults, token rules, instruction limits.
Real models (tiny.en, SmolLM2, Piper), shared with the session's test server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import gc
import json
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers.server import RunningServer, start_server, text_turn

pytestmark = pytest.mark.slow

SEND_TIMEOUT_S = 2.0
CLOSE_TIMEOUT_S = 1.0
SLACK_S = 1.5  # scheduling on a loaded 2-core machine
KEEPALIVE_S = 40.0  # server.ping_interval_s + server.ping_timeout_s (defaults)


def rss_mb(settle_s: float = 0.0) -> float:
    """This process's RSS (the server runs in it). ``settle_s``: wait first, so the heap trim the
    server runs in a thread when its last session ends has finished."""
    time.sleep(settle_s)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def kernel_sockets(server_port: int, client_port: int) -> list[str]:
    """TCP states (hex, as /proc/net/tcp writes them) of the server's sockets to ``client_port``.
    A gracefully closed socket with unsent data stays here (FIN_WAIT1, 04) for minutes while a
    client that never reads keeps its window shut; a reset one is gone at once."""
    states = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(name) as fh:
            for line in list(fh)[1:]:
                local, remote, state = line.split()[1:4]
                if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                    states.append(state)
    return states


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class RawClient:
    """A WebSocket client on a plain socket with a ~4 KB receive buffer that reads the 101
    response and nothing after it."""

    def __init__(self, port: int, *, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /v1/realtime?model=voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: leave session.created unread
            b = self.sock.recv(1)
            assert b, "server closed during the handshake"
            head += b
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    def send_event(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(frame(json.dumps(obj).encode()))

    def flood(self, data: bytes) -> None:
        """Send until the server cuts the connection (or everything went)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def is_dead(self, within: float = 5.0) -> bool:
        """True once the server has ended the TCP connection (reads what is buffered to see it);
        waits up to ``within`` s for the FIN behind the data still in flight on a loaded machine."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except (TimeoutError, BlockingIOError):
                pass
        return False

    def close(self) -> None:
        self.sock.close()


def _three_attacks(server: RunningServer) -> tuple[list[RawClient], list[threading.Thread]]:
    """An invalid-frame flood, a ping flood and a long answer, none of them ever read."""
    clients = [RawClient(server.port) for _ in range(3)]
    flood, pings = clients[0], clients[1]
    workers = [threading.Thread(target=lambda: flood.flood(invalid_flood()), daemon=True),
               threading.Thread(target=lambda: pings.flood(ping_flood()), daemon=True)]
    for w in workers:
        w.start()
    long_answer(clients[2])
    return clients, workers


@pytest.fixture(scope="module")
def strict_server(voice_server: RunningServer) -> Iterator[RunningServer]:
    """The shared models behind a server with short deadlines and the default 16 sessions,
    warmed by one round of each attack and concurrent turns: the first such round grew RSS by a
    one-off ~60 MB (new threads' malloc arenas, buffers) that later rounds never added to."""
    cfg = copy.deepcopy(voice_server.server.cfg)
    cfg.server.send_timeout_s = SEND_TIMEOUT_S
    cfg.server.close_timeout_s = CLOSE_TIMEOUT_S
    cfg.server.max_sessions = 16
    running, shutdown = start_server(cfg, resources=voice_server.server.resources)
    clients, workers = _three_attacks(running)

    async def warm() -> None:
        await asyncio.gather(*(_normal_turn(running) for _ in range(3)), return_exceptions=True)
        await _wait_sessions(running, 0, within=KEEPALIVE_S + 10)

    asyncio.run(warm())
    for w in workers:
        w.join(timeout=30)
    for c in clients:
        c.close()
    yield running
    shutdown()


def _connections(server: RunningServer) -> dict[int, Any]:
    return server.call(lambda: {c.remote_address[1]: c for c in server.server._server.connections})


def _active(server: RunningServer) -> int:
    return server.call(lambda: server.server.metrics.sessions_active)


async def _wait_sessions(server: RunningServer, n: int, within: float) -> float:
    t0 = time.monotonic()
    while _active(server) != n:
        assert time.monotonic() - t0 < within, f"{_active(server)} sessions active, expected {n}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def _check_deadline(conn: Any, opened: float | None = None, slack: float = SLACK_S) -> str:
    """The server closed ``conn`` within its deadline; returns why it closed it. ``opened``: loop
    time of the handshake, for the keepalive deadline."""
    assert conn.lost_at is not None, "connection still open"
    assert conn.end_reason in ("slow_client", "send_queue_full", "error_rate", "write_buffer", "keepalive"), (
        conn.end_reason)
    if conn.end_reason == "slow_client":  # writing paused -> send_timeout_s -> close frame -> abort
        assert conn.lost_at - conn.paused_at <= SEND_TIMEOUT_S + CLOSE_TIMEOUT_S + slack, (
            conn.lost_at - conn.paused_at)
    elif conn.end_reason == "keepalive":  # nothing filled the buffer: the ping went out, no pong
        assert opened is not None, "keepalive closed a connection that was expected to stall"
        assert conn.lost_at - opened <= KEEPALIVE_S + CLOSE_TIMEOUT_S + slack, conn.lost_at - opened
    else:
        assert conn.lost_at - conn.close_started <= CLOSE_TIMEOUT_S + slack, conn.lost_at - conn.close_started
    return str(conn.end_reason)


@functools.cache  # built once: per-round copies in fresh threads blurred the RSS figures
def invalid_flood(n: int = 500_000) -> bytes:
    return frame(b"x") * n  # one-byte text frames, each an invalid_json error


@functools.cache
def ping_flood(n: int = 100_000) -> bytes:
    return frame(b"p" * 125, opcode=0x9) * n  # every ping gets a pong that nobody reads


def long_answer(client: RawClient) -> None:
    client.send_event({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Tell me a long story about a dragon who learns to bake bread."}]}})
    client.send_event({"type": "response.create"})


async def _normal_turn(server: RunningServer) -> dict[str, Any]:
    async with connect(server.url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        return await text_turn(ws, "Say one word.")


def _baseline(server: RunningServer, concurrent: int = 3) -> float:
    """RSS once warm: concurrent turns first, so the worker threads (each with its own malloc
    arena), LLM slots and ONNX buffers that concurrency brings exist (a one-off ~60 MB)."""

    async def warm() -> list[Any]:
        return list(await asyncio.gather(*(_normal_turn(server) for _ in range(concurrent)), return_exceptions=True))

    asyncio.run(warm())  # on a busy machine some may time out; they warmed all the same
    gc.collect()
    return rss_mb(settle_s=1.0)


@pytest.mark.parametrize("attack", ["invalid_frames", "pings", "long_answer"])
def test_never_reading_client_is_closed_and_freed(strict_server: RunningServer, attack: str) -> None:
    base = _baseline(strict_server)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    client = RawClient(strict_server.port)
    conn = _connections(strict_server)[client.port]
    t0 = time.monotonic()
    if attack == "long_answer":
        long_answer(client)
        worker = None
    else:
        make = invalid_flood if attack == "invalid_frames" else ping_flood
        worker = threading.Thread(target=lambda: client.flood(make()), daemon=True)
        worker.start()

    async def during_and_after() -> list[dict[str, Any]]:
        during = await _normal_turn(strict_server)  # served while the hostile client is connected
        await _wait_sessions(strict_server, 0, within=60)
        return [during, await _normal_turn(strict_server)]

    results = asyncio.run(during_and_after())
    held_s = time.monotonic() - t0
    if worker is not None:
        worker.join(timeout=30)
        assert not worker.is_alive(), "the flood was never cut off"
    reason = _check_deadline(conn, t0)
    assert kernel_sockets(strict_server.port, client.port) == [], "the kernel still holds the aborted socket"
    assert client.is_dead()
    client.close()
    stop.set()
    sampler.join()
    gc.collect()
    after = rss_mb(settle_s=1.0)
    for r in results:
        assert r["status"] == "completed" and r["audio"] > 0
    if attack == "long_answer":
        # Its audio waited (bounded), then the send deadline fired; on a loaded machine the
        # answer may not have filled the buffers before the keepalive's deadline, which then
        # closes it (CI, load 7-9): only a connection whose writes never stalled may end so.
        assert reason == "slow_client" or (reason == "keepalive" and conn.paused_at is None), (reason, conn.paused_at)
    closed = strict_server.server.metrics.sessions_closed
    print(f"{attack}: closed for {reason} after {held_s:.1f} s; rss {base:.0f} -> peak {peak[0]:.0f} -> "
          f"{after:.0f} MB; closed so far {dict(closed)}")
    assert after - base < 50, f"RSS {base:.0f} -> {after:.0f} MB"


def test_keepalive_timeout_resets_a_silent_client(voice_server: RunningServer) -> None:
    """A client that never reads and never pongs, with too little sent to stall the socket, is
    ended by the keepalive (ping_interval_s + ping_timeout_s + close_timeout_s) with a reset:
    the server's kernel keeps no FIN_WAIT socket for it and the client sees the end."""
    cfg = copy.deepcopy(voice_server.server.cfg)
    cfg.server.ping_interval_s = 1.0
    cfg.server.ping_timeout_s = 1.0
    cfg.server.close_timeout_s = CLOSE_TIMEOUT_S
    running, shutdown = start_server(cfg, resources=voice_server.server.resources)
    try:
        client = RawClient(running.port)
        conn = _connections(running)[client.port]
        deadline = time.monotonic() + 20
        while running.call(lambda: conn.lost_at) is None:
            assert time.monotonic() < deadline, "the keepalive never ended it"
            time.sleep(0.05)
        assert conn.end_reason == "keepalive", conn.end_reason
        assert conn.paused_at is None  # it was the keepalive, not a stalled socket
        assert conn.lost_at - conn.started_at <= 2.0 + CLOSE_TIMEOUT_S + SLACK_S, conn.lost_at - conn.started_at
        assert kernel_sockets(running.port, client.port) == [], "the kernel still holds the socket"
        assert client.is_dead()
        client.close()
    finally:
        shutdown()


def test_sixteen_never_reading_clients_and_a_seventeenth(strict_server: RunningServer) -> None:
    """max_sessions = 16 held by never-reading clients (8 floods, 8 long answers): all are closed
    within the deadline and a 17th normal client gets a session and its answer."""
    # warm at the concurrency the test reaches: the first time 16 sessions run at once the
    # worker threads, their malloc arenas and the LLM slots grow a one-off ~70 MB (663 -> 736 MB
    # with 8 warm turns, 2026-12-01); ten rounds of attacks after that stay flat (next test)
    base = _baseline(strict_server, concurrent=16)
    opened = time.monotonic()  # the server loop's clock
    clients = [RawClient(strict_server.port) for _ in range(16)]
    conns = _connections(strict_server)
    hostile = [conns[c.port] for c in clients]
    workers = []
    for i, c in enumerate(clients):
        if i % 2:
            long_answer(c)
        else:
            w = threading.Thread(target=lambda c=c: c.flood(invalid_flood(100_000)), daemon=True)
            w.start()
            workers.append(w)
    t0 = time.monotonic()

    async def seventeenth() -> tuple[float, float, dict[str, Any]]:
        deadline = time.monotonic() + 120
        while True:
            try:
                async with connect(strict_server.url) as ws:
                    assert json.loads(await ws.recv())["type"] == "session.created"
                    got_in = time.monotonic() - t0
                    # the hostile answers still decode on the two cores; ask once they are gone
                    hostile_gone = got_in + await _wait_sessions(strict_server, 1, within=60)
                    return got_in, hostile_gone, await text_turn(ws, "Say one word.")
            except InvalidStatus as err:  # 503 while the 16 hold every session
                assert err.response.status_code == 503
            except ConnectionClosed as err:
                assert err.rcvd is not None and err.rcvd.code == 1013  # lost a race for the last slot
            assert time.monotonic() < deadline, "no session within 120 s"
            await asyncio.sleep(0.2)

    got_in_s, gone_s, r = asyncio.run(seventeenth())
    assert r["status"] == "completed" and r["audio"] > 0
    asyncio.run(_wait_sessions(strict_server, 0, within=60))
    # 16 floods and answers at once on 2 loaded cores: the loop ran the 1 s abort timer up to
    # 2.5 s late (load average 7-8, 10:40 UTC), hence more slack than for one client
    reasons = [_check_deadline(c, opened, slack=5.0) for c in hostile]
    # a long answer stalls its socket; on a machine too busy to answer 8 at once within
    # llm.timeout_s, the turn fails, nothing fills the socket and the keepalive ends it
    assert set(reasons[1::2]) <= {"slow_client", "keepalive"}, reasons
    assert "keepalive" not in reasons[0::2], reasons
    for w in workers:
        w.join(timeout=30)
        assert not w.is_alive()
    # the server resets what it aborts: its kernel holds none of the 16, and each client sees
    # the end (it was once not seen within 0.2 s while the kernel still trickled buffered data)
    assert [kernel_sockets(strict_server.port, c.port) for c in clients] == [[]] * len(clients)
    dead = sum(c.is_dead() for c in clients)
    for c in clients:
        c.close()
    gc.collect()
    after = rss_mb(settle_s=1.0)
    assert dead == len(clients), f"client sockets seen dead: {dead}/{len(clients)}"
    print(f"17th session after {got_in_s:.1f} s, the 16 gone after {gone_s:.1f} s; reasons {sorted(set(reasons))}; rss {base:.0f} -> {after:.0f} MB")
    # The 50 MB bound of issue 10 is asserted for each attack alone (above) and across ten rounds
    # of them (below). Sixteen at once measured +14, +21, +21, +48 MB run alone (2026-12-01), and
    # +81 once while another test run shared the two cores: the long answers then outlived
    # llm.timeout_s and the keepalive ended them while their decoding was still winding down.
    # Here the bound catches a leak per client (16 x the ~3 MB each held before this change).
    assert after - base < 120, f"RSS {base:.0f} -> {after:.0f} MB"


def test_idle_close_does_not_wait_for_the_send_buffer(voice_server: RunningServer) -> None:
    """A never-reading, silent client whose buffers are full still gets the idle close on time."""
    cfg = copy.deepcopy(voice_server.server.cfg)
    cfg.server.idle_timeout_s = 1.0
    cfg.server.send_timeout_s = 600.0  # only the idle timeout may end it
    cfg.server.close_timeout_s = CLOSE_TIMEOUT_S
    running, shutdown = start_server(cfg, resources=voice_server.server.resources)
    try:
        client = RawClient(running.port)
        conn = _connections(running)[client.port]
        # fill the socket: ~400 KB of events (each session.updated echoes the instructions)
        for _ in range(100):
            client.send_event({"type": "session.update", "session": {"instructions": "y" * 4000}})
        asyncio.run(_wait_sessions(running, 0, within=30))
        assert conn.paused_at is not None, "the send buffer never filled; the test proves nothing"
        assert conn.end_reason == "idle"
        assert conn.lost_at - conn.close_started <= CLOSE_TIMEOUT_S + SLACK_S
        client.close()
    finally:
        shutdown()


def test_error_rate_closes_with_1008(voice_server: RunningServer) -> None:
    cfg = copy.deepcopy(voice_server.server.cfg)
    cfg.server.error_burst = 20
    cfg.server.error_rate_per_s = 1.0
    running, shutdown = start_server(cfg, resources=voice_server.server.resources)

    async def go() -> tuple[int, int | None]:
        n = 0
        async with connect(running.url) as ws:
            await ws.recv()
            for i in range(40):
                await ws.send(json.dumps({"type": "bogus", "event_id": f"e{i}"}))
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    n += m["type"] == "error"
            except ConnectionClosed:
                pass
        return n, ws.close_code

    try:
        n, code = asyncio.run(go())
        assert code == 1008
        # at most the burst (and the refill of a second or two) was sent; what was still queued
        # when the limit hit is dropped with the session
        assert 1 <= n <= 22
        assert running.server.metrics.sessions_closed["error_rate"] == 1
    finally:
        shutdown()


# --------------------------------------------------------------------------- DNS rebinding


def _handshake(port: int, host: str, origin: str | None) -> int:
    """Status of a raw WebSocket handshake with the given Host and Origin headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Origin: {origin}\r\n" if origin is not None else ""
        s.sendall((f"GET /v1/realtime HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def _get(port: int, path: str, host: str, headers: str = "") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_rebinding_refused_on_the_default_setup(voice_server: RunningServer) -> None:
    port = voice_server.port
    assert voice_server.server.token is None and voice_server.server.host == "127.0.0.1"
    refused = [
        (f"evil.example:{port}", f"http://evil.example:{port}"),  # the rebinding attack itself
        (f"evil.example:{port}", None),  # foreign Host, no Origin
        (f"127.0.0.1:{port}", f"http://evil.example:{port}"),  # foreign Origin
        (f"127.0.0.1:{port}", f"https://127.0.0.1:{port}"),  # scheme mismatch
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"),  # port mismatch
        (f"127.0.0.1:{port}", "null"),  # sandboxed frame, file:// page
        (f"127.0.0.1:{port + 1}", None),  # wrong port in Host
        ("127.0.0.1", None),  # no port
        (f"127.0.0.1.evil.example:{port}", None),
    ]
    for host, origin in refused:
        assert _handshake(port, host, origin) == 403, (host, origin)
    # plain HTTP routes too: a rebound page cannot read /metrics or /healthz
    for path in ("/", "/metrics", "/healthz"):
        assert _get(port, path, f"evil.example:{port}") == 403
        assert _get(port, path, f"localhost:{port}") == 200
    accepted = [(f"127.0.0.1:{port}", None), (f"localhost:{port}", f"http://localhost:{port}"),
                (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"), (f"[::1]:{port}", f"http://[::1]:{port}"),
                (f"LocalHost:{port}", f"http://LOCALHOST:{port}")]
    for host, origin in accepted:
        assert _handshake(port, host, origin) == 101, (host, origin)
    assert voice_server.server.metrics.sessions_rejected["host"] >= 4


async def test_browser_origin_from_localhost_gets_a_session(voice_server: RunningServer) -> None:
    url = f"ws://localhost:{voice_server.port}/v1/realtime?model=voice"
    async with connect(url, origin=f"http://localhost:{voice_server.port}") as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["type"] == "session.created"


def test_allowed_hosts_and_origins_are_explicit() -> None:
    from voice.server.http import HostPolicy

    p = HostPolicy(allowed_hosts=["voice.example.org"], allowed_origins=["https://voice.example.org"], port=8765)
    assert p.host_allowed("voice.example.org") and p.host_allowed("voice.example.org:443")
    assert not p.host_allowed("evil.example") and not p.host_allowed("localhost:8765")
    assert p.origin_allowed("https://voice.example.org", "voice.example.org")
    assert p.origin_allowed("https://voice.example.org:443", "voice.example.org")
    assert not p.origin_allowed("http://voice.example.org", "voice.example.org")
    assert not p.origin_allowed("null", "voice.example.org")
    # with a token and no lists: same host as the Host header, http only
    p = HostPolicy(port=8765, bound_host="0.0.0.0")
    assert p.host_allowed("10.0.0.5:8765")
    assert p.origin_allowed("http://10.0.0.5:8765", "10.0.0.5:8765")
    assert not p.origin_allowed("https://10.0.0.5:8765", "10.0.0.5:8765")
    assert not p.origin_allowed("http://10.0.0.6:8765", "10.0.0.5:8765")


# --------------------------------------------------------------------------- tokens


def test_token_rules(voice_server: RunningServer) -> None:
    from voice.errors import ConfigError
    from voice.server.app import VoiceServer

    cfg, res = voice_server.server.cfg, voice_server.server.resources
    with pytest.raises(ConfigError, match="only whitespace"):
        VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": "   "}, resources=res)
    with pytest.raises(ConfigError, match="only whitespace"):
        VoiceServer(cfg, environ={"VOICE_SERVER_TOKEN": " \t\n"}, resources=res)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": "s3cret"}, resources=res)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": " " + "a" * 15 + " "}, resources=res)
    srv = VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": " 0123456789abcdef\n"}, resources=res)
    assert srv.token == "0123456789abcdef"
    assert VoiceServer(cfg, environ={"VOICE_SERVER_TOKEN": "short"}, resources=res).token == "short"  # loopback


def test_serve_refuses_whitespace_and_short_tokens() -> None:
    from tests.helpers.asr import run_voice

    for token, msg in (("   ", "holds only whitespace"), ("abc", "at least 16 characters")):
        r = run_voice("serve", "--host", "0.0.0.0", "--port", "0", env={"VOICE_SERVER_TOKEN": token})
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("voice: error: ") and msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_metrics_need_the_token_when_the_server_has_one(voice_server: RunningServer) -> None:
    token = "0123456789abcdef0123"
    running, shutdown = start_server(voice_server.server.cfg, environ={"VOICE_SERVER_TOKEN": token},
                                     resources=voice_server.server.resources)
    try:
        host = f"127.0.0.1:{running.port}"
        assert _get(running.port, "/metrics", host) == 401
        assert _get(running.port, "/metrics", host, "Authorization: Bearer wrong\r\n") == 401
        assert _get(running.port, "/metrics", host, f"Authorization: Bearer {token}\r\n") == 200
        assert _get(running.port, "/healthz", host) == 200  # health checks need no secret
        # with a token the Host is not restricted (a reverse proxy may pass its own name)
        assert _get(running.port, "/healthz", "voice.example.org") == 200
    finally:
        shutdown()


# --------------------------------------------------------------------------- instructions


async def test_instructions_too_long(voice_server: RunningServer) -> None:
    limit = voice_server.server.cfg.llm.max_instructions_chars()
    async with connect(voice_server.url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "event_id": "u1",
                                  "session": {"instructions": "x" * (limit + 1)}}))
        m = json.loads(await ws.recv())
        assert m["type"] == "error", m
        assert m["error"]["code"] == "instructions_too_long" and m["error"]["param"] == "session.instructions"
        assert m["error"]["event_id"] == "u1" and str(limit) in m["error"]["message"]
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Be brief. " * (limit // 10)}}))
        m = json.loads(await ws.recv())
        assert m["type"] == "session.updated" and len(m["session"]["instructions"]) <= limit
        # a turn under ~1,000 tokens of instructions can pass llm.timeout_s on 2 loaded cores:
        # answer under short ones to show the session still works
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Be brief."}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        r = await text_turn(ws, "Say one word.")
        assert r["status"] == "completed"


def test_system_prompt_too_long_is_a_config_error() -> None:
    from voice.config import load_config
    from voice.errors import ConfigError

    cfg = load_config(environ={})
    limit = cfg.llm.max_instructions_chars()
    assert limit == cfg.llm.embedded.n_ctx == 4096
    load_config(environ={}, overrides={"llm.system_prompt": "y" * limit})
    with pytest.raises(ConfigError, match=r"llm.system_prompt \(--set llm.system_prompt\) is 4097 characters; at most 4096") as err:
        load_config(environ={}, overrides={"llm.system_prompt": "y" * (limit + 1)})
    assert "\n" not in str(err.value)
    # the limit follows the context
    assert load_config(environ={}, overrides={"llm.embedded.n_ctx": 8192, "llm.system_prompt": "y" * 8000})


def test_response_instructions_limit_in_the_protocol_core() -> None:
    from voice.server import events as ev
    from voice.server.protocol import RealtimeProtocol

    pr = RealtimeProtocol(voices=("v",), max_instructions=10)
    pr.receive(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}))
    out = pr.receive(json.dumps({"type": "response.create", "response": {"instructions": "y" * 11}}))
    assert [o.error["code"] for o in out if isinstance(o, ev.ErrorEvent)] == ["instructions_too_long"]
    out = pr.receive(json.dumps({"type": "response.create", "response": {"instructions": "y" * 10}}))
    assert not [o for o in out if isinstance(o, ev.ErrorEvent)]
    out = pr.receive(json.dumps({"type": "session.update", "session": {"instructions": "z" * 11}}))
    assert [o.error["param"] for o in out if isinstance(o, ev.ErrorEvent)] == ["session.instructions"]


async def test_outbox_bounds_every_kind() -> None:
    from voice.server.outbox import Outbox, OutboxFull, TokenBucket

    box = Outbox(max_audio=4, max_events=3, max_bytes=100)
    for _ in range(3):
        box.put_nowait("e" * 10)
    with pytest.raises(OutboxFull):
        box.put_nowait("e")  # count
    await box.get()
    with pytest.raises(OutboxFull):
        box.put_nowait("e" * 81)  # bytes: 20 queued + 81 > 100
    box.put_nowait("e" * 80)
    for _ in range(4):
        await box.put_audio(b"a" * 10, 5)
    blocked = asyncio.create_task(box.put_audio(b"a", 1))  # 4 chunks: audio waits
    await asyncio.sleep(0.05)
    assert not blocked.done()
    while (item := await box.get()) is not None and not item.audio:
        pass
    await asyncio.wait_for(blocked, 1)  # one chunk went out, the writer goes on
    big = Outbox(max_audio=64, max_events=3, max_bytes=100)
    await big.put_audio(b"a" * 150, 75)  # one chunk is let in even above the bytes bound
    blocked = asyncio.create_task(big.put_audio(b"a", 1))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    big.close()
    await asyncio.wait_for(blocked, 1)
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # refilled one in 0.5 s


def _all_freed(refs: list[weakref.ref[Any]], within: float = 15.0) -> bool:
    """Every referent collected within ``within`` s (a cancelled answer's worker thread lets go
    of its session when its current step ends)."""
    t0 = time.monotonic()
    while True:
        gc.collect()
        if all(r() is None for r in refs):
            return True
        if time.monotonic() - t0 > within:
            return False
        time.sleep(0.2)


def test_ten_rounds_of_never_reading_clients_leave_nothing(strict_server: RunningServer) -> None:
    """The three attacks at once, ten times over: every connection is closed within its
    deadline each round, nothing of it stays alive, and memory after the last rounds is within
    50 MB of the first (or, past that, flat over six more rounds)."""
    reasons: list[str] = []
    rss: list[float] = []
    leaked: list[int] = []

    def attack_round(i: int) -> None:
        opened = time.monotonic()
        clients, workers = _three_attacks(strict_server)
        conns = _connections(strict_server)
        asyncio.run(_wait_sessions(strict_server, 0, within=KEEPALIVE_S + 10))
        for w in workers:
            w.join(timeout=30)
            assert not w.is_alive()
        reasons.extend(_check_deadline(conns[c.port], opened) for c in clients)
        assert [kernel_sockets(strict_server.port, c.port) for c in clients] == [[]] * 3
        assert all(c.is_dead() for c in clients)
        for c in clients:
            c.close()
        refs = [weakref.ref(c) for c in conns.values()]
        del conns
        if not _all_freed(refs):
            leaked.append(i)
        rss.append(rss_mb(settle_s=0.5))

    for i in range(10):
        attack_round(i)
    r = asyncio.run(_normal_turn(strict_server))
    assert r["status"] == "completed" and r["audio"] > 0
    print(f"10 rounds: reasons {sorted(set(reasons))}; rss after each round {[round(x) for x in rss]} MB")
    assert reasons[1::3] == ["slow_client"] * 10  # pings: nothing read while the pongs are unread
    assert not leaked, f"connections of rounds {leaked} still alive"
    # A per-client leak grows every round; the allocator's one-off steps (a new worker thread's
    # arena: +60 MB once in round 7 of a CI run, +67 MB in a full local run, 2026-12-01) do not.
    # So the last three rounds' lowest figure is held to 50 MB over the first round, and where a
    # step broke that, six more rounds must stay flat: under 15 MB over the step's level (a leak
    # of 3 MB a round or more adds that much).
    if min(rss[-3:]) - rss[0] >= 50:
        level = min(rss[-3:])
        for i in range(10, 16):
            attack_round(i)
        print(f"six more rounds: rss {[round(x) for x in rss[10:]]} MB")
        assert not leaked, f"connections of rounds {leaked} still alive"
        assert min(rss[-3:]) - level < 15, rss
