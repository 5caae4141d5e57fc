"""``voice transcribe FILE...``: audio files to text, JSON, SRT or WebVTT.

The model loads once for all files. A file that cannot be read gets one ``voice: error:`` line
on stderr and the others are still transcribed; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from voice.commands import Subparsers, apply_flags
from voice.config import Config
from voice.errors import VoiceError

if TYPE_CHECKING:
    from voice.asr.base import Segment, Transcript

FORMATS = ("text", "json", "srt", "vtt")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files (WAV, FLAC, MP3, OGG/Opus)",
        description="Transcribe audio files with Whisper. JSON prints one object per line: file, text, "
        "segments (start, end, text), language, model, device, seconds (audio length) and elapsed "
        "(processing seconds).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    p.add_argument("-f", "--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("-m", "--model", help="ASR model: registry name or model folder (default: asr.model)")
    p.add_argument("-l", "--language", help="language code such as en or de (default: asr.language, else detect)")
    p.add_argument("--beam", type=int, metavar="N", help="beam size (default: asr.file_beam_size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="compute device (default: asr.device)")
    p.add_argument("-o", "--output-dir", metavar="DIR",
                   help="write one <name>.<format> file per input here instead of printing")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.beam is not None and args.beam < 1:
        from voice.errors import ConfigError

        raise ConfigError(f"--beam must be 1 or more, got {args.beam}")
    apply_flags(cfg, {"asr.model": args.model, "asr.language": args.language, "asr.device": args.device,
                      "asr.file_beam_size": args.beam})
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None and not out_dir.is_dir():
        from voice.errors import InputError

        raise InputError(f"--output-dir {out_dir} is not an existing folder")

    from voice.asr import get_transcriber
    from voice.audio.files import load_audio

    transcriber = get_transcriber(cfg)
    transcriber.load()  # unknown or missing model: one error before any file is read
    language = transcriber.check_language()
    failures: list[VoiceError] = []
    for i, name in enumerate(args.files):
        t0 = time.perf_counter()
        try:
            audio = load_audio(name, sample_rate=16000)
            result = transcriber.transcribe_sync(audio, language=language)
        except VoiceError as err:
            print(f"voice: error: {err}", file=sys.stderr, flush=True)
            failures.append(err)
            continue
        elapsed = time.perf_counter() - t0
        rendered = render(args.format, name, result, elapsed)
        if out_dir is not None:
            _write_text(out_dir / f"{Path(name).stem}.{_suffix(args.format)}", rendered)
        else:
            _print(sys.stdout, args.format, name, rendered, first=i == 0, several=len(args.files) > 1)
    if failures:
        return max(err.exit_code for err in failures)
    return 0


# ---------------------------------------------------------------------------- formatting


def render(fmt: str, name: str, result: Transcript, elapsed: float) -> str:
    if fmt == "json":
        return json.dumps(to_json(name, result, elapsed), ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(result.segments)
    if fmt == "vtt":
        return to_vtt(result.segments)
    return result.text + "\n"


def to_json(name: str, result: Transcript, elapsed: float) -> dict[str, object]:
    return {
        "file": name,
        "text": result.text,
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in result.segments],
        "language": result.language,
        "model": result.model,
        "device": result.device,
        "seconds": round(result.duration_s, 3),
        "elapsed": round(elapsed, 3),
    }


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[Segment]) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment]) -> str:
    blocks = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _suffix(fmt: str) -> str:
    return {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}[fmt]


def _print(out: TextIO, fmt: str, name: str, rendered: str, *, first: bool, several: bool) -> None:
    if several and fmt == "text":
        out.write(f"{name}: {rendered}")
    elif several and fmt in ("srt", "vtt"):
        # Subtitles of several files: a blank line between them, the file name as a note (vtt).
        if not first:
            out.write("\n")
        if fmt == "vtt":
            rendered = rendered.replace("WEBVTT\n\n", f"WEBVTT\n\nNOTE {name}\n\n", 1)
        out.write(rendered)
    else:
        out.write(rendered)
    out.flush()


def _write_text(path: Path, text: str) -> None:
    from voice.fsutil import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
