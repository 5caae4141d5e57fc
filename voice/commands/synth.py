"""``voice synth INPUT -o OUTDIR``: batch synthesis to audio files with a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voice.commands import Subparsers, apply_flags
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesize many utterances to audio files (resumable, parallel)",
        description=(
            "INPUT is .txt (one utterance a line), .csv or .jsonl (fields id, text, optional engine,"
            " voice, speed), or - for stdin. Writes OUTDIR/<id>.<format> and OUTDIR/manifest.jsonl."
            " A re-run skips rows already done. Exit code 0 only when every row succeeded."
        ),
    )
    p.add_argument("input", metavar="INPUT", help=".txt, .csv, .jsonl file, or - for stdin")
    p.add_argument("-o", "--output", metavar="OUTDIR", required=True, help="output folder")
    p.add_argument("--engine", help="TTS engine: piper, chattts, chatterbox (default: tts.engine)")
    p.add_argument("--voice", help="voice for rows that name none (engine-specific)")
    p.add_argument("--speed", type=float, help="speed factor for rows that give none (1.0 = normal)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio format (default wav)")
    p.add_argument("--workers", type=int, metavar="N", help="parallel single-threaded worker processes, i.e. cores used (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from voice.errors import InputError
    from voice.synth import Result, read_rows, run_job

    apply_flags(cfg, {"tts.engine": args.engine, "tts.voice": args.voice, "tts.speed": args.speed})
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}")
    rows = read_rows(args.input)
    if not rows:
        raise InputError(f"input {args.input} holds no rows")
    outdir = Path(args.output).expanduser()

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=console, disable=args.quiet,
        transient=False,
    )
    task = progress.add_task("synth", total=len(rows))

    def on_start(total: int, done_before: int) -> None:
        progress.update(task, total=total, completed=done_before)
        if done_before:
            progress.console.print(f"resuming: {done_before} of {total} rows already done")

    def on_result(res: Result) -> None:
        progress.advance(task)
        if res.status != "ok":
            progress.console.print(f"[red]row {res.id} failed:[/red] {res.error}", markup=True, highlight=False)

    with progress:
        summary = run_job(cfg, rows, outdir, fmt=args.format, workers=args.workers,
                          on_result=on_result, on_start=on_start)
    rtf = summary.wall_seconds / summary.audio_seconds if summary.audio_seconds else 0.0
    line = (
        f"synth: {summary.ok}/{summary.total} ok ({summary.done_before} done before),"
        f" {len(summary.failed)} failed; {summary.audio_seconds:.1f} s of audio in"
        f" {summary.wall_seconds:.1f} s with {summary.workers} worker(s) (RTF {rtf:.3f});"
        f" manifest {outdir / 'manifest.jsonl'}"
    )
    print(line, file=sys.stderr)
    if summary.failed:
        ids = ", ".join(r.id for r in summary.failed[:10]) + (" ..." if len(summary.failed) > 10 else "")
        print(f"synth: failed rows: {ids}", file=sys.stderr)
    return 0 if summary.success else 1
