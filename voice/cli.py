"""The ``voice`` command: global flags, config loading, and one module per subcommand.

Each module in :data:`COMMAND_MODULES` has ``register(subparsers)``, which adds its parser and
sets ``handler=run`` where ``run(args, cfg) -> int``. Registration must stay cheap: heavy
imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from voice import __version__
from voice.config import Config, load_config, parse_set
from voice.errors import VoiceError

COMMAND_MODULES = (
    "voice.commands.models",
    "voice.commands.devices",
    "voice.commands.config",
    "voice.commands.transcribe",
    "voice.commands.listen",
    "voice.commands.ingest",
    "voice.commands.kb",
    "voice.commands.ask",
    "voice.commands.synth",
    "voice.commands.say",
    "voice.commands.serve",
    "voice.commands.wyoming",
    "voice.commands.chat",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice",
        description="A local speech assistant: talk, serve, transcribe and synthesize offline.",
    )
    parser.add_argument("--version", action="version", version=f"voice {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML config file (see configs/)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, e.g. --set asr.model=whisper-base (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(cfg: Config, verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else cfg.general.log_level.upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        cfg = load_config(args.config, overrides=parse_set(args.set))
        _setup_logging(cfg, args.verbose)
        return int(args.handler(args, cfg) or 0)
    except VoiceError as err:
        print(f"voice: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("voice: interrupted", file=sys.stderr)
        return 130
