"""Per-turn latency: marks taken as a turn runs, turned into a :class:`TurnMetrics` event, and a
summary (p50/p95) over a session. Sans-I/O: the caller passes times (``time.monotonic()``)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from voice.pipeline.events import TurnMetrics

log = logging.getLogger(__name__)

FIELDS = (
    "from_silence_s",
    "transcript_s",
    "first_token_s",
    "first_audio_s",
    "voice_to_voice_s",
    "total_s",
    "asr_s",
    "llm_first_token_s",
    "tts_first_chunk_s",
    "llm_prompt_s",
    "llm_prompt_tokens",
    "llm_cached_tokens",
)


@dataclass
class TurnTimer:
    """Marks for one turn. ``end`` is when the user's turn ended (the VAD's decision after its
    hang-over, or a typed line submitted); ``silence`` is when the user's last voiced frame was
    heard (:meth:`voice.pipeline.hearing.Hearing.wall_time` of the endpointer's speech end)."""

    turn_id: int
    end: float
    source: Literal["speech", "text"] = "speech"
    silence: float | None = None
    transcript: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    first_played: float | None = None
    done: float | None = None
    asr_s: float | None = None
    llm_start: float | None = None
    tts_start: float | None = None
    tts_first_chunk_s: float | None = None
    #: llama.cpp's timings of the answer (the chain's ``last_timings``).
    llm_timings: dict[str, float] | None = None
    cancelled: bool = False
    #: The answer was started during the hang-over (before ``end``) and used.
    preemptive: bool = False

    def adopt(self, user: TurnTimer) -> None:
        """Take the user side of the turn (end, silence, transcript) from ``user``: an answer
        prepared ahead kept its own marks, and is now this turn's (:attr:`preemptive`)."""
        self.turn_id, self.end, self.source = user.turn_id, user.end, user.source
        self.silence, self.transcript, self.asr_s = user.silence, user.transcript, user.asr_s
        self.preemptive = True

    def mark(self, name: str, t: float) -> None:
        """Set a mark once (the first time counts)."""
        if getattr(self, name) is None:
            setattr(self, name, t)

    def _rel(self, t: float | None) -> float | None:
        return None if t is None else max(0.0, t - self.end)

    def to_event(self, t: float | None = None) -> TurnMetrics:
        llm_ft = None
        if self.first_token is not None and self.llm_start is not None:
            llm_ft = self.first_token - self.llm_start
        from_silence = None
        if self.first_played is not None and self.silence is not None:
            from_silence = self.first_played - self.silence
        kw: dict[str, float] = {} if t is None else {"t": t}
        lt = self.llm_timings or {}
        prompt_n, cache_n, prompt_ms = lt.get("prompt_n"), lt.get("cache_n"), lt.get("prompt_ms")
        return TurnMetrics(
            turn_id=self.turn_id,
            source=self.source,
            transcript_s=self._rel(self.transcript),
            first_token_s=self._rel(self.first_token),
            first_audio_s=self._rel(self.first_audio),
            voice_to_voice_s=self._rel(self.first_played),
            total_s=self._rel(self.done),
            from_silence_s=from_silence,
            asr_s=self.asr_s,
            llm_first_token_s=llm_ft,
            tts_first_chunk_s=self.tts_first_chunk_s,
            llm_prompt_tokens=None if prompt_n is None else int(prompt_n),
            llm_cached_tokens=None if cache_n is None else int(cache_n),
            llm_prompt_s=None if prompt_ms is None else prompt_ms / 1000.0,
            cancelled=self.cancelled,
            preemptive=self.preemptive,
            **kw,
        )


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class MetricsSummary:
    """Collects :class:`TurnMetrics` and reports p50/p95 per field."""

    turns: list[TurnMetrics] = field(default_factory=list)

    def add(self, m: TurnMetrics) -> None:
        self.turns.append(m)
        log.info(
            "turn %d metrics: %s",
            m.turn_id,
            " ".join(f"{k}={v:.3f}" for k, v in m.as_dict().items() if isinstance(v, float)),
        )

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"turns": len(self.turns)}
        done = [m for m in self.turns if not m.cancelled]
        out["cancelled"] = len(self.turns) - len(done)
        out["preemptive"] = sum(1 for m in done if m.preemptive)
        for name in FIELDS:
            vals = [float(v) for m in done
                    if isinstance(v := getattr(m, name), int | float) and not isinstance(v, bool)]
            if vals:
                out[name] = {"p50": round(percentile(vals, 50) or 0.0, 3),
                             "p95": round(percentile(vals, 95) or 0.0, 3), "n": len(vals)}
        return out

    def format(self) -> str:
        s = self.summary()
        lines = [f"{s['turns']} turns ({s['cancelled']} cancelled, {s['preemptive']} answered ahead)"]
        labels = {
            "from_silence_s": "from silence (last word -> first sample)",
            "transcript_s": "end of speech -> transcript",
            "first_token_s": "end of speech -> first LLM token",
            "first_audio_s": "end of speech -> first TTS audio",
            "voice_to_voice_s": "VAD decision -> first sample played",
            "total_s": "end of speech -> answer played",
        }
        for key, label in labels.items():
            v = s.get(key)
            if isinstance(v, dict):
                lines.append(f"  {label:40} p50 {v['p50']:.3f} s   p95 {v['p95']:.3f} s   (n={v['n']})")
        return "\n".join(lines)
