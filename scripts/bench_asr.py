#!/usr/bin/env python
"""ASR benchmark: ``voice transcribe`` vs faster-whisper directly, same clips, model, beam, threads.

Each measurement runs in a fresh child process (so peak RSS is per variant), alternating the two
variants ``--repeats`` times. Timed: model load + decoding + transcribing every clip (the voice
variant goes through ``voice.cli.main(["transcribe", ...])``: config, registry, device choice,
audio loading, output formatting). Interpreter start and imports are not timed in either.
CPU time (user+sys) is reported too: on a busy shared machine it is steadier than wall time.
Prints one JSON object. Usage: .venv/bin/python scripts/bench_asr.py [--repeats 3] [--beam 5]

``--window 10[,8,...]`` instead compares the stock 30 s encoder window with shorter ones
(asr.live_window_s / asr.file_window_s) through voice's transcriber, in one process with the model
loaded once: live settings (greedy, no timestamps) and file settings (beam), every clip, variants
alternated ``--repeats`` times; corpus WER, summed per-clip median time and CPU time, and every
clip whose transcript differs from the stock one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "speech"


def _clips(folder: Path) -> tuple[list[str], dict[str, str]]:
    import csv

    refs: dict[str, str] = {}
    with (folder / "transcripts.tsv").open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            refs[str(folder / row["file"])] = row["transcript"]
    return sorted(refs), refs


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line."""
    import faster_whisper  # noqa: F401 - imported before timing in both variants

    from voice.config import load_config
    from voice.models import registry_for
    from voice.textnorm import corpus_wer

    clips, refs = _clips(Path(args.clips))
    rss_before = _rss_mb()
    cpu0 = _cpu_s()
    if args.child == "direct":
        from faster_whisper import WhisperModel

        path = str(registry_for(load_config(environ={})).resolve(args.model).path)
        compute = "int8" if args.device == "cpu" else "float16"
        t0 = time.perf_counter()
        model = WhisperModel(path, device=args.device, compute_type=compute, cpu_threads=args.threads)
        t_load = time.perf_counter() - t0
        texts = []
        for clip in clips:
            segments, _ = model.transcribe(clip, beam_size=args.beam)
            texts.append("".join(s.text for s in segments).strip())
        wall = time.perf_counter() - t0
    else:
        import voice.asr  # noqa: F401 - import cost excluded, as for faster_whisper above
        import voice.audio.files  # noqa: F401
        from voice.cli import main

        argv = ["--set", f"asr.cpu_threads={args.threads}", "transcribe", "--format", "json",
                "--model", args.model, "--beam", str(args.beam), "--device", args.device, *clips]
        out = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out):
            rc = main(argv)
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"voice transcribe exited {rc}")
        rows = [json.loads(line) for line in out.getvalue().splitlines()]
        texts = [r["text"] for r in rows]
        t_load = None
    print(json.dumps({
        "variant": args.child,
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu0,
        "load_s": t_load,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": rss_before,
        "wer": corpus_wer(zip([refs[c] for c in clips], texts, strict=True)),
    }))


