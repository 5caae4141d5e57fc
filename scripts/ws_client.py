#!/usr/bin/env python3
"""Stream a WAV file to `voice serve` as a realtime client; save the reply audio and transcript.

    .venv/bin/python scripts/ws_client.py question.wav --out reply.wav [--url ws://127.0.0.1:8765/v1/realtime]

The file is sent at real time as base64 PCM16 24 kHz (input_audio_buffer.append) followed by
silence so the server's VAD ends the turn. The token, if the server needs one, comes from
$VOICE_SERVER_TOKEN. Prints the user transcript, the answer and the turn's latencies as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def run(args: argparse.Namespace) -> dict:
    from websockets.asyncio.client import connect

    from voice.audio.files import load_audio, write_audio

    audio = load_audio(args.wav, 24000)
    audio = np.concatenate([audio, np.zeros(int(args.tail_s * 24000), np.float32)])
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    token = os.environ.get("VOICE_SERVER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = bytearray()
    result: dict = {"user": None, "assistant": None, "metrics": None, "status": None}
    async with connect(args.url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()  # session.created

        async def feed() -> None:
            step = 4800  # 100 ms
            for i in range(0, len(pcm), step):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[i:i + step]).decode()}))
                await asyncio.sleep(0.1 / args.speed)

        feeder = asyncio.create_task(feed())
        async with asyncio.timeout(args.timeout):
            async for message in ws:
                m = json.loads(message)
                t = m["type"]
                if t == "response.output_audio.delta":
                    reply += base64.b64decode(m["delta"])
                elif t == "conversation.item.input_audio_transcription.completed":
                    result["user"] = m["transcript"]
                elif t == "response.output_audio_transcript.done":
                    result["assistant"] = m["transcript"]
                elif t == "response.done":
                    result["status"] = m["response"]["status"]
                elif t == "error":
                    print(f"server error: {m['error']['message']}", file=sys.stderr)
                elif t == "voice.metrics":
                    result["metrics"] = m["metrics"]
                    break
        feeder.cancel()
    out = np.frombuffer(bytes(reply), "<i2").astype(np.float32) / 32768.0
    write_audio(args.out, out, 24000)
    Path(args.out).with_suffix(".txt").write_text(f"user: {result['user']}\nassistant: {result['assistant']}\n")
    result["audio_s"] = round(out.shape[0] / 24000, 2)
    result["out"] = str(args.out)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description="Stream a WAV file to voice serve and save the spoken reply.")
    ap.add_argument("wav", help="question audio (any format voice reads)")
    ap.add_argument("--out", default="reply.wav", help="where to write the reply audio (24 kHz); transcript beside it (.txt)")
    ap.add_argument("--url", default="ws://127.0.0.1:8765/v1/realtime?model=voice")
    ap.add_argument("--tail-s", type=float, default=1.5, help="silence sent after the file to end the turn")
    ap.add_argument("--speed", type=float, default=1.0, help="send faster than real time (e.g. 4)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    try:
        print(json.dumps(asyncio.run(run(args)), indent=2))
    except (OSError, TimeoutError) as err:
        print(f"ws_client: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
