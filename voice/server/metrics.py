"""Server counters and latency histograms, rendered in Prometheus text format (no dependency)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

#: Histogram bucket upper bounds in seconds.
BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.n += 1
        self.total += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1


class ServerMetrics:
    """What ``GET /metrics`` reports. Mutated only from the event loop thread."""

    def __init__(self) -> None:
        self.sessions_active = 0
        self.sessions_total = 0
        self.sessions_rejected: Counter[str] = Counter()
        #: Ended sessions by who or what ended them: client, idle, keepalive, slow_client,
        #: send_queue_full, error_rate, write_buffer, internal_error.
        self.sessions_closed: Counter[str] = Counter()
        self.turns: Counter[str] = Counter()  # by status: completed, cancelled, failed
        self.errors: Counter[str] = Counter()  # by error code
        self.messages_in = 0
        self.audio_out_seconds = 0.0
        self.latency: dict[str, Histogram] = {}
        #: OpenAI audio API requests by (route, HTTP status; 0 = no response: the client left).
        self.http_requests: Counter[tuple[str, int]] = Counter()
        self.http_active = 0

    def observe(self, name: str, seconds: float | None) -> None:
        if seconds is not None:
            self.latency.setdefault(name, Histogram()).observe(seconds)

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP voice_{name} {help_text}")
            lines.append(f"# TYPE voice_{name} {kind}")

        metric("sessions_active", "gauge", "Open realtime sessions.")
        lines.append(f"voice_sessions_active {self.sessions_active}")
        metric("sessions_total", "counter", "Realtime sessions accepted since start.")
        lines.append(f"voice_sessions_total {self.sessions_total}")
        metric("sessions_rejected_total", "counter", "Connections refused, by reason.")
        for reason, n in sorted(self.sessions_rejected.items()):
            lines.append(f'voice_sessions_rejected_total{{reason="{reason}"}} {n}')
        metric("sessions_closed_total", "counter", "Realtime sessions ended, by reason (client = the client left).")
        for reason, n in sorted(self.sessions_closed.items()):
            lines.append(f'voice_sessions_closed_total{{reason="{reason}"}} {n}')
        metric("turns_total", "counter", "Assistant responses, by final status.")
        for status, n in sorted(self.turns.items()):
            lines.append(f'voice_turns_total{{status="{status}"}} {n}')
        metric("errors_total", "counter", "Error events sent to clients, by code.")
        for code, n in sorted(self.errors.items()):
            lines.append(f'voice_errors_total{{code="{code}"}} {n}')
        metric("messages_received_total", "counter", "WebSocket messages received.")
        lines.append(f"voice_messages_received_total {self.messages_in}")
        metric("audio_out_seconds_total", "counter", "Seconds of assistant audio sent.")
        lines.append(f"voice_audio_out_seconds_total {self.audio_out_seconds:.3f}")
        metric("http_requests_active", "gauge", "OpenAI audio API requests under way.")
        lines.append(f"voice_http_requests_active {self.http_active}")
        metric("http_requests_total", "counter", "OpenAI audio API requests, by route and status (0 = none sent).")
        for (path, sent), n in sorted(self.http_requests.items()):
            lines.append(f'voice_http_requests_total{{route="{path}",status="{sent}"}} {n}')
        metric("turn_latency_seconds", "histogram", "Per-turn latency by stage; from_silence runs from the last voiced frame of the user to the first answer sound.")
        for stage, h in sorted(self.latency.items()):
            for bound, count in zip(BUCKETS, h.counts, strict=True):
                lines.append(f'voice_turn_latency_seconds_bucket{{stage="{stage}",le="{bound}"}} {count}')
            lines.append(f'voice_turn_latency_seconds_bucket{{stage="{stage}",le="+Inf"}} {h.n}')
            lines.append(f'voice_turn_latency_seconds_sum{{stage="{stage}"}} {h.total:.6f}')
            lines.append(f'voice_turn_latency_seconds_count{{stage="{stage}"}} {h.n}')
        return "\n".join(lines) + "\n"
