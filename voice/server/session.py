"""One realtime WebSocket session: the thin asyncio shell around :class:`RealtimeProtocol` and a
:class:`~voice.pipeline.conversation.Conversation` that runs unchanged (socket in, socket out).

Tasks per session: this reader (the handler's own task), one writer draining the
:class:`Outbox`, one idle watchdog; the conversation's own tasks. All end in :meth:`run`'s
``finally`` (cancelled with a timeout), whatever way the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from voice.audio.pcm import SAMPLE_RATE, pcm_to_float
from voice.config import Config
from voice.pipeline import events as pev
from voice.server import events as ev
from voice.server import protocol as p
from voice.server.connection import VoiceConnection
from voice.server.metrics import ServerMetrics
from voice.server.outbox import Outbox, OutboxFull, SocketSink, TokenBucket
from voice.server.resources import ServerResources
from voice.server.settings import SessionSettings

log = logging.getLogger(__name__)

REASONS = {"barge_in": "turn_detected", "new_turn": "turn_detected", "client_cancelled": "client_cancelled"}


@dataclass
class _Reply:
    """The response in progress, as the session maps it onto the conversation's turn."""

    turn_id: int
    #: (status, reason, error) of response.done; set when the turn is cancelled or fails.
    end: tuple[str, str | None, str | None] = ("completed", None, None)
    #: The chain's passages for this answer (complete once the LLM stream has ended).
    sources: list[Any] = field(default_factory=list)


@dataclass
class _State:
    """Everything one session tracks between messages (the protocol's own state aside)."""

    #: 16 kHz samples received (the clock of speech_started / speech_stopped).
    in_samples: int = 0
    last_rx: float = field(default_factory=time.monotonic)
    #: A user text item waiting for response.create.
    pending_text: str | None = None
    #: The id a client's response.create asked for, given to the next response.
    next_response: str | None = None
    reply: _Reply | None = None
    #: The last assistant audio item and its turn (what conversation.item.truncate may cut).
    spoken_item: tuple[str, int] | None = None
    resampler: Any = None
    resampler_rate: int = SAMPLE_RATE


