"""``voice chat``: a spoken conversation at the terminal (or typed, or from/to files)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.commands import Subparsers, apply_flags
from voice.config import Config
from voice.errors import DeviceError, InputError

if TYPE_CHECKING:
    import numpy as np

    from voice.pipeline.record import Recorder

NO_MIC = (
    "{reason}; without audio devices use --text (type instead of talk), "
    "--input FILE (a recorded conversation) and --output FILE (write the answers to a file)"
)
NO_SPEAKER = "{reason}; without a speaker use --output FILE to write the answers to a file"


def _reason(err: DeviceError) -> str:
    """The device error without its generic "pick one with ..." advice (chat gives its own)."""
    generic = err.hint is None or err.hint.startswith(("pick one with", "pick another with"))
    return (err.message if generic else str(err)).rstrip(".")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("chat", help="talk with the assistant (microphone, or --text / --input / --output)")
    p.add_argument("--text", action="store_true", help="type instead of talk (one line per turn)")
    p.add_argument("--input", metavar="FILE", help="a conversation from an audio file (turns separated by silence)")
    p.add_argument("--output", metavar="FILE", help="write the assistant's audio to FILE (.wav/.flac) instead of playing it")
    p.add_argument("--record", metavar="FILE",
                   help="record the session as a stereo WAV on one clock: left what was heard, right what was played")
    p.add_argument("--fast", action="store_true", help="with --input: feed the file as fast as it is processed")
    p.add_argument("--kb", metavar="DIR", help="knowledge base folder (default: from config)")
    p.add_argument("--no-retrieval", action="store_true", help="do not search the knowledge base")
    p.add_argument("--engine", help="TTS engine: piper, chattts, chatterbox")
    p.add_argument("--voice", help="TTS voice (engine specific; Piper: registry name or .onnx path)")
    p.add_argument("--headphones", action="store_true", default=None,
                   help="keep the microphone open while the assistant speaks (barge-in without echo)")
    p.add_argument("--echo-cancel", action="store_true", default=None,
                   help="cancel the assistant's echo in the microphone (WebRTC AEC3): barge-in on speakers")
    p.add_argument("--no-speak", action="store_true", help="text answers only")
    p.add_argument("--metrics-json", metavar="FILE", help="write the latency summary as JSON at exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    apply_flags(cfg, {
        "tts.engine": args.engine,
        "tts.voice": args.voice,
        "pipeline.headphones": args.headphones,
        "pipeline.echo_cancel": args.echo_cancel,
        "pipeline.speak": False if args.no_speak else None,
    })
    if args.text and args.input:
        raise InputError("--text and --input exclude each other")
    if args.fast and not args.input:
        raise InputError("--fast only applies to --input")
    if args.input:
        p = Path(args.input).expanduser()
        if not p.exists():
            raise InputError(f"--input {args.input}: no such file")
        if p.is_dir():
            raise InputError(f"--input {args.input}: is a directory")
    if args.output:
        out = Path(args.output).expanduser()
        if out.suffix.lower() not in (".wav", ".flac"):
            raise InputError(f"--output {args.output}: use a .wav or .flac file name")
        if not out.parent.is_dir():
            raise InputError(f"--output {args.output}: folder {out.parent} does not exist")
    if args.record:
        rec = Path(args.record).expanduser()
        if rec.suffix.lower() != ".wav":
            raise InputError(f"--record {args.record}: use a .wav file name")
        if not rec.parent.is_dir():
            raise InputError(f"--record {args.record}: folder {rec.parent} does not exist")
        if args.fast:
            raise InputError("--record needs real time: drop --fast")
        args.record = str(rec)
    if not args.text and not args.input:
        _check_device(cfg.audio.input_device, "input", NO_MIC)
    if cfg.pipeline.speak and not args.output:
        _check_device(cfg.audio.output_device, "output", NO_SPEAKER)
    return asyncio.run(_chat(args, cfg))


def _check_device(spec: Any, kind: str, message: str) -> None:
    from voice.audio.io import resolve_device

    try:
        resolve_device(spec, kind)
    except DeviceError as err:
        raise DeviceError(message.format(reason=_reason(err))) from None
    except OSError as err:  # PortAudio itself missing
        raise DeviceError(message.format(reason=str(err))) from None


async def _chat(args: argparse.Namespace, cfg: Config) -> int:
    from voice.pipeline.conversation import Conversation
    from voice.pipeline.io import FileSink, file_frames
    from voice.pipeline.record import Recorder, RecordingSink
    from voice.pipeline.stack import build_stack, open_kb
    from voice.terminal import ChatView, KeyReader, make_console

    console = make_console()
    live_screen = console.is_terminal and not args.text and not args.input
    kb = open_kb(cfg, args.kb, retrieval=not args.no_retrieval)
    with console.status("loading models (Whisper, LLM, TTS)…") if console.is_terminal else contextlib.nullcontext():
        stack = await build_stack(cfg, kb=kb, need_asr=not args.text)
    sink: Any = None
    sink_cm: Any = contextlib.nullcontext()
    if stack.tts is not None:
        if args.output:
            # recorded: the file "plays" at wall-clock speed, as a device would
            sink = FileSink(args.output, stack.tts.sample_rate, realtime=bool(args.record))
        else:
            from voice.audio.io import Speaker

            sink = Speaker(cfg.audio.output_device, sample_rate=stack.tts.sample_rate)
            sink_cm = sink
    recorder = Recorder(args.record) if args.record else None
    out_sink: Any = sink if sink is None or recorder is None else RecordingSink(sink, recorder)
    echo = None
    if cfg.pipeline.echo_cancel and not args.text and not args.input:
        from voice.pipeline.echo import EchoCanceller

        echo = EchoCanceller()
    view = ChatView(printer=None if live_screen else (lambda s: console.print(s, markup=False, highlight=False)))
    if cfg.pipeline.turn_detection == "ptt":
        view.hint = "space talk/stop   m mute   q quit"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        async with sink_cm:
            conv = Conversation(cfg, transcriber=stack.transcriber, chain=stack.chain, tts=stack.tts,
                                sink=out_sink, voice=cfg.tts.voice, echo=echo)
            conv.add_listener(view)
            if args.text:
                await _text_loop(conv, console, stop)
            elif args.input:
                frames = _recorded(file_frames(args.input, realtime=not args.fast), recorder)
                await _until_stopped(conv.run(frames, hold_while_busy=True), stop)
            else:
                await _mic_loop(conv, cfg, view, console, stop, live_screen, KeyReader, recorder)
            await conv.aclose()
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)
        if isinstance(sink, FileSink):
            sink.close()
        if recorder is not None:
            await asyncio.to_thread(recorder.close)
        await stack.aclose()
    summary = conv.metrics.summary()
    console.print(conv.metrics.format(), markup=False, highlight=False)
    if args.output and isinstance(sink, FileSink):
        console.print(f"answers written to {args.output} ({sink.written_samples / sink.sample_rate:.1f} s)",
                      markup=False)
    if recorder is not None:
        console.print(f"session recorded to {args.record} ({recorder.samples / recorder.rate:.1f} s, "
                      "left heard, right played)", markup=False)
    if args.metrics_json:
        await asyncio.to_thread(Path(args.metrics_json).write_text, json.dumps(summary, indent=2) + "\n")
    return 0


async def _recorded(frames: AsyncIterator[np.ndarray], recorder: Recorder | None) -> AsyncIterator[np.ndarray]:
    """``frames``, each put on the recording's left channel as it reaches the pipeline."""
    async for frame in frames:
        if recorder is not None:
            recorder.left(frame, time.monotonic())
        yield frame


