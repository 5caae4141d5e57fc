"""Does Smart Turn v3.2 let the silence hang-over shrink without cutting people off?

On every clip of ``transcripts.tsv`` (default /work/shared/data/speech) this builds three kinds of
case, each run through the real endpointer (Silero VAD + state machine) with 1.5 s of silence
after it, and asks the model at each ``SilenceStarted`` (on the event's audio plus ``--delays`` ms
of the silence that followed):

- ``end``: the whole clip; its last silence is a real end of turn (label complete);
- ``cut``: the clip cut after a word in the middle of the sentence (faster-whisper word
  timestamps; a 20 ms fade, then silence): a speaker stopping mid-sentence (label incomplete);
- ``pause``: a silence inside a whole clip after which speech resumed (label incomplete), with
  its real length.

Prints JSON: accuracy / precision / recall of "complete" at each of ``--thresholds``, per-call latency
(one thread), and the endpointing trade-off: for each short hang-over H with Smart Turn (the
turn ends at max(H, delay + model time) when the model says complete, else at
vad.min_silence_ms) against min_silence_ms alone: how many ends it shortens and by how much, how
many mid-sentence stops it would end (a speaker pausing longer than H there is cut off), and how
many real pauses it cuts. Run: ``python scripts/bench_smart_turn.py [--asr whisper-base]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

TAIL_S = 1.5
KINDS = ("end", "end_trimmed", "cut", "pause")
FADE_S = 0.02


@dataclass
class Case:
    clip: str
    kind: str  # end | cut | pause
    #: The utterance audio the model sees at silence start (from the endpointer's event).
    audio: np.ndarray
    #: The stream after the silence start (to add the delay's audio).
    after: np.ndarray
    #: pause: how long the silence lasted before speech resumed (s); end/cut: None (open).
    pause_s: float | None = None
    text: str = ""


def stats(ms: list[float]) -> dict[str, float]:
    xs = sorted(ms)
    return {"n": len(xs), "p50": round(statistics.median(xs), 1),
            "p95": round(xs[int(0.95 * (len(xs) - 1))], 1), "max": round(xs[-1], 1)}


def silences(audio: np.ndarray, vad_cfg: Any, session: Any) -> list[tuple[Any, float | None]]:
    """Each SilenceStarted of ``audio`` + tail, with the silence's length when speech resumed."""
    from voice.audio.vad import Endpointer, SilenceStarted, SileroVad, SpeechResumed

    ep = Endpointer(vad_cfg, SileroVad(session))
    stream = np.concatenate([audio, np.zeros(int(TAIL_S * 16000), np.float32)])
    out: list[tuple[Any, float | None]] = []
    for ev in ep.process(stream) + ep.flush():
        if isinstance(ev, SilenceStarted):
            out.append((ev, None))
        elif isinstance(ev, SpeechResumed) and out:
            out[-1] = (out[-1][0], ev.t - out[-1][0].t)
    return out


def cut_points(words: list[Any], n_words: int) -> list[tuple[int, float]]:
    """Word indices in the middle of the sentence to cut after, and the cut time (s)."""
    if n_words < 4:
        return []
    picks = sorted({round(n_words * f) - 1 for f in ((1 / 3, 1 / 2, 2 / 3) if n_words >= 6 else (1 / 2,))})
    out = []
    for i in picks:
        if i <= 0 or i >= n_words - 1 or words[i].word.strip()[-1:] in ".?!":
            continue
        gap_end = words[i + 1].start
        out.append((i, min(words[i].end + 0.03, (words[i].end + gap_end) / 2)))
    return out


