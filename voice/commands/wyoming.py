"""``voice wyoming``: serve asr, tts and handle over the Wyoming protocol (Home Assistant)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from voice.commands import Subparsers, apply_flags
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "wyoming",
        help="serve speech-to-text, text-to-speech and the assistant over the Wyoming protocol (Home Assistant)",
        description="A Wyoming server: asr (Whisper), tts (streaming text in) and handle (the LLM chain with "
        "retrieval), one process, models loaded once. In Home Assistant: Settings > Devices & services > "
        "Add integration > Wyoming Protocol, then this host and port.",
    )
    p.add_argument("--uri", help="where to listen: tcp://HOST:PORT or unix:///path "
                   "(default wyoming.uri, tcp://127.0.0.1:10300; port 0 = any free port)")
    p.add_argument("--kb", metavar="DIR", help="knowledge base folder for handle (default: from config)")
    p.add_argument("--max-clients", type=int, metavar="N", help="clients at once (default wyoming.max_clients)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    apply_flags(cfg, {"wyoming.uri": args.uri, "rag.kb_dir": args.kb, "wyoming.max_clients": args.max_clients})
    from voice.wyoming.server import WyomingServer

    async def main() -> None:
        server = WyomingServer(cfg)  # a bad URI is an error before any model loads
        print("voice wyoming: loading models...", file=sys.stderr, flush=True)
        async with server:
            if server.scheme == "tcp" and server.host not in ("127.0.0.1", "localhost", "::1"):
                print("voice wyoming: warning: the Wyoming protocol has no authentication; anyone who can"
                      f" reach {server.host}:{server.port} can use it", file=sys.stderr, flush=True)
            print(f"voice wyoming: listening on {server.uri}", file=sys.stderr, flush=True)
            # SIGTERM (systemd, containers) stops it like Ctrl-C: clients closed, models and a
            # unix socket file released.
            serving = asyncio.ensure_future(server.serve_forever())
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, serving.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    try:
        asyncio.run(main())
    except OSError as err:
        from voice.errors import ConfigError

        raise ConfigError(f"cannot listen on {cfg.wyoming.uri}: {err.strerror or err}") from None
    return 0
