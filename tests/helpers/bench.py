"""What the benchmark scripts in scripts/ share: the CPU's name and the JSON they end with."""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), or what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def emit_json(out: dict[str, Any], path: str | Path | None = None) -> None:
    """Print ``out`` as indented JSON, and also write it to ``path`` when one is given."""
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
