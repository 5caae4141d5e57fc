"""``voice serve``: the realtime WebSocket server and browser client (see docs/server.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from voice.commands import Subparsers, apply_flags
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI Realtime-compatible WebSocket API, OpenAI's audio API over HTTP and the browser client")
    p.add_argument("--host", help="address to bind (default server.host, 127.0.0.1); off loopback a token is required")
    p.add_argument("--port", type=int, help="port (default server.port, 8765; 0 = any free port)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    apply_flags(cfg, {"server.host": args.host, "server.port": args.port},
                {"server.host": "--host", "server.port": "--port"})
    from voice.server.app import VoiceServer

    async def main() -> None:
        server = VoiceServer(cfg)  # refuses a non-loopback bind without a token, before loading models
        print("voice serve: loading models...", file=sys.stderr)
        async with server:
            print(f"voice serve: http://{server.host}:{server.bound_port}/  (WebSocket /v1/realtime; "
                  "OpenAI audio API /v1/audio/transcriptions, /v1/audio/speech, /v1/models)", file=sys.stderr)
            await server.serve_forever()

    try:
        asyncio.run(main())
    except OSError as err:
        from voice.errors import ConfigError

        raise ConfigError(f"cannot listen on {cfg.server.host}:{cfg.server.port}: {err.strerror or err}") from None
    return 0
