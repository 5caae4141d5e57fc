"""The browser page in real headless Chromium (Debian's), fake microphone fed from a WAV file, driven
through the DevTools protocol over a websocket; nothing is downloaded. One server with a knowledge
base holding one fact: a typed question gets a spoken answer with its source listed, a spoken
question (fake microphone) gets one too, and screenshots at desktop and phone width are checked."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.helpers.rag import FACTS
from tests.helpers.server import RunningServer, server_config, start_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUESTION = FACTS["reactor.txt"][1]
STATE_JS = ("JSON.parse(JSON.stringify({user: voiceState.user, assistant: voiceState.assistant,"
            " audioBytes: voiceState.audioBytes, errors: voiceState.errors, metrics: voiceState.metrics,"
            " sources: voiceState.sources, events: voiceState.events.slice(0, 80), status: voiceState.status,"
            " sent: voiceState.sentFrames, levelMax: voiceState.levelMax, notice: voiceState.notice,"
            " micError: voiceState.micError, closeCode: voiceState.closeCode,"
            " bubbles: [...document.querySelectorAll('.turn')].map(t => ({cls: t.className,"
            " text: t.querySelector('.bubble').innerText, meta: t.querySelector('.meta').innerText,"
            " sources: [...t.querySelectorAll('.sources .name')].map(n => n.innerText)}))}))")


class Cdp:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        my = self.n
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("id") == my:
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m["result"]

    async def js(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True,
                            userGesture=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    async def visible(self, element_id: str) -> bool:
        return bool(await self.js(f"!!document.getElementById('{element_id}').getClientRects().length"))

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        for _ in range(150):
            if await self.js("!!(window.voiceState && voiceState.ready)"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page at {url} did not load")

    async def wait(self, cond: str, within_s: float = 150) -> dict[str, Any]:
        """Poll the page state until the JS expression ``cond`` (over ``s`` = state) holds."""
        deadline = time.monotonic() + within_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = await self.js(STATE_JS)
            if await self.js(f"(s => !!({cond}))({json.dumps(state)})"):
                return state
            await asyncio.sleep(0.5)
        raise AssertionError(f"timed out waiting for {cond}: {state}")

    async def screenshot(self, width: int, height: int, mobile: bool) -> bytes:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=mobile)
        await asyncio.sleep(0.5)
        import base64

        shot = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


@pytest.fixture(scope="module")
def kb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real server (tiny.en, SmolLM2, Piper) whose knowledge base holds the reactor fact."""
    from voice.rag import KnowledgeBase

    tmp = tmp_path_factory.mktemp("page-server")
    cfg = server_config(tmp)
    cfg.rag.enabled = True
    cfg.rag.kb_dir = str(tmp / "kb")
    doc = tmp / "docs" / "reactor.txt"
    doc.parent.mkdir()
    doc.write_text(FACTS["reactor.txt"][0], encoding="utf-8")
    with KnowledgeBase(cfg) as kb:
        assert kb.ingest([doc]).ok
    running, shutdown = start_server(cfg)
    yield running
    shutdown()