async def _until_stopped(coro: Any, stop: asyncio.Event) -> None:
    work = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (work, waiter):
            t.cancel()
        await asyncio.gather(work, waiter, return_exceptions=True)
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]


async def _text_loop(conv: Any, console: Any, stop: asyncio.Event) -> None:
    interactive = sys.stdin.isatty()
    while not stop.is_set():
        if interactive:
            console.print("[bold green]you>[/] ", end="")
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        await _until_stopped(conv.ask(text), stop)


async def _mic_loop(conv: Any, cfg: Config, view: Any, console: Any, stop: asyncio.Event,
                    live_screen: bool, key_reader: Any, recorder: Recorder | None = None) -> None:
    from rich.live import Live

    from voice.audio.io import Microphone

    ptt = cfg.pipeline.turn_detection == "ptt"
    talking = False

    def on_key(ch: str) -> None:
        nonlocal talking
        if ch in ("q", "Q", "\x03", "\x04"):
            stop.set()
        elif ch in ("m", "M"):
            view.muted = not view.muted
            conv.set_muted(view.muted)
            refresh()
        elif ch == " " and ptt:
            if not talking:
                conv.interrupt("barge_in")
                conv.clear_input()
                view.status, talking = "listening", True
            else:
                talking = False
                asyncio.ensure_future(conv.commit_input())  # noqa: RUF006 - kept by the conversation
            refresh()

    live: Any = None

    def refresh() -> None:
        if live is not None:
            live.update(view.render())

    view.on_change = refresh
    try:
        mic = Microphone(cfg.audio.input_device, sample_rate=16000,
                         frame_samples=512, max_queued=cfg.audio.max_queued_frames)
        async with mic:
            with key_reader(on_key).attached():
                if live_screen:
                    with Live(view.render(), console=console, refresh_per_second=12, transient=False) as live:
                        await _until_stopped(conv.run(_recorded(mic, recorder)), stop)
                else:
                    await _until_stopped(conv.run(_recorded(mic, recorder)), stop)
    except DeviceError as err:
        raise DeviceError(NO_MIC.format(reason=_reason(err))) from None
