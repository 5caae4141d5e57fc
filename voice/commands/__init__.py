"""One module per ``voice`` subcommand (see :mod:`voice.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from voice.config import Config, apply_overrides


def apply_flags(cfg: Config, flags: dict[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Apply command-line flags (dotted keys; None = not given) on top of ``cfg``, checked like
    config keys; ``names`` maps a key to its flag for errors (default "command-line flag for KEY")."""
    apply_overrides(cfg, flags, names)


Subparsers = argparse._SubParsersAction  # noqa: SLF001 - argparse exposes no public name