class Chromium:
    def __init__(self, mic_wav: Path, profile: Path) -> None:
        self.proc = subprocess.Popen([
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required", "--hide-scrollbars",
            "--use-fake-device-for-media-stream",  # no fake UI: each test grants or denies the microphone
            f"--use-file-for-fake-audio-capture={mic_wav}", f"--user-data-dir={profile}",
            "--remote-debugging-port=0", "about:blank",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        lines = port_file.read_text().split()
        self.port = int(lines[0])
        self.browser_url = f"ws://127.0.0.1:{self.port}{lines[1]}"

    @contextlib.asynccontextmanager
    async def mic_permission(self, origin: str, setting: str) -> AsyncIterator[None]:
        """Grant or deny the microphone to ``origin`` (the user's answer to the browser's prompt);
        the override lasts while this DevTools session is open."""
        async with connect(self.browser_url, max_size=None) as ws:
            await Cdp(ws).call("Browser.setPermission", permission={"name": "microphone"}, setting=setting,
                               origin=origin)
            yield

    def page_url(self) -> str:
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
        return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def chromium(speech_clips: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    import soundfile

    from voice.audio.files import load_audio

    # scripts/install.sh --dev installs it; a missing browser fails here instead of skipping.
    assert Path(CHROMIUM).exists(), "Debian chromium is not installed (run scripts/install.sh --dev)"
    tmp = tmp_path_factory.mktemp("chromium")
    clip = next(p for p in speech_clips if p.endswith("ps_goforward.wav"))
    a = load_audio(clip, 48000)
    # the fake device loops the file: a long tail of silence keeps the question from coming back
    # while the answer plays
    mic = np.concatenate([np.zeros(48000, np.float32), a, np.zeros(48000 * 40, np.float32)])
    wav = tmp / "mic.wav"
    soundfile.write(str(wav), mic, 48000, subtype="PCM_16")
    browser = Chromium(wav, tmp / "profile")
    yield browser
    browser.close()


def check_png(path: Path, width: int, height: int) -> None:
    """The screenshot exists, has the viewport's size, and is not blank (many colours, real contrast)."""
    from PIL import Image

    assert path.exists() and path.stat().st_size > 5000, path
    img = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    assert img.size == (width, height), img.size
    px = np.asarray(img, dtype=np.float32)
    assert px.std() > 20, f"{path} looks blank (std {px.std():.1f})"
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50, f"{path} has too few colours"


def test_page_typed_and_spoken_turns(kb_server: RunningServer, chromium: Chromium, tmp_path: Path) -> None:
    shots = asyncio.run(_typed_and_spoken(chromium, kb_server.port, tmp_path))
    check_png(shots["desktop"], 1280, 860)
    check_png(shots["phone"], 390, 844)


async def _typed_and_spoken(browser: Chromium, port: int, out: Path) -> dict[str, Path]:
    async with browser.mic_permission(f"http://localhost:{port}", "granted"), \
            connect(browser.page_url(), max_size=None) as ws:
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=860, deviceScaleFactor=1, mobile=False)
        # localhost here (the spoken test below and the old test used 127.0.0.1): both must work
        await cdp.open(f"http://localhost:{port}/")
        assert not await cdp.visible("tokenbox"), "no token is needed here"
        # a typed turn: text into the box, Send pressed
        await cdp.js("document.getElementById('text').focus()")
        await cdp.call("Input.insertText", text=QUESTION)
        await cdp.js("document.getElementById('send').click()")
        s = await cdp.wait("s.metrics.length >= 1 && s.assistant.length >= 1")
        assert not s["errors"], s
        user, bot = s["bubbles"][0], s["bubbles"][1]
        assert "user" in user["cls"] and user["text"] == QUESTION and "typed" in user["meta"], s
        assert "assistant" in bot["cls"] and bot["text"].strip(), s
        assert bot["sources"] == ["reactor.txt"], s  # the knowledge-base source, listed under the answer
        assert s["sources"][0][0]["source"].endswith("reactor.txt") and s["sources"][0][0]["score"] >= 0.35
        assert s["metrics"][0]["source"] == "text" and s["metrics"][0]["voice_to_voice_ms"] is not None
        assert f"answered {s['metrics'][0]['voice_to_voice_ms'] / 1000:.2f} s after sending" in bot["meta"], s
        assert s["audioBytes"] > 24000, s  # > 0.5 s of 24 kHz PCM16 reply audio, as binary frames
        # a spoken turn through the fake microphone
        await cdp.js("document.getElementById('start').click()")
        s = await cdp.wait("s.metrics.length >= 2 && s.assistant.length >= 2")
        assert not s["errors"], s
        spoken = [b for b in s["bubbles"] if "spoken" in b["meta"]]
        assert spoken and "forward" in spoken[0]["text"].lower(), s
        bot = s["bubbles"][s["bubbles"].index(spoken[0]) + 1]
        assert "assistant" in bot["cls"] and bot["text"].strip(), s
        assert s["metrics"][1]["source"] == "speech" and s["metrics"][1]["from_silence_ms"] is not None, s
        assert f"answered {s['metrics'][1]['from_silence_ms'] / 1000:.2f} s after your last word" in bot["meta"], s
        assert "input_audio_buffer.speech_started" in s["events"]
        assert (s["sent"] or 0) >= 50, s  # the worklet keeps posting ~40 ms batches
        assert s["levelMax"] > 0.3, s      # the meter moved while the question was spoken
        await cdp.wait("s.status === 'listening'", within_s=60)
        shots = {"desktop": out / "page-desktop.png", "phone": out / "page-phone.png"}
        shots["desktop"].write_bytes(await cdp.screenshot(1280, 860, mobile=False))  # noqa: ASYNC240
        shots["phone"].write_bytes(await cdp.screenshot(390, 844, mobile=True))  # noqa: ASYNC240
        # the phone layout does not scroll sideways
        assert await cdp.js("document.documentElement.scrollWidth <= 390"), "page wider than the phone"
        await cdp.js("document.getElementById('mute').click()")
        await cdp.wait("s.status === 'muted'", within_s=10)
        await cdp.js("document.getElementById('stop').click()")
    return shots


def test_page_mic_refused_and_token(kb_server: RunningServer, chromium: Chromium, tmp_path: Path) -> None:
    asyncio.run(_refused_and_token(chromium, kb_server, tmp_path))


async def _refused_and_token(browser: Chromium, server: RunningServer, tmp: Path) -> None:
    origin = f"http://127.0.0.1:{server.port}"
    async with browser.mic_permission(origin, "denied"), \
            connect(browser.page_url(), max_size=None) as ws:  # denied: as when the user answers Block
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.open(origin + "/")
        await cdp.js("document.getElementById('start').click()")
        s = await cdp.wait("s.micError")
        assert s["micError"] == "NotAllowedError", s
        assert "microphone was refused" in s["notice"] and "type your question" in s["notice"], s
        assert await cdp.visible("notice")

        # a server with a token (same models): the page shows its field, a wrong token is refused,
        # the right one works
        tokened, shutdown = start_server(server.server.cfg, environ={"VOICE_SERVER_TOKEN": "s3cret-token"},
                                         resources=server.server.resources)
        origin = f"http://127.0.0.1:{tokened.port}"
        try:
            async with browser.mic_permission(origin, "denied"):
                await _token_field(cdp, origin, tmp)
        finally:
            shutdown()


async def _token_field(cdp: Cdp, origin: str, tmp: Path) -> None:
    await cdp.open(origin + "/")
    assert await cdp.visible("tokenbox"), "no token field"
    await cdp.js("document.getElementById('token').value = 'wrong'")
    await cdp.js("document.querySelector('#tokenbox button').click()")
    s = await cdp.wait("s.notice.includes('refused')", within_s=20)
    assert s["closeCode"] == 1006, s
    await cdp.js("document.getElementById('token').value = 's3cret-token'")
    await cdp.js("document.querySelector('#tokenbox button').click()")
    await cdp.wait("s.status === 'ready'", within_s=20)
    assert not await cdp.visible("tokenbox")
    # the token from the address (#token=) is used and removed from it
    await cdp.js("sessionStorage.clear()")
    await cdp.call("Page.navigate", url="about:blank")  # else only the fragment changes
    await cdp.open(origin + "/#token=s3cret-token")
    assert await cdp.js("location.hash") == ""
    await cdp.js("document.getElementById('text').value = 'Hello'")
    await cdp.js("document.getElementById('send').click()")
    await cdp.wait("s.events.includes('response.created')", within_s=120)
    assert not await cdp.visible("tokenbox"), "the token field stays after the token worked"
    # typing while the answer is under way cancels it and answers the new question
    await cdp.js(f"document.getElementById('text').value = {json.dumps(QUESTION)}")
    await cdp.js("document.getElementById('send').click()")
    s = await cdp.wait("s.metrics.length >= 2", within_s=150)
    assert s["metrics"][0]["cancelled"] and not s["metrics"][1]["cancelled"], s
    assert [b["text"] for b in s["bubbles"] if "user" in b["cls"]] == ["Hello", QUESTION], s
    assert s["bubbles"][-1]["sources"] == ["reactor.txt"] and "cancelled" in s["bubbles"][1]["cls"], s
    assert not [e for e in s["errors"] if "NotAllowed" not in str(e)], s
    shot = tmp / "page-phone-refused.png"
    await cdp.js("document.getElementById('start').click()")  # the hint again, for the picture
    await cdp.wait("s.notice.includes('microphone was refused')", within_s=10)
    shot.write_bytes(await cdp.screenshot(390, 844, mobile=True))  # noqa: ASYNC240
    check_png(shot, 390, 844)
