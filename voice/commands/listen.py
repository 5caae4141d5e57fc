"""``voice listen``: live transcription from the microphone, one line per utterance."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from voice.commands import Subparsers, apply_flags
from voice.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "listen",
        help="live transcription from the microphone (VAD endpointing -> Whisper), one line per utterance",
        description="Transcribe what the microphone hears, printing each utterance when it ends. "
        "Ctrl-C stops. With no microphone, use `voice transcribe FILE`.",
    )
    p.add_argument("--input-device", metavar="NAME|INDEX", help="microphone by name substring or index")
    p.add_argument("--model", metavar="NAME", help="ASR model (registry name or folder)")
    p.add_argument("--language", metavar="XX", help="language code; default: the config's (or detect)")
    p.add_argument("--times", action="store_true", help="prefix each line with its start-end stream time")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    apply_flags(cfg, {"audio.input_device": args.input_device, "asr.model": args.model,
                      "asr.language": args.language})

    def show(start: float, end: float, text: str) -> None:
        line = f"[{start:7.2f}-{end:7.2f}] {text}" if args.times else text
        print(line, flush=True)

    return asyncio.run(listen(cfg, show))


async def listen(
    cfg: Config,
    on_text: Callable[[float, float, str], None],
    *,
    max_utterances: int | None = None,
    transcriber: Any | None = None,
    ready: asyncio.Event | None = None,
) -> int:
    """Microphone -> Endpointer -> transcriber, until cancelled or ``max_utterances`` printed.

    Reading the microphone never waits for Whisper: utterances go through a small queue to a
    worker task (the oldest is dropped if Whisper falls far behind). ``ready`` is set once
    the model is loaded and the microphone is open.
    """
    from voice.asr import get_transcriber
    from voice.audio.io import Microphone, resolve_device
    from voice.audio.vad import Endpointer, SpeechEnded

    resolve_device(cfg.audio.input_device, "input")  # no microphone: fail before loading a model
    asr = transcriber if transcriber is not None else get_transcriber(cfg)
    await asyncio.to_thread(asr.load)
    endpointer = Endpointer(cfg.vad)
    utterances: asyncio.Queue[SpeechEnded | None] = asyncio.Queue(maxsize=8)
    done = 0

    async def transcribe_worker() -> None:
        nonlocal done
        while (utt := await utterances.get()) is not None:
            result = await asr.transcribe(utt.audio, live=True)
            if result.text.strip():
                on_text(utt.start, utt.t, result.text.strip())
                done += 1
                if max_utterances is not None and done >= max_utterances:
                    return

    frame_samples = round(cfg.audio.sample_rate * cfg.audio.frame_ms / 1000)
    async with Microphone(cfg.audio.input_device, sample_rate=cfg.audio.sample_rate,
                          frame_samples=frame_samples, max_queued=cfg.audio.max_queued_frames) as mic:
        if mic.sample_rate != 16000:
            log.warning("audio.sample_rate %d: the VAD and Whisper want 16000", mic.sample_rate)
        print(f"voice: listening on device {mic.device} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        worker = asyncio.create_task(transcribe_worker())
        if ready is not None:
            ready.set()
        try:
            async for frame in mic:
                if worker.done():
                    break
                for ev in endpointer.process(frame):
                    if isinstance(ev, SpeechEnded):
                        if utterances.full():
                            utterances.get_nowait()
                            log.warning("transcription is falling behind: dropped an utterance")
                        utterances.put_nowait(ev)
        finally:
            if not worker.done():
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker  # re-raises a transcription error
    return 0
