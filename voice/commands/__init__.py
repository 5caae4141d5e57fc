"""One module per ``voice`` subcommand (see :mod:`voice.cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from voice.config import Config, _merge, _nest


def apply_flags(cfg: Config, flags: dict[str, Any]) -> None:
    """Apply command-line flags (dotted keys; None = not given) on top of ``cfg``."""
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        _merge(cfg, _nest(given), "command line")


Subparsers = argparse._SubParsersAction  # noqa: SLF001 - argparse exposes no public name
