"""Server test fixtures: one real voice server (tiny.en, SmolLM2, Piper) per test session, run on
its own event loop in a thread so every test (sync or async, any loop) can talk to it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def server_config(tmp: Path) -> Any:
    from voice.config import load_config

    cfg = load_config(environ={})
    cfg.general.data_dir = str(tmp / "data")
    cfg.general.cache_dir = str(tmp / "cache")
    cfg.llm.embedded.model = "smollm2-135m-instruct"
    cfg.llm.max_tokens = 40
    cfg.rag.enabled = False
    cfg.server.max_sessions = 32
    cfg.server.max_message_bytes = 256 * 1024
    return cfg


@dataclass
class RunningServer:
    server: Any
    loop: asyncio.AbstractEventLoop
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime?model=voice"

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server's loop and return its result."""
        fut: Future[Any] = Future()

        def go() -> None:
            try:
                fut.set_result(fn())
            except Exception as err:
                fut.set_exception(err)

        self.loop.call_soon_threadsafe(go)
        return fut.result(timeout=10)


def start_server(cfg: Any, **kw: Any) -> tuple[RunningServer, Any]:
    from voice.server.app import VoiceServer

    loop = asyncio.new_event_loop()
    ready: Future[RunningServer] = Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            srv = VoiceServer(cfg, port=0, **kw)
            await srv.start()
        except Exception as err:
            ready.set_exception(err)
            return
        ready.set_result(RunningServer(srv, loop, srv.bound_port))
        await stop.wait()
        await srv.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="voice-test-server", daemon=True)
    thread.start()
    running = ready.result(timeout=300)

    def shutdown() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)

    return running, shutdown


@pytest.fixture(scope="session")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running, shutdown = start_server(server_config(tmp_path_factory.mktemp("server")))
    yield running
    shutdown()


def pcm16_b64(audio: np.ndarray) -> str:
    a = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
    return base64.b64encode((a * 32767).astype("<i2").tobytes()).decode()


def speech_24k(path: str, silence_s: float = 1.5) -> np.ndarray:
    from voice.audio.files import load_audio

    a = load_audio(path, 24000)
    return np.concatenate([np.zeros(int(0.3 * 24000), np.float32), a, np.zeros(int(silence_s * 24000), np.float32)])


async def text_turn(ws: Any, text: str, wait_s: float = 90) -> dict[str, Any]:
    """Ask by text over a raw websocket; collect audio, transcript and metrics until voice.metrics."""
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    return await collect_response(ws, wait_s)


async def collect_response(ws: Any, wait_s: float = 90) -> dict[str, Any]:
    out: dict[str, Any] = {"audio": 0, "types": [], "transcript": None, "metrics": None, "status": None}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        msg = await asyncio.wait_for(ws.recv(), wait_s)
        if isinstance(msg, bytes):
            out["audio"] += len(msg)
            out.setdefault("first_audio_s", loop.time() - t0)
            continue
        m = json.loads(msg)
        out["types"].append(m["type"])
        if m["type"] == "response.output_audio.delta":
            out["audio"] += len(base64.b64decode(m["delta"]))
            out.setdefault("first_audio_s", loop.time() - t0)
        elif m["type"] == "response.output_audio.done":
            out["item_id"] = m["item_id"]
        elif m["type"] == "response.output_audio_transcript.done":
            out["transcript"] = m["transcript"]
        elif m["type"] == "response.done":
            out["status"] = m["response"]["status"]
        elif m["type"] == "conversation.item.input_audio_transcription.completed":
            out["user"] = m["transcript"]
        elif m["type"] == "voice.metrics":
            out["metrics"] = m["metrics"]
            return out
