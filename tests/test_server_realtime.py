"""voice serve end to end on loopback: the official openai SDK's realtime client, HTTP routes, and
the admission rules (token, Origin, limits). Real models: tiny.en, SmolLM2, Piper."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers.server import RunningServer, speech_24k, start_server, text_turn

pytestmark = pytest.mark.slow


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


async def test_openai_sdk_spoken_turn(voice_server: RunningServer, speech_clips) -> None:
    from openai import AsyncOpenAI

    clip = next(p for p in speech_clips if p.endswith("ps_goforward.wav"))
    audio = speech_24k(clip)
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{voice_server.port}/v1", api_key="unused-on-loopback")
    got: dict = {"audio": b"", "types": []}
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={
            "type": "realtime", "instructions": "You are a helpful assistant. Answer in one short sentence.",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                      "output": {"voice": "alloy"}}})

        async def feed() -> None:
            step = 2400  # 100 ms
            for i in range(0, audio.shape[0], step):
                chunk = (np.clip(audio[i:i + step], -1, 1) * 32767).astype("<i2").tobytes()
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(feed())
        async with asyncio.timeout(120):
            async for event in conn:
                got["types"].append(event.type)
                if event.type == "error":
                    pytest.fail(f"server error: {event.error}")
                if event.type == "conversation.item.input_audio_transcription.completed":
                    got["user"] = event.transcript
                elif event.type == "response.output_audio.delta":
                    got["audio"] += base64.b64decode(event.delta)
                elif event.type == "response.output_audio_transcript.done":
                    got["transcript"] = event.transcript
                elif event.type == "response.done":
                    got["status"] = event.response.status
                    break
        await feeder
    types = got["types"]
    assert types[0] == "session.created" and "session.updated" in types
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
             "conversation.item.input_audio_transcription.completed", "response.created",
             "response.output_audio.delta", "response.output_audio.done", "response.done"]
    assert all(t in types for t in order), types
    assert [types.index(t) for t in order] == sorted(types.index(t) for t in order)
    assert "forward" in got["user"].lower()
    assert got["status"] == "completed"
    assert got["transcript"].strip()
    assert len(got["audio"]) > 24000 * 2 * 0.5  # at least half a second of 24 kHz PCM16
    assert np.abs(np.frombuffer(got["audio"], "<i2")).max() > 1000  # not silence
    # the headline figure of a spoken turn is in the /metrics histograms
    status, _, body = await asyncio.to_thread(http_get, voice_server.port, "/metrics")
    assert status == 200 and 'voice_turn_latency_seconds_count{stage="from_silence"}' in body, body


async def test_binary_subprotocol_text_turn(voice_server: RunningServer) -> None:
    async with connect(voice_server.url, subprotocols=["voice.pcm16"]) as ws:
        assert ws.subprotocol == "voice.pcm16"
        created = json.loads(await ws.recv())
        assert created["session"]["voice_binary_audio"] is True
        r = await text_turn(ws, "Say hello.")
        # the item's audio for truncate is what its answer wrote to the sink: the bytes received
        audio_ms = r["audio"] / 2 / 24
        replies = []
        for end_ms in (0, int(audio_ms), int(audio_ms) + 50):
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": r["item_id"],
                                      "content_index": 0, "audio_end_ms": end_ms}))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert r["status"] == "completed" and r["audio"] > 10000
    assert "response.output_audio.delta" not in r["types"]  # audio came as binary frames
    assert r["metrics"]["first_audio_ms"] is not None
    assert [m["type"] for m in replies] == ["conversation.item.truncated"] * 2 + ["error"], replies
    assert replies[2]["error"]["param"] == "audio_end_ms"


async def test_manual_turn_detection_commit_then_response(voice_server: RunningServer, speech_clips) -> None:
    clip = next(p for p in speech_clips if p.endswith("ps_tidigits_2934z.wav"))
    pcm = (np.clip(speech_24k(clip, 0.2), -1, 1) * 32767).astype("<i2").tobytes()
    async with connect(voice_server.url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        for i in range(0, len(pcm), 9600):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[i:i + 9600]).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c1"}))
        assert json.loads(await ws.recv())["type"] == "input_audio_buffer.committed"
        await ws.send(json.dumps({"type": "response.create"}))
        from tests.helpers.server import collect_response

        r = await collect_response(ws)
    assert "three" in r["user"].lower() or "3" in r["user"]
    assert r["status"] == "completed" and r["audio"] > 0


def test_http_routes(voice_server: RunningServer) -> None:
    status, ctype, body = http_get(voice_server.port, "/")
    assert status == 200 and ctype.startswith("text/html") and "app.js" in body
    status, ctype, body = http_get(voice_server.port, "/app.js")
    assert status == 200 and "javascript" in ctype and "AudioWorklet" in body
    status, _, body = http_get(voice_server.port, "/worklet.js")
    assert status == 200 and "registerProcessor" in body
    status, ctype, body = http_get(voice_server.port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["token_required"] is False
    status, ctype, body = http_get(voice_server.port, "/metrics")
    assert status == 200 and "voice_sessions_active" in body
    assert re.search(r"^voice_sessions_total \d+$", body, re.M)
    assert http_get(voice_server.port, "/../../etc/passwd")[0] == 404
    assert http_get(voice_server.port, "/static/../app.py")[0] == 404
    assert http_get(voice_server.port, "/v1/realtime")[0] == 426


async def test_origin_and_model_checks(voice_server: RunningServer) -> None:
    with pytest.raises(InvalidStatus) as err:
        async with connect(voice_server.url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert err.value.response.status_code == 403
    same = f"http://127.0.0.1:{voice_server.port}"
    async with connect(voice_server.url, origin=same) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["type"] == "session.created"
    with pytest.raises(InvalidStatus) as err:
        async with connect(voice_server.url.replace("model=voice", "model=../../x.gguf")):
            pass
    assert err.value.response.status_code == 400


def test_token_required_off_loopback_and_enforced(voice_server: RunningServer) -> None:
    from voice.errors import ConfigError
    from voice.server.app import VoiceServer

    cfg = voice_server.server.cfg
    with pytest.raises(ConfigError, match="VOICE_SERVER_TOKEN"):
        VoiceServer(cfg, host="0.0.0.0", environ={})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": "s3cret"})
    VoiceServer(cfg, host="0.0.0.0", environ={"VOICE_SERVER_TOKEN": "s3cret-s3cret-s3cret"},
                resources=voice_server.server.resources)

    running, shutdown = start_server(cfg, environ={"VOICE_SERVER_TOKEN": "s3cret"},
                                     resources=voice_server.server.resources)
    try:
        async def check() -> None:
            with pytest.raises(InvalidStatus) as err:
                async with connect(running.url):
                    pass
            assert err.value.response.status_code == 401
            with pytest.raises(InvalidStatus):
                async with connect(running.url, additional_headers={"Authorization": "Bearer wrong"}):
                    pass
            async with connect(running.url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
            # browsers pass it as a subprotocol
            async with connect(running.url, subprotocols=["realtime", "openai-insecure-api-key.s3cret"]) as ws:
                assert ws.subprotocol == "realtime"

        asyncio.run(check())
        assert running.server.metrics.sessions_rejected["unauthorized"] == 2
        assert json.loads(http_get(running.port, "/healthz")[2])["token_required"] is True  # the page shows its field
    finally:
        shutdown()


def test_serve_refuses_public_bind_without_token() -> None:
    from tests.helpers.asr import run_voice

    r = run_voice("serve", "--host", "0.0.0.0", "--port", "0", env={"VOICE_SERVER_TOKEN": ""})
    assert r.returncode == 2
    assert r.stderr.strip().startswith("voice: error: refusing to listen on 0.0.0.0")
    assert "Traceback" not in r.stderr


async def test_sessions_keep_their_own_cached_prefix(voice_server: RunningServer) -> None:
    """Two sessions alternating turns: each first turn finds the system prompt warm, each later
    turn finds its whole history in its own slot (llama.cpp's timings in voice.metrics)."""
    async with connect(voice_server.url) as a, connect(voice_server.url) as b:
        for ws in (a, b):
            json.loads(await ws.recv())  # session.created
        totals: dict[str, int] = {}
        for turn in (1, 2):
            for name, ws in (("a", a), ("b", b)):
                r = await text_turn(ws, f"Question {turn} from {name}: what is a good bread?")
                m = r["metrics"]
                evaluated, cached = m["llm_prompt_tokens"], m["llm_cached_tokens"]
                assert evaluated is not None and cached is not None, m
                if turn == 1:  # the system prompt (about 150 tokens) was warmed, the question is new
                    assert cached >= 100 and evaluated <= 30, (name, m)
                else:  # everything the previous prompt held is reused
                    assert cached >= totals[name] and evaluated <= 40, (name, turn, m)
                totals[name] = evaluated + cached
