"""Real audio devices for tests: a private PulseAudio daemon with a null sink and its monitor.

Each test session starts its own ``pulseaudio`` (own runtime dir, socket, HOME; nothing of
the user's) with a null sink. The environment then points libpulse and sounddevice's ALSA
"pulse" device at it: ``PULSE_SERVER`` (the private socket), ``PULSE_SINK`` (the null sink)
and ``PULSE_SOURCE`` (its monitor). So whatever a test plays on the "pulse" output device is
what a :class:`voice.audio.io.Microphone` on the "pulse" input device hears: a virtual
microphone. Parallel test runs each get their own daemon and never hear each other.

How to use it (the fixtures are registered in tests/conftest.py ``pytest_plugins``)::

    @pytest.mark.audio
    async def test_something(pulse_devices):
        mic = Microphone(pulse_devices.input_device)      # hears the null sink
        spk = Speaker(pulse_devices.output_device, 16000)  # plays into it
        await pulse_devices.play_into_mic(audio, 16000)    # "someone speaks" (separate stream)
        pulse_devices.start_player(wav_path)               # same, via paplay, in a subprocess

``pulse_server`` (session scope) is the daemon itself (:class:`PulseServer`); use it
directly outside pytest as a context manager. The daemon is stopped by its pid at the end
of the session and the environment is restored.

``PULSE_LATENCY_MSEC`` is deliberately NOT set here: Microphone/Speaker ask for 50 ms
themselves (voice.audio.io.request_pulse_latency), and the tests check that they do. Code
that opens sounddevice streams directly gets PulseAudio's default buffering (0.5-2 s ahead).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SINK = "voice_test_sink"


class PulseServer:
    """A private PulseAudio daemon with a null sink ``SINK`` (and ``SINK.monitor``).

    ``start()`` launches it in the foreground (``--daemonize=no``) so its pid is ours;
    ``stop()`` terminates that pid. ``env`` holds the variables a client needs.
    """

    def __init__(self, sink: str = SINK, rate: int = 48000) -> None:
        self.sink = sink
        self.rate = rate
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "runtime" / "native"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PULSE_SERVER": f"unix:{self.socket_path}",
            "PULSE_SINK": self.sink,
            "PULSE_SOURCE": f"{self.sink}.monitor",
            # libpulse clients read the cookie from here; the daemon allows anonymous clients.
            "PULSE_COOKIE": str(self.socket_path.parent / "cookie"),
        }

    def start(self, timeout: float = 15.0) -> None:
        exe = shutil.which("pulseaudio")
        if exe is None:
            raise RuntimeError("pulseaudio is not installed (scripts/install.sh installs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="voice-pulse-"))
        runtime, home = self.dir / "runtime", self.dir / "home"
        runtime.mkdir(mode=0o700)
        home.mkdir(mode=0o700)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PULSE_RUNTIME_PATH": str(runtime),
            "PULSE_STATE_PATH": str(self.dir / "state"),
        }
        args = [
            exe, "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
            "--disallow-module-loading=no", f"--log-target=file:{self.dir / 'pulse.log'}",
            f"--load=module-native-protocol-unix socket={self.socket_path} auth-anonymous=1",
            f"--load=module-null-sink sink_name={self.sink} rate={self.rate}",
            "--load=module-always-sink",
        ]
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}: {self.log()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pulseaudio did not come up in {timeout} s: {self.log()}")

    def _ready(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        r = subprocess.run(["pactl", "list", "short", "sinks"], env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=10)
        return r.returncode == 0 and self.sink in r.stdout

    def log(self) -> str:
        p = self.dir / "pulse.log" if self.dir else None
        return p.read_text(errors="replace")[-2000:] if p and p.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PulseServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reinit_portaudio() -> None:
    """Make an already-imported sounddevice rescan devices (PortAudio lists them at init)."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()  # noqa: SLF001 - sounddevice has no public rescan
        sd._initialize()  # noqa: SLF001


@dataclass
class PulseDevices:
    """What a test needs to use the virtual devices: device names for Microphone/Speaker."""

    server: PulseServer
    input_device: str = "pulse"
    output_device: str = "pulse"
    players: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def sink(self) -> str:
        return self.server.sink

    @property
    def source(self) -> str:
        return f"{self.server.sink}.monitor"

    async def play_into_mic(self, audio: np.ndarray, sample_rate: int) -> None:
        """Play ``audio`` into the null sink (heard by the virtual mic); returns when played."""
        from voice.audio.io import play

        await play(audio, sample_rate, device=self.output_device)

    def add_sink(self, name: str) -> str:
        """A second null sink (e.g. headphones the microphone does not hear); returns its name.
        Open a stream on it with :func:`routed_to` around the open."""
        r = subprocess.run(["pactl", "list", "short", "sinks"], env={**os.environ, **self.server.env},
                           capture_output=True, text=True, timeout=10)
        if name not in r.stdout:
            subprocess.run(["pactl", "load-module", "module-null-sink", f"sink_name={name}",
                            f"rate={self.server.rate}"], env={**os.environ, **self.server.env},
                           check=True, capture_output=True, timeout=10)
        return name

    def start_player(self, wav: str | Path) -> subprocess.Popen[bytes]:
        """Start ``paplay`` of a WAV file into the virtual mic, as a separate process."""
        p = subprocess.Popen(["paplay", f"--device={self.sink}", str(wav)],
                             env={**os.environ, **self.server.env})
        self.players.append(p)
        return p


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables; restore them on exit."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def routed_to(sink: str | None = None, source: str | None = None) -> Iterator[None]:
    """Streams opened inside go to ``sink`` / read from ``source`` (libpulse reads PULSE_SINK
    and PULSE_SOURCE when a stream's context is made, i.e. at open)."""
    with _environ({k: v for k, v in (("PULSE_SINK", sink), ("PULSE_SOURCE", source)) if v}):
        yield


@contextlib.contextmanager
def pulse_environment(server: PulseServer) -> Iterator[None]:
    """Point this process (libpulse, sounddevice) at ``server``; restore on exit."""
    with _environ(server.env):
        reinit_portaudio()
        try:
            yield
        finally:
            reinit_portaudio()


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio daemon for the whole test session, with this process pointed at it."""
    server = PulseServer()
    server.start()
    try:
        with pulse_environment(server):
            yield server
    finally:
        server.stop()


@pytest.fixture
def pulse_devices(pulse_server: PulseServer) -> Iterator[PulseDevices]:
    """Virtual microphone + speaker names (both "pulse"); stops players a test started."""
    devs = PulseDevices(pulse_server)
    yield devs
    for p in devs.players:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=5)
