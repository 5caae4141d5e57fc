"""The ``voice chat`` screen: status, live transcript, the streaming answer, latency per turn.

:class:`ChatView` is a conversation event listener that keeps the screen state (sans-I/O:
``render()`` returns a rich renderable). :class:`KeyReader` reads single keys from a terminal
without blocking the event loop (``loop.add_reader`` in cbreak mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from voice.pipeline import events as ev

STATUS_STYLE = {
    "listening": ("green", "listening"),
    "thinking": ("yellow", "thinking"),
    "speaking": ("cyan", "speaking"),
    "muted": ("red", "muted"),
    "stopped": ("dim", "stopped"),
}


@dataclass
class _Turn:
    turn_id: int
    user: str = ""
    assistant: str = ""
    spoken: str | None = None
    cancelled: str | None = None
    latency: str = ""
    user_source: str = "speech"


@dataclass
class ChatView:
    """Screen state built from conversation events."""

    max_turns: int = 6
    status: str = "listening"
    muted: bool = False
    hint: str = "m mute   q quit"
    turns: list[_Turn] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    on_change: Callable[[], None] | None = None
    #: Plain mode (not a terminal): finished lines go here instead of a live screen.
    printer: Callable[[str], None] | None = None

    def _turn(self, turn_id: int) -> _Turn:
        for t in reversed(self.turns):
            if t.turn_id == turn_id:
                return t
        t = _Turn(turn_id)
        self.turns.append(t)
        del self.turns[: -self.max_turns]
        return t

    def __call__(self, e: ev.Event) -> None:  # an event listener
        if isinstance(e, ev.StatusChanged):
            self.status = e.status
        elif isinstance(e, ev.UserSpeechStarted):
            self._turn(e.turn_id).user = "…"
        elif isinstance(e, ev.TranscriptFinal):
            t = self._turn(e.turn_id)
            t.user, t.user_source = e.text or "(nothing heard)", e.source
            self._print(f"you: {t.user}")
        elif isinstance(e, ev.LlmDelta):
            self._turn(e.turn_id).assistant += e.text
        elif isinstance(e, ev.PlaybackDone):
            self._turn(e.turn_id).spoken = e.spoken_text
        elif isinstance(e, ev.TurnCancelled):
            t = self._turn(e.turn_id)
            t.cancelled, t.spoken = e.reason, e.spoken_text
        elif isinstance(e, ev.TurnMetrics):
            t = self._turn(e.turn_id)
            t.latency = format_latency(e)
            if t.assistant.strip():
                cut = f" [cut by {t.cancelled}: heard {t.spoken!r}]" if t.cancelled else ""
                self._print(f"assistant: {t.assistant.strip()}{cut}")
            self._print(f"  ({t.latency})")
        elif isinstance(e, ev.Error):
            self.errors.append(f"{e.stage}: {e.message}")
            del self.errors[:-3]
            self._print(f"error ({e.stage}): {e.message}")
        else:
            return
        if self.on_change is not None:
            self.on_change()

    def _print(self, line: str) -> None:
        if self.printer is not None:
            self.printer(line)

    def render(self) -> RenderableType:
        color, label = STATUS_STYLE.get("muted" if self.muted else self.status, ("white", self.status))
        head = Text.assemble(("● ", color), (label, f"bold {color}"), ("   " + self.hint, "dim"))
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        for t in self.turns:
            if t.user:
                table.add_row(Text("you", style="green"), Text(t.user))
            if t.assistant:
                body = Text(t.assistant.strip())
                if t.cancelled and t.spoken is not None:
                    body = Text.assemble((t.spoken, ""), (" ⟂ ", "red"),
                                         (t.assistant.strip()[len(t.spoken):], "dim strike"))
                table.add_row(Text("assistant", style="cyan"), body)
            if t.latency:
                table.add_row(Text(""), Text(t.latency, style="dim"))
        parts: list[RenderableType] = [head, table]
        for err in self.errors:
            parts.append(Text(f"error: {err}", style="red"))
        return Panel(Group(*parts), title="voice chat", border_style=color)


def format_latency(m: ev.TurnMetrics) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}s"

    head = ([f"from silence {f(m.from_silence_s)}", f"after VAD {f(m.voice_to_voice_s)}"]
            if m.source == "speech" else [f"text-to-voice {f(m.voice_to_voice_s)}"])
    bits = [*head, f"transcript {f(m.transcript_s)}", f"first token {f(m.first_token_s)}",
            f"first audio {f(m.first_audio_s)}", f"total {f(m.total_s)}"]
    if m.preemptive:
        bits.append("preemptive")
    if m.cancelled:
        bits.append("cancelled")
    return " · ".join(bits)


class KeyReader:
    """Single key presses from a terminal, delivered to ``on_key`` on the event loop.

    Puts the terminal in cbreak mode (no echo, no line buffering) while active and restores it
    on exit. Does nothing when stdin is not a terminal.
    """

    def __init__(self, on_key: Callable[[str], None], stream: Any = None) -> None:
        self.on_key = on_key
        self.stream = stream or sys.stdin
        self.active = False

    @contextlib.contextmanager
    def attached(self) -> Iterator[KeyReader]:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            yield self
            return
        if not os.isatty(fd):
            yield self
            return
        import termios
        import tty

        old = termios.tcgetattr(fd)
        loop = asyncio.get_running_loop()
        try:
            tty.setcbreak(fd)
            loop.add_reader(fd, self._ready, fd)
            self.active = True
            yield self
        finally:
            self.active = False
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, old)

    def _ready(self, fd: int) -> None:
        try:
            data = os.read(fd, 32)
        except OSError:
            return
        for ch in data.decode(errors="ignore"):
            self.on_key(ch)


def make_console() -> Console:
    return Console(stderr=False, highlight=False)