def window_mode(args: argparse.Namespace) -> dict:
    """Stock 30 s window vs shorter ones, same transcriber, same clips (see the module docstring)."""
    from voice.asr import get_transcriber
    from voice.audio.files import load_audio
    from voice.config import load_config
    from voice.textnorm import corpus_wer

    clips, refs = _clips(Path(args.clips))
    cfg = load_config(environ={})
    cfg.asr.model, cfg.asr.device, cfg.asr.cpu_threads = args.model, args.device, args.threads
    tr = get_transcriber(cfg)
    tr.load()
    audio = {c: load_audio(c) for c in clips}
    tr.transcribe_sync(audio[clips[0]], live=True)  # warm-up, not timed
    windows = [30.0, *(float(w) for w in args.window.split(","))]
    out: dict[str, dict] = {}
    for mode, live, beam in (("live", True, None), ("file", False, args.beam)):
        times: dict[float, dict[str, list[float]]] = {w: {c: [] for c in clips} for w in windows}
        cpus: dict[float, list[float]] = {w: [] for w in windows}
        texts: dict[float, dict[str, str]] = {w: {} for w in windows}
        for i in range(args.repeats):
            for w in windows if i % 2 == 0 else list(reversed(windows)):
                cpu0 = _cpu_s()
                for c in clips:
                    t0 = time.perf_counter()
                    t = tr.transcribe_sync(audio[c], live=live, beam_size=beam, window_s=w)
                    times[w][c].append(time.perf_counter() - t0)
                    texts[w][c] = t.text
                cpus[w].append(_cpu_s() - cpu0)
        rows = {}
        for w in windows:
            total = sum(statistics.median(v) for v in times[w].values())
            rows[f"{w:g}"] = {
                "wer": round(corpus_wer([(refs[c], texts[w][c]) for c in clips]), 4),
                "time_s": round(total, 3),
                "cpu_s_median": round(statistics.median(cpus[w]), 3),
                "slowest_clip_s": round(max(statistics.median(v) for v in times[w].values()), 3),
            }
            if w != 30.0:
                rows[f"{w:g}"]["speedup_vs_30"] = round(rows["30"]["time_s"] / total, 2)
                rows[f"{w:g}"]["differs_from_30"] = [
                    {"clip": Path(c).name, "ref": refs[c], "wer_30": round(corpus_wer([(refs[c], texts[30.0][c])]), 3),
                     "wer": round(corpus_wer([(refs[c], texts[w][c])]), 3), "text_30": texts[30.0][c],
                     "text": texts[w][c]}
                    for c in clips if texts[w][c] != texts[30.0][c]
                ]
        out[mode] = {"beam": beam or cfg.asr.live_beam_size, "windows_s": rows}
    return {
        "benchmark": "asr_window",
        "clips": len(clips),
        "audio_s": round(sum(a.shape[0] for a in audio.values()) / 16000, 2),
        "model": args.model,
        "threads": args.threads,
        "device": args.device,
        "repeats": args.repeats,
        "cpu": _cpu_name(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default=os.environ.get("VOICE_TEST_SPEECH_DIR", str(DEFAULT_CLIPS)))
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", metavar="S[,S...]",
                   help="compare the stock 30 s encoder window with these windows (seconds) instead")
    p.add_argument("--child", choices=("direct", "voice"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.window:
        print(json.dumps(window_mode(args), indent=2))
        return
    if args.child:
        child(args)
        return

    import soundfile as sf

    clips, _ = _clips(Path(args.clips))
    audio_s = sum(sf.info(c).duration for c in clips)
    runs: dict[str, list[dict]] = {"direct": [], "voice": []}
    base = [sys.executable, __file__, "--clips", args.clips, "--model", args.model, "--beam", str(args.beam),
            "--threads", str(args.threads), "--device", args.device]
    for i in range(args.repeats):
        order = ("direct", "voice") if i % 2 == 0 else ("voice", "direct")
        for variant in order:
            out = subprocess.run([*base, "--child", variant], capture_output=True, text=True, check=True, cwd=ROOT)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def summary(rows: list[dict]) -> dict:
        walls = [r["wall_s"] for r in rows]
        med = statistics.median(walls)
        return {
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rows), 3),
            "wall_s_median": round(med, 3),
            "wall_s_min": round(min(walls), 3),
            "wall_s_all": [round(w, 3) for w in walls],
            "rtf": round(med / audio_s, 4),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rows), 1),
            "wer": round(rows[0]["wer"], 4),
        }

    direct, voice = summary(runs["direct"]), summary(runs["voice"])
    loads = [r["load_s"] for r in runs["direct"] if r["load_s"] is not None]
    direct["model_load_s_median"] = round(statistics.median(loads), 3)
    print(json.dumps({
        "benchmark": "asr",
        "clips": len(clips),
        "audio_s": round(audio_s, 2),
        "model": args.model,
        "beam": args.beam,
        "threads": args.threads,
        "device": args.device,
        "repeats": args.repeats,
        "cpu": _cpu_name(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "direct_faster_whisper": direct,
        "voice_transcribe": voice,
        "ratio_voice_to_direct": round(voice["wall_s_median"] / direct["wall_s_median"], 3),
        "ratio_of_minimums": round(voice["wall_s_min"] / direct["wall_s_min"], 3),
        "cpu_time_ratio": round(voice["cpu_s_median"] / direct["cpu_s_median"], 3),
        "goal_ratio": 1.05,
    }, indent=2))


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    return "unknown"


if __name__ == "__main__":
    main()