class RealtimeSession:
    def __init__(self, ws: VoiceConnection, resources: ServerResources, cfg: Config, metrics: ServerMetrics,
                 *, binary: bool = False) -> None:
        self.ws = ws
        self.resources = resources
        self.metrics = metrics
        self.scfg = cfg.server
        # the browser (or client) cancels echo; the microphone stays open while the assistant talks
        self.cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, headphones=True,
                                                                         turn_detection="vad"))
        voices = resources.voices()
        settings = SessionSettings(voice=voices[0], binary_audio=binary,
                                   turn_detection=_turn_from_cfg(self.cfg))
        self.proto = p.RealtimeProtocol(settings=settings, voices=voices,
                                        max_message_bytes=cfg.server.max_message_bytes,
                                        max_instructions=cfg.llm.max_instructions_chars(),
                                        id_prefix=secrets.token_hex(4) + "_")
        self.outbox = Outbox(max_audio=64, max_events=self.scfg.send_queue_events, max_bytes=self.scfg.send_queue_bytes)
        self.error_budget = TokenBucket(self.scfg.error_rate_per_s, self.scfg.error_burst)
        self.sink = SocketSink(self.outbox, settings.output_rate, self._encode_audio)
        self.conv: Any = None
        self.chain: Any = None
        self.state = _State()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        from voice.pipeline.conversation import Conversation

        self.chain = await self.resources.make_chain(self.cfg)
        self.conv = Conversation(
            self.cfg, transcriber=self.resources.transcriber, chain=self.chain, tts=self.resources.tts,
            sink=self.sink, endpointer=self.resources.make_vad(self.cfg.vad),
        )
        self.conv.add_listener(self._on_pipeline_event)
        self._send_all(self.proto.start())
        writer = asyncio.create_task(self._writer(), name="voice-ws-writer")
        watchdog = asyncio.create_task(self._watchdog(), name="voice-ws-idle")
        try:
            async for message in self.ws:
                self.state.last_rx = time.monotonic()
                self.metrics.messages_in += 1
                await self._on_message(message)
                if self.ws.state is not State.OPEN:  # closing: what the client sends now is moot
                    break
        except ConnectionClosed:
            pass
        finally:
            self.outbox.close()
            for t in (writer, watchdog):
                t.cancel()
            await asyncio.wait([writer, watchdog], timeout=2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conv.aclose(), timeout=5.0)
            aclose = getattr(self.chain, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), timeout=2.0)

    async def _writer(self) -> None:
        while (item := await self.outbox.get()) is not None:
            try:
                await self.ws.send(item.payload)
            except ConnectionClosed:
                return
            if item.samples:
                self.sink.on_sent(item.samples)
                self.metrics.audio_out_seconds += item.samples / self.sink.sample_rate

    async def _watchdog(self) -> None:
        limit = self.scfg.idle_timeout_s
        while True:
            await asyncio.sleep(min(limit, 5.0) / 2)
            busy = self.conv is not None and self.conv.busy
            if not busy and time.monotonic() - self.state.last_rx > limit:
                self.ws.close_now(1001, "idle timeout", "idle")
                return

    # ------------------------------------------------------------------ client -> pipeline

    def _send_all(self, items: list[Any]) -> None:
        for item in items:
            if self.outbox.closed:
                return
            if isinstance(item, ev.ErrorEvent):
                self.metrics.errors[str(item.error.get("code"))] += 1
                if item.error.get("type") == "invalid_request_error" and not self.error_budget.take():
                    self._close(1008, "too many invalid messages", "error_rate")
                    return
            try:
                self.outbox.put_nowait(_encode(item))
            except OutboxFull as err:
                log.info("closing a session: %s", err)
                self._close(1008, "send queue full: the client is not reading", "send_queue_full")
                return

    def _close(self, code: int, reason: str, why: str) -> None:
        """End the session now: nothing more is queued, the connection closes without waiting."""
        self.outbox.close()
        self.ws.close_now(code, reason, why)

    async def _on_message(self, message: str | bytes) -> None:
        out = self.proto.receive(message)
        for item in out:
            if isinstance(item, p.Command):
                try:
                    await self._command(item)
                except Exception as err:  # the session goes on; the client hears why
                    log.warning("command %s failed: %s", type(item).__name__, err, exc_info=True)
                    self._send_all([self.proto.error(f"server error: {err}", code="server_error", kind="server_error")])
            else:
                self._send_all([item])

    async def _command(self, cmd: p.Command) -> None:
        conv, st = self.conv, self.state
        if isinstance(cmd, p.AppendAudio):
            audio = pcm_to_float(cmd.pcm, 2, 1)
            if cmd.sample_rate != SAMPLE_RATE:
                if st.resampler is None or st.resampler_rate != cmd.sample_rate:
                    from voice.audio.resample import StreamResampler

                    st.resampler = StreamResampler(cmd.sample_rate, SAMPLE_RATE)
                    st.resampler_rate = cmd.sample_rate
                audio = st.resampler.process(audio)
            st.in_samples += audio.shape[0]
            conv.process_frame(audio)
        elif isinstance(cmd, p.ClearAudio):
            conv.clear_input()
        elif isinstance(cmd, p.UserText):
            st.pending_text = cmd.text
        elif isinstance(cmd, p.CreateResponse):
            st.next_response = cmd.response_id
            if st.pending_text is not None:
                text, st.pending_text = st.pending_text, None
                await conv.submit_text(text)
            elif conv.settings.manual:
                tid = await conv.commit_input()
                if tid is None:
                    self._empty_response()
        elif isinstance(cmd, p.CancelResponse):
            conv.interrupt("client_cancelled")
        elif isinstance(cmd, p.TruncateAssistant):
            if st.spoken_item is not None and st.spoken_item[0] == cmd.item_id:
                self.chain.commit_assistant(st.spoken_item[1], cmd.spoken_text)
        elif isinstance(cmd, p.UpdateSettings):
            await self._apply_settings(cmd.settings)

    async def _apply_settings(self, s: SessionSettings) -> None:
        """session.update: the conversation's live settings change through its methods."""
        conv = self.conv
        td = s.turn_detection
        if td is None:
            conv.set_turn_detection(None)
        else:
            cur = conv.settings.vad
            vad = dataclasses.replace(cur, threshold=td.threshold, min_silence_ms=td.silence_duration_ms,
                                      pre_roll_ms=td.prefix_padding_ms)
            if vad.neg_threshold is not None and vad.neg_threshold >= vad.threshold:
                vad = dataclasses.replace(vad, neg_threshold=None)
            changed = (cur.threshold, cur.min_silence_ms, cur.pre_roll_ms) != (
                vad.threshold, vad.min_silence_ms, vad.pre_roll_ms)
            endpointer = self.resources.make_vad(vad) if changed or conv.settings.manual else None
            conv.set_turn_detection(vad, barge_in=td.interrupt_response, endpointer=endpointer)
        conv.set_voice(s.voice if s.voice in self.resources.voices() and s.voice != "default" else None)
        self.sink.sample_rate = s.output_rate
        if s.instructions != (self.cfg.llm.system_prompt or "") and s.instructions:
            self.cfg = dataclasses.replace(self.cfg, llm=dataclasses.replace(self.cfg.llm, system_prompt=s.instructions))
            old, self.chain = self.chain, await self.resources.make_chain(self.cfg)
            conv.set_chain(self.chain)
            aclose = getattr(old, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _empty_response(self) -> None:
        rid, self.state.next_response = self.state.next_response, None
        self._send_all(self.proto.on_response_started(rid))
        self._send_all(self.proto.on_response_done("completed"))

    def _encode_audio(self, pcm: bytes) -> list[str | bytes]:
        return [_encode(item) for item in self.proto.on_audio(pcm)]

    # ------------------------------------------------------------------ pipeline -> client

    def _on_pipeline_event(self, e: pev.Event) -> None:
        proto, st = self.proto, self.state
        tid = e.turn_id
        ms = int(st.in_samples * 1000 / SAMPLE_RATE)
        reply = st.reply if st.reply is not None and st.reply.turn_id == tid else None
        if isinstance(e, pev.UserSpeechStarted):
            self._send_all(proto.on_speech_started(max(0, ms - self.conv.settings.vad.min_speech_ms)))
        elif isinstance(e, pev.UserSpeechStopped):
            self._send_all(proto.on_speech_stopped(ms))
        elif isinstance(e, pev.TranscriptFinal):
            if e.source == "speech":
                self._send_all(proto.on_transcript(e.text))
            if e.text and self.conv is not None and self.conv.turns.last == tid:
                rid, st.next_response = st.next_response, None
                st.reply = _Reply(turn_id=tid)
                self._send_all(proto.on_response_started(rid))
            elif not e.text and st.next_response is not None:
                self._empty_response()
        elif reply is None:
            return
        elif isinstance(e, pev.LlmDelta):
            self._send_all(proto.on_text(e.text))
        elif isinstance(e, pev.LlmDone):
            # the chain's stream has ended, so its sources are complete (tool results included)
            reply.sources = list(getattr(self.chain, "last_sources", None) or [])
        elif isinstance(e, pev.TurnCancelled):
            reply.end = ("cancelled", REASONS.get(e.reason, "client_cancelled"), None)
        elif isinstance(e, pev.Error):
            reply.end = ("failed", None, f"{e.stage}: {e.message}")
            self._send_all([proto.error(f"{e.stage} failed: {e.message}", code=f"{e.stage}_failed", kind="server_error")])
        elif isinstance(e, pev.TurnMetrics):
            self._reply_done(reply, e)

    def _reply_done(self, reply: _Reply, e: pev.TurnMetrics) -> None:
        proto = self.proto
        status, reason, error = reply.end
        rid = proto.response_id
        done = proto.on_response_done(status, reason, error, played=self.conv.played(reply.turn_id),
                                      rate=self.sink.sample_rate)
        for d in done:
            if isinstance(d, ev.ResponseOutputAudioDone):
                self.state.spoken_item = (d.item_id, reply.turn_id)
        self._send_all(done)
        self.state.reply = None
        self.metrics.turns[status] += 1
        m: dict[str, Any] = {}
        for k, v in e.as_dict().items():
            if k.endswith("_s"):
                m[k[:-2] + "_ms"] = None if v is None else round(float(v) * 1000, 1)
            else:
                m[k] = v
        for stage in ("from_silence_s", "voice_to_voice_s", "transcript_s", "first_token_s", "first_audio_s", "total_s"):
            self.metrics.observe(stage[:-2], getattr(e, stage))
        if rid is not None:
            self._send_all(proto.on_metrics(rid, m, reply.sources))


def _encode(item: ev.ServerEvent | bytes) -> str | bytes:
    """What goes on the wire: binary audio as is, events as compact JSON."""
    if isinstance(item, bytes):
        return item
    return json.dumps(item.to_dict(), separators=(",", ":"))


def _turn_from_cfg(cfg: Config) -> Any:
    from voice.server.settings import TurnDetection

    return TurnDetection(threshold=cfg.vad.threshold, prefix_padding_ms=cfg.vad.pre_roll_ms,
                         silence_duration_ms=cfg.vad.min_silence_ms)