def cut_case(clip: str, kind: str, audio: np.ndarray, t: float, vad_cfg: Any, session: Any) -> Case | None:
    """``audio`` up to ``t`` (a 20 ms fade), then silence: the case at its last SilenceStarted."""
    n = int(t * 16000)
    part = audio[:n].copy()
    fade = min(int(FADE_S * 16000), n)
    part[n - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    sil = silences(part, vad_cfg, session)
    if not sil:
        return None
    ev, _ = sil[-1]
    stream = np.concatenate([part, np.zeros(int(TAIL_S * 16000), np.float32)])
    return Case(clip, kind, ev.audio, stream[int(ev.t * 16000):])


def build_cases(data: Path, asr: str, registry: Any, vad_cfg: Any, session: Any) -> tuple[list[Case], list[dict]]:
    from faster_whisper import WhisperModel

    from voice.audio.files import load_audio

    model = WhisperModel(str(registry.resolve(asr, kind="asr", progress=False).path), device="cpu",
                         compute_type="int8", cpu_threads=2)
    cases: list[Case] = []
    gaps: list[dict] = []
    with (data / "transcripts.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        audio = load_audio(str(data / row["file"]), 16000)
        segs, _ = model.transcribe(audio, language="en", word_timestamps=True, beam_size=5)
        words = [w for s in segs for w in (s.words or [])]
        for a, b in zip(words, words[1:], strict=False):
            if b.start - a.end > 0.2:
                gaps.append({"clip": row["file"], "after": a.word.strip(), "gap_ms": round((b.start - a.end) * 1000)})
        sil = silences(audio, vad_cfg, session)
        stream = np.concatenate([audio, np.zeros(int(TAIL_S * 16000), np.float32)])
        for k, (ev, pause) in enumerate(sil):
            kind = "end" if k == len(sil) - 1 else "pause"
            cases.append(Case(row["file"], kind, ev.audio, stream[int(ev.t * 16000):], pause, row["transcript"]))
        cuts = [(i, t, "cut") for i, t in cut_points(words, len(words))]
        if words:  # the whole sentence processed like the cuts: fade after its last word, silence
            cuts.append((len(words) - 1, min(words[-1].end + 0.03, audio.shape[0] / 16000), "end_trimmed"))
        for i, t, kind in cuts:
            case = cut_case(row["file"], kind, audio, t, vad_cfg, session)
            if case is not None:
                case.text = "".join(w.word for w in words[: i + 1]).strip() + (" ..." if kind == "cut" else "")
                cases.append(case)
    return cases, gaps


def check_features(turn: Any, data: Path) -> dict[str, Any]:
    """Largest difference between our features and transformers' (what the model was trained with)."""
    try:
        from transformers import WhisperFeatureExtractor
    except ImportError:
        return {"error": "transformers is not installed (pip install transformers to compare)"}
    from voice.audio.files import load_audio
    from voice.audio.smart_turn import WINDOW_SAMPLES

    ref = WhisperFeatureExtractor(chunk_length=8)
    out: dict[str, Any] = {}
    for wav in sorted(data.glob("*.wav")):
        audio = load_audio(str(wav), 16000)
        for cut in (audio.shape[0], audio.shape[0] // 2):
            x = audio[:cut][-WINDOW_SAMPLES:]
            x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.shape[0], np.float32), x])
            theirs = ref(x, sampling_rate=16000, padding="max_length", max_length=WINDOW_SAMPLES, truncation=True,
                         do_normalize=True, return_tensors="np").input_features
            ours = turn.features(audio[:cut])
            out[f"{wav.name}[:{cut}]"] = float(np.abs(ours - theirs).max())
    return {"max_abs_diff": max(out.values()), "per_input": out}


