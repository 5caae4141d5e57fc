"""Give freed heap back to the OS once a session ends.

glibc keeps memory freed by a session (its event queues, a flood's parsed frames, the buffers of
the worker threads' own malloc arenas) in its free lists, so RSS stays at the peak of the worst
client ever served. ``malloc_trim(0)`` returns those pages; where libc has no such call
(musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def heap_trimmer() -> Callable[[], None]:
    """A function that collects garbage and trims the C heap (cheap: ~1-10 ms)."""
    trim: Callable[[int], int] | None = None
    name = ctypes.util.find_library("c")
    if name:
        try:
            trim = ctypes.CDLL(name).malloc_trim
        except (OSError, AttributeError):
            trim = None

    def run() -> None:
        gc.collect()
        if trim is not None:
            trim(0)

    return run
