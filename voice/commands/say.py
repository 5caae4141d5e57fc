"""``voice say "text"``: speak on the speaker, or write an audio file with ``--output``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from voice.commands import Subparsers, apply_flags
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser("say", help="speak text with a TTS engine (or write it to a file)")
    p.add_argument("text", nargs="?", help="what to say; - or nothing reads stdin")
    p.add_argument("--engine", help="piper, chattts or chatterbox (default: tts.engine)")
    p.add_argument("--voice", help="voice name or path (engine-specific)")
    p.add_argument("--speed", type=float, help="speed factor (1.0 = normal)")
    p.add_argument("-o", "--output", metavar="FILE", help="write .wav or .flac instead of playing")
    p.add_argument("--output-device", metavar="NAME|INDEX", help="speaker name or index (default: audio.output_device)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from voice.errors import InputError
    from voice.tts.chunker import clean_for_speech

    apply_flags(cfg, {"tts.engine": args.engine, "tts.voice": args.voice, "tts.speed": args.speed,
                      "audio.output_device": args.output_device})
    limit = cfg.tts.max_say_chars
    # Read one character past the limit, never an unbounded stdin.
    text = args.text if args.text not in (None, "-") else sys.stdin.read(limit + 1)
    if not text or not text.strip():
        raise InputError("nothing to say: give the text as an argument or on stdin")
    if len(text) > limit:
        size = f"{len(text):,} characters" if args.text not in (None, "-") else f"over {limit:,} characters"
        raise InputError(f"the text is {size}; voice say takes at most {limit:,} (tts.max_say_chars)")
    # The same cleanup as spoken answers: no markdown, code blocks, URLs or emoji read aloud.
    text = clean_for_speech(text)
    if not text:
        raise InputError("nothing speakable in the text (only code, links, emoji or markup)")
    if args.output:
        out = Path(args.output).expanduser()
        if out.suffix.lower() not in (".wav", ".flac"):
            raise InputError(f"--output {out}: use a .wav or .flac file name")
        if out.is_dir():
            raise InputError(f"--output {out} is a folder")
    return asyncio.run(_say(cfg, text, args.output))


async def _say(cfg: Config, text: str, output: str | None) -> int:
    from voice.tts.base import create_engine, synthesize_to_file

    engine = create_engine(cfg)
    await engine.load()
    if output:
        seconds, rate = await synthesize_to_file(engine, text, output)
        print(f"{output}: {seconds:.2f} s, {rate} Hz, engine {engine.name}", file=sys.stderr)
        return 0
    from voice.audio.io import Speaker

    # Stream: the first sentence plays while the next is synthesized.
    async with Speaker(device=cfg.audio.output_device, sample_rate=engine.sample_rate) as speaker:
        async for chunk in engine.stream(text):
            await speaker.write(chunk.audio)
        await speaker.drain()
    return 0