def main() -> int:
    from voice.audio.smart_turn import load_smart_turn
    from voice.audio.vad import load_silero_session
    from voice.config import load_config
    from voice.models import registry_for

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"))
    ap.add_argument("--asr", default="whisper-base", help="model for word timestamps (registry name)")
    ap.add_argument("--thresholds", default="0.5,0.7,0.9", help="probabilities of complete to try")
    ap.add_argument("--delays", default="0,100,200", help="ms of silence the model also hears")
    ap.add_argument("--hangovers", default="200,300,400", help="short hang-overs (ms) to simulate")
    ap.add_argument("--cases", action="store_true", help="list every case with its probabilities")
    ap.add_argument("--check-features", action="store_true",
                    help="only compare the features with transformers' WhisperFeatureExtractor (if installed)")
    args = ap.parse_args()
    cfg = load_config(environ={})
    registry = registry_for(cfg)
    # Long hang-over: every pause inside a clip shows as SilenceStarted ... SpeechResumed.
    vad_cfg = replace(cfg.vad, min_silence_ms=int(TAIL_S * 1000) - 100)
    turn = load_smart_turn(registry)
    if args.check_features:
        print(json.dumps(check_features(turn, Path(args.data)), indent=1))
        return 0
    cases, gaps = build_cases(Path(args.data), args.asr, registry, vad_cfg, load_silero_session())
    delays = [int(d) for d in args.delays.split(",")]
    hangovers = [int(h) for h in args.hangovers.split(",")]
    base_ms = cfg.vad.min_silence_ms

    lat: list[float] = []
    probs: dict[int, list[float]] = {d: [] for d in delays}
    turn.predict(cases[0].audio)  # load
    for c in cases:
        for d in delays:
            x = np.concatenate([c.audio, c.after[: d * 16]])
            t0 = time.perf_counter()
            probs[d].append(turn.predict(x))
            lat.append((time.perf_counter() - t0) * 1000)
    lat_s = stats(lat)
    thresholds = [float(x) for x in args.thresholds.split(",")]
    out: dict[str, Any] = {
        "clips": len({c.clip for c in cases}),
        "cases": {k: sum(c.kind == k for c in cases) for k in KINDS},
        "latency_ms_threads1": lat_s,
        "word_gaps_over_200ms": gaps,
        "baseline_min_silence_ms": base_ms,
        "by_delay_and_threshold": {},
    }
    for d, thr in ((d, t) for d in delays for t in thresholds):
        ps = probs[d]
        said = [p >= thr for p in ps]
        # end (complete) against cut and pause (incomplete); end_trimmed is reported beside them
        pairs = [(s, c.kind == "end") for s, c in zip(said, cases, strict=True) if c.kind != "end_trimmed"]
        tp = sum(s and lab for s, lab in pairs)
        fp = sum(s and not lab for s, lab in pairs)
        fn = sum(not s and lab for s, lab in pairs)
        row: dict[str, Any] = {
            "accuracy": round(sum(s == lab for s, lab in pairs) / len(pairs), 3),
            "precision_complete": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall_complete": round(tp / (tp + fn), 3) if tp + fn else None,
            "p_median": {k: round(statistics.median([p for p, c in zip(ps, cases, strict=True) if c.kind == k]), 3)
                         for k in KINDS if any(c.kind == k for c in cases)},
            "said_complete": {k: f"{sum(s for s, c in zip(said, cases, strict=True) if c.kind == k)}"
                                 f"/{sum(c.kind == k for c in cases)}" for k in KINDS},
            "hangover": {},
        }
        for h in hangovers:
            ready = max(h, d + lat_s["p50"])  # the turn can end only once the model has answered
            ends = [(s, c) for s, c in zip(said, cases, strict=True) if c.kind == "end"]
            saved = [base_ms - ready if s else 0.0 for s, _ in ends]
            pauses = [(s, c) for s, c in zip(said, cases, strict=True) if c.kind == "pause"]
            row["hangover"][str(h)] = {
                "turn_ends_at_ms_when_complete": round(ready),
                "ends_shortened": f"{sum(s for s, _ in ends)}/{len(ends)}",
                "mean_saved_ms_per_end": round(statistics.fmean(saved)) if saved else 0,
                "mid_sentence_stops_ended": f"{sum(s for s, c in zip(said, cases, strict=True) if c.kind == 'cut')}"
                                            f"/{sum(c.kind == 'cut' for c in cases)}",
                "real_pauses_cut_smart_turn": sum(1 for s, c in pauses if c.pause_s is not None
                                                  and (c.pause_s * 1000 >= base_ms or (s and c.pause_s * 1000 >= ready))),
                "real_pauses_cut_baseline": sum(1 for _, c in pauses if c.pause_s is not None
                                                and c.pause_s * 1000 >= base_ms),
                "real_pauses": len(pauses),
            }
        out["by_delay_and_threshold"][f"delay {d} ms, threshold {thr}"] = row
    if args.cases:
        out["case_list"] = [
            {"clip": c.clip, "kind": c.kind, "text": c.text if c.kind != "pause" else "",
             "pause_ms": None if c.pause_s is None else round(c.pause_s * 1000),
             "p": {str(d): round(probs[d][i], 3) for d in delays}}
            for i, c in enumerate(cases)
        ]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
