"""The browser client in real headless Chromium (Debian's), fake microphone fed from a WAV file:
the page asks a question by voice and receives reply audio and its transcript. Driven through the
DevTools protocol over a websocket; nothing is downloaded."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.helpers.server import RunningServer

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Cdp:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        my = self.n
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("id") == my:
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m["result"]

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")


@pytest.mark.parametrize("page_host", ["127.0.0.1", "localhost"])  # both pass the rebinding checks
def test_browser_asks_by_voice(voice_server: RunningServer, speech_clips, tmp_path: Path, page_host: str) -> None:
    from voice.audio.files import load_audio

    # scripts/install.sh --dev installs it; a missing browser fails here instead of skipping.
    assert Path(CHROMIUM).exists(), "Debian chromium is not installed (run scripts/install.sh --dev)"

    clip = next(p for p in speech_clips if p.endswith("ps_goforward.wav"))
    a = load_audio(clip, 48000)
    mic = np.concatenate([np.zeros(48000, np.float32), a, np.zeros(48000 * 6, np.float32)])
    wav = tmp_path / "mic.wav"
    import soundfile

    soundfile.write(str(wav), mic, 48000, subtype="PCM_16")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", f"--user-data-dir={profile}",
        "--remote-debugging-port=0", "about:blank",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        import urllib.request

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        state = asyncio.run(_drive(page["webSocketDebuggerUrl"], f"http://{page_host}:{voice_server.port}/"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert not state.get("errors"), state
    # the worklet keeps posting ~40 ms batches (it once sent one batch, then a detached buffer)
    assert (state.get("sent") or 0) >= 50, state
    assert state["user"] and "forward" in state["user"][0].lower(), state
    assert state["assistant"][0].strip(), state
    assert state["audioBytes"] > 24000, state  # > 0.5 s of 24 kHz PCM16 reply audio, as binary frames
    assert "input_audio_buffer.speech_started" in state["events"]
    assert state["metrics"][0]["voice_to_voice_ms"] is not None
    assert "You: " in state["log"] and "Assistant: " in state["log"] and "latency:" in state["log"]


async def _drive(url: str, page_url: str) -> dict:
    state: dict = {}
    async with connect(url, max_size=None) as ws:
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=page_url)
        for _ in range(100):
            if await cdp.js("typeof window.voiceStart === 'function'"):
                break
            await asyncio.sleep(0.1)
        await cdp.js("window.voiceStart()")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = await cdp.js("JSON.parse(JSON.stringify({user: voiceState.user, assistant: voiceState.assistant,"
                                 " audioBytes: voiceState.audioBytes, errors: voiceState.errors,"
                                 " metrics: voiceState.metrics, events: voiceState.events.slice(0, 60),"
                                 " status: voiceState.status, sent: voiceState.sentFrames, peak: voiceState.micPeak, rate: voiceState.rate, ctx: voiceState.ctxState && voiceState.ctxState(), log: document.getElementById('log').innerText}))")
            if state["assistant"] and state["metrics"]:
                break
            await asyncio.sleep(0.5)
    return state
