"""``voice config show``: print the effective configuration as TOML."""

from __future__ import annotations

import argparse
import json

from voice.commands import Subparsers
from voice.config import Config, to_dict, to_toml


def register(sub: Subparsers) -> None:
    p = sub.add_parser("config", help="show the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print defaults < file < VOICE_* env < flags, merged")
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    print(json.dumps(to_dict(cfg), indent=2) if args.json else to_toml(cfg), end="" if not args.json else "\n")
    return 0
