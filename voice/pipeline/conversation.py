"""The conversation orchestrator: audio frames in, spoken answers out, events for everyone.

Data flow (one way)::

    frames -> [echo canceller] -> Endpointer (VAD) -> Transcriber (live) -> Chain.astream
           -> SpeechChunker -> TTSEngine.stream -> AudioSink

Control flows the other way: a new utterance while the assistant answers (barge-in), a typed
line, ``interrupt()`` or ``response.cancel`` clear the sink first, then cancel that turn's LLM
and TTS, and commit to memory only the text that was actually played.

Every turn has an id (:class:`~voice.pipeline.turns.TurnCounter`); the LLM and TTS stages check
it before each hand-over, so work for a cancelled turn is dropped wherever it is. The LLM stage
and the TTS stage are joined by a bounded queue; the sink's own buffer bounds the audio. Model
work runs in threads inside the engines; nothing here blocks the loop.

The class knows nothing of devices or sockets: ``run(frames)`` takes any async iterator of
float32 16 kHz mono frames, ``process_frame`` takes one frame pushed from elsewhere, and output
goes to any :class:`~voice.pipeline.io.AudioSink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.pipeline import events as ev
from voice.pipeline.io import AudioSink
from voice.pipeline.metrics import MetricsSummary, TurnTimer
from voice.pipeline.turns import EarlyTranscript, PlaybackLedger, TurnCounter

if TYPE_CHECKING:
    from voice.asr.base import Transcriber
    from voice.config import Config
    from voice.llm.chain import Chain
    from voice.tts.base import CancelToken, TTSEngine

log = logging.getLogger(__name__)

#: Playback is taken as finished when this close to the end (resampling rounding in sinks).
END_TOLERANCE_S = 0.02
#: Give up waiting for a sink whose played counter stops moving.
STALL_S = 2.0


class VadEndpointer(Protocol):
    """What the conversation needs of an endpointer (voice.audio.vad.Endpointer is one)."""

    def process(self, chunk: np.ndarray) -> list[Any]: ...

    def flush(self) -> list[Any]: ...

    def reset(self) -> None: ...

    def set_min_speech_ms(self, ms: float) -> None: ...


@dataclass
class _Response:
    turn_id: int
    text: str
    timer: TurnTimer
    ledger: PlaybackLedger
    token: CancelToken
    task: asyncio.Task[None] | None = None
    parts: list[str] = field(default_factory=list)
    llm_started: bool = False
    stages_done: bool = False


class Conversation:
    """One spoken (or typed) conversation. Reusable by any front end: terminal, file, socket.

    ``transcriber`` follows :class:`voice.asr.base.Transcriber`, ``chain`` has ``astream`` and
    ``commit_assistant``, ``tts`` is a :class:`voice.tts.base.TTSEngine` (None = text only),
    ``sink`` an :class:`AudioSink` (None = text only). ``endpointer`` defaults to a new
    :class:`voice.audio.vad.Endpointer`; ``echo`` is an optional echo canceller with
    ``far(audio_16k)`` / ``near(frame) -> frame`` / ``reset()`` (see :mod:`voice.pipeline.echo`).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        transcriber: Transcriber | None,
        chain: Chain,
        tts: TTSEngine | None = None,
        sink: AudioSink | None = None,
        endpointer: VadEndpointer | None = None,
        voice: str | None = None,
        echo: Any | None = None,
    ) -> None:
        self.cfg = cfg
        self.pcfg = cfg.pipeline
        self.transcriber = transcriber
        self.chain = chain
        self.tts = tts if cfg.pipeline.speak else None
        self.sink = sink if cfg.pipeline.speak else None
        self._endpointer = endpointer
        self.voice = voice
        self.echo = echo
        self.turns = TurnCounter()
        self.metrics = MetricsSummary()
        self.status: ev.Status = "listening"
        self.muted = False
        self.manual = cfg.pipeline.turn_detection != "vad"
        #: The input can hear the output (a microphone near a speaker): gate it while speaking.
        self.echo_path = True
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._response: _Response | None = None
        self._user_turn: int | None = None
        self._user_timer: TurnTimer | None = None
        self._early = EarlyTranscript()
        self._early_task: asyncio.Task[Any] | None = None
        self._pending: set[asyncio.Task[Any]] = set()  # user turns being transcribed
        self._bg: set[asyncio.Task[Any]] = set()
        self._commit_task: asyncio.Task[Any] | None = None
        self._done: dict[int, asyncio.Future[None]] = {}
        self._out_pos = 0
        self._echo_pos = 0
        self._audible_until = 0.0
        self._echo_gate: Any = None
        self._gated = False
        self._manual_buf: list[np.ndarray] = []
        self._manual_samples = 0
        self._closed = False
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ events

    def add_listener(self, fn: Callable[[ev.Event], None]) -> None:
        """Call ``fn(event)`` synchronously for every event (keep it quick)."""
        self._listeners.append(fn)

    def _emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            self.metrics.add(event)
        if log.isEnabledFor(logging.DEBUG) and not isinstance(event, (ev.AudioOut, ev.LlmDelta)):
            log.debug("event %r", event)
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # a broken listener must not stop the conversation
                log.exception("event listener failed")

    def _set_status(self, status: ev.Status, turn_id: int) -> None:
        if status != self.status:
            self.status = status
            self._emit(ev.StatusChanged(turn_id=turn_id, status=status))

    # ------------------------------------------------------------------ properties

    @property
    def endpointer(self) -> VadEndpointer:
        if self._endpointer is None:
            from voice.audio.vad import Endpointer

            self._endpointer = Endpointer(self.cfg.vad)
        return self._endpointer

    @property
    def busy(self) -> bool:
        """A user turn is being transcribed or an answer is being generated or played."""
        return bool(self._pending) or self._response is not None

    @property
    def speaking(self) -> bool:
        """Answer audio is queued in the sink and not played yet."""
        return self.sink is not None and self.sink.played_samples < self._out_pos

    def _turn_future(self, turn_id: int) -> asyncio.Future[None]:
        fut = self._done.get(turn_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._done[turn_id] = fut
            for old in [k for k, f in self._done.items() if f.done()][:-50]:
                del self._done[old]
        return fut

    def _end_turn(self, turn_id: int) -> None:
        fut = self._done.get(turn_id)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait_turn(self, turn_id: int) -> None:
        """Until turn ``turn_id`` is answered, cancelled or dropped."""
        await asyncio.shield(self._turn_future(turn_id))

    async def wait_idle(self) -> None:
        """Until no turn is being transcribed, answered or played."""
        while self.busy:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self, *_: object) -> None:
        self._changed.set()

    # ------------------------------------------------------------------ input

    def set_muted(self, muted: bool) -> None:
        """Ignore the microphone (an utterance in progress is dropped)."""
        self.muted = muted
        if muted:
            self._reset_input()

    def _assistant_audible(self) -> bool:
        """The assistant's voice may be in the microphone now: it is playing, or stopped less
        than echo_tail_ms ago (what the device and the room still hold, or a gap between two
        sentences)."""
        now = time.monotonic()
        if self.speaking:
            self._audible_until = max(self._audible_until, now + self.pcfg.echo_tail_ms / 1000.0)
            return True
        return now < self._audible_until

    def _mic_open(self) -> bool:
        if self.muted or self._closed:
            return False
        if self._response is not None and not self.pcfg.barge_in:
            return False
        if self.pcfg.headphones or self.echo is not None or not self.echo_path:
            return True
        # No echo protection: the speaker's sound would come back as "user speech".
        return not self._assistant_audible()

    def _reset_input(self) -> None:
        if self._endpointer is not None:
            self._endpointer.reset()
        self._early.discard()
        if self._user_turn is not None and not any(True for _ in self._pending):
            self._end_turn(self._user_turn)
        self._user_turn = None
        self._user_timer = None

    def process_frame(self, frame: np.ndarray) -> None:
        """Feed one chunk of float32 16 kHz mono audio (any length). Never blocks."""
        audio = np.asarray(frame, dtype=np.float32).reshape(-1)
        if self.echo is not None:
            if self.sink is not None:
                played = self.sink.played_samples
                if played > self._echo_pos:
                    self.echo.played(round((played - self._echo_pos) * SAMPLE_RATE / self.sink.sample_rate))
                self._echo_pos = played
            raw = audio
            audio = self.echo.near(audio)
            if self.pcfg.echo_suppress_db > 0:
                if self._echo_gate is None:
                    from voice.pipeline.echo import ResidualEchoGate

                    self._echo_gate = ResidualEchoGate(self.pcfg.echo_suppress_db)
                audio = self._echo_gate.process(raw, audio, self._assistant_audible())
        if not self._mic_open():
            self._gated = True
            return
        if self._gated:
            self._gated = False
            self._reset_input()
        if self.manual:
            self._manual_buf.append(audio)
            self._manual_samples += audio.shape[0]
            limit = int(self.cfg.vad.max_speech_s * SAMPLE_RATE)
            while self._manual_samples > limit and len(self._manual_buf) > 1:
                self._manual_samples -= self._manual_buf.pop(0).shape[0]
            return
        answering = self._response is not None
        self.endpointer.set_min_speech_ms(
            self.pcfg.barge_in_min_speech_ms if answering else self.cfg.vad.min_speech_ms)
        for vad_event in self.endpointer.process(audio):
            self._on_vad(vad_event)

    async def run(self, frames: AsyncIterator[np.ndarray], *, hold_while_busy: bool = False) -> None:
        """Consume ``frames`` until they end, then finish the last turn.

        ``hold_while_busy`` (for recordings): pull no frame while a turn is being answered, so a
        recorded conversation is not taken as the user talking over the assistant; a recording
        holds no echo of the assistant either, so the microphone is never gated.
        """
        if hold_while_busy:
            self.echo_path = False
        async for frame in frames:
            if self._closed:
                break
            self.process_frame(frame)
            if hold_while_busy and self.busy:
                await self.wait_idle()
        if not self.manual and self._endpointer is not None:
            for vad_event in self._endpointer.flush():
                self._on_vad(vad_event)
        await self.wait_idle()

    def _on_vad(self, vad_event: Any) -> None:
        kind = type(vad_event).__name__
        now = time.monotonic()
        if kind == "SpeechStarted":
            self._begin_user_turn()
        elif kind == "SilenceStarted":
            if self._user_timer is not None:
                self._user_timer.silence = now
            self._start_early(vad_event.audio)
        elif kind == "SpeechResumed":
            if self._user_timer is not None:
                self._user_timer.silence = None
            self._early.discard()
        elif kind == "SpeechEnded":
            if self._user_turn is None:  # e.g. an utterance cut short by muting
                self._begin_user_turn()
            self._end_user_turn(vad_event.audio, now, getattr(vad_event, "start", 0.0), vad_event.t)

    def _begin_user_turn(self) -> int:
        if self._response is not None:
            self.interrupt("barge_in")
        tid = self.turns.next()
        self._user_turn = tid
        self._user_timer = TurnTimer(turn_id=tid, end=time.monotonic())
        self._turn_future(tid)
        self._early.discard()
        self._emit(ev.UserSpeechStarted(turn_id=tid))
        self._set_status("listening", tid)
        return tid

    def _start_early(self, audio: np.ndarray) -> None:
        if self.transcriber is None or audio.size == 0 or not self.pcfg.early_transcribe:
            return
        gen = self._early.begin(int(audio.shape[0]))
        self._early_task = self._spawn(self._timed_transcribe(audio), bg=True)
        self._early_task.gen = gen  # type: ignore[attr-defined]

    async def _timed_transcribe(self, audio: np.ndarray) -> tuple[Any, float, float]:
        assert self.transcriber is not None
        t0 = time.monotonic()
        tr = await self.transcriber.transcribe(audio, live=True, language=self.cfg.asr.language)
        t1 = time.monotonic()
        return tr, t1 - t0, t1

    def _end_user_turn(self, audio: np.ndarray, now: float, start: float, end: float) -> None:
        tid = self._user_turn
        timer = self._user_timer
        assert tid is not None and timer is not None
        timer.end = now
        self._user_turn = None
        self._user_timer = None
        self._emit(ev.UserSpeechStopped(turn_id=tid, duration_s=max(0.0, end - start)))
        self._set_status("thinking", tid)
        early = None
        tail = int((self.cfg.vad.min_silence_ms + self.cfg.vad.pre_roll_ms + 100) * SAMPLE_RATE / 1000)
        task = self._early_task
        if (task is not None and self._early.usable(int(audio.shape[0]), tail)
                and self._early.current(getattr(task, "gen", -1))):
            early = task
        self._early.discard()
        self._early_task = None
        self._spawn(self._transcribe_and_answer(tid, timer, audio, early), pending=True)

    async def commit_input(self) -> int | None:
        """Manual turn detection (push-to-talk, server without VAD): end the user's turn now
        with the audio buffered since the last commit/clear. Returns the turn id."""
        audio = np.concatenate(self._manual_buf) if self._manual_buf else np.zeros(0, np.float32)
        self.clear_input()
        if audio.size == 0:
            return None
        tid = self._begin_user_turn()
        self._end_user_turn(audio, time.monotonic(), 0.0, audio.shape[0] / SAMPLE_RATE)
        return tid

    def clear_input(self) -> None:
        """Drop buffered input audio (manual mode) and any utterance in progress."""
        self._manual_buf = []
        self._manual_samples = 0
        if not self.manual:
            self._reset_input()

    async def _transcribe_and_answer(self, tid: int, timer: TurnTimer, audio: np.ndarray,
                                     early: asyncio.Task[Any] | None) -> None:
        try:
            result = None
            if early is not None:
                try:
                    result = await early
                except Exception:
                    log.warning("early transcription failed; transcribing again", exc_info=True)
            if result is None:
                if self.transcriber is None:
                    raise RuntimeError("no transcriber")
                result = await self._timed_transcribe(audio)
            tr, asr_s, t_done = result
            timer.asr_s = asr_s
            timer.transcript = max(t_done, timer.end)
            text = (tr.text or "").strip()
            self._emit(ev.TranscriptFinal(turn_id=tid, text=text, language=getattr(tr, "language", None)))
            if self.turns.last != tid:
                log.info("turn %d superseded by a newer utterance before it was answered", tid)
                self._emit(ev.TurnCancelled(turn_id=tid, reason="superseded", spoken_text=""))
                return
            if not text:
                self._set_status("listening", tid)
                return
            self._start_response(tid, text, timer)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("turn %d: transcription failed: %s", tid, err, exc_info=True)
            self._emit(ev.Error(turn_id=tid, stage="asr", message=str(err)))
            self._set_status("listening", tid)
        finally:
            if self._response is None or self._response.turn_id != tid:
                self._end_turn(tid)

    async def submit_text(self, text: str) -> int:
        """A typed user turn (``--text``, the server's conversation.item.create): same chain and
        TTS path as speech. Cancels an answer in progress. Returns the turn id."""
        if self._response is not None:
            self.interrupt("new_turn")
        tid = self.turns.next()
        self._turn_future(tid)
        timer = TurnTimer(turn_id=tid, end=time.monotonic(), source="text")
        text = text.strip()
        self._emit(ev.TranscriptFinal(turn_id=tid, text=text, source="text"))
        if not text:
            self._end_turn(tid)
            return tid
        self._set_status("thinking", tid)
        self._start_response(tid, text, timer)
        return tid

    async def ask(self, text: str) -> int:
        """:meth:`submit_text` and wait until the answer is played (or cancelled)."""
        tid = await self.submit_text(text)
        await self.wait_turn(tid)
        return tid

    # ------------------------------------------------------------------ response

    def _start_response(self, tid: int, text: str, timer: TurnTimer) -> None:
        from voice.tts.base import CancelToken

        if self._response is not None:
            self.interrupt("new_turn")
        resp = _Response(turn_id=tid, text=text, timer=timer,
                         ledger=PlaybackLedger(start=self._out_pos), token=CancelToken())
        self.turns.activate(tid)
        self._response = resp
        resp.task = self._spawn(self._respond(resp))

    async def _respond(self, resp: _Response) -> None:
        tid = resp.turn_id
        try:
            if self._commit_task is not None:
                await asyncio.shield(self._commit_task)
            q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max(1, self.pcfg.queue_size))
            llm = asyncio.create_task(self._llm_stage(resp, q))
            speak = asyncio.create_task(self._speak_stage(resp, q))
            try:
                await asyncio.gather(llm, speak)
            finally:
                for t in (llm, speak):
                    t.cancel()
                await asyncio.gather(llm, speak, return_exceptions=True)
            resp.stages_done = True
            await self._wait_played(resp)
            if self.turns.is_stale(tid):
                return
            spoken = resp.ledger.full_text() if self.sink is not None else "".join(resp.parts).strip()
            self._emit(ev.PlaybackDone(turn_id=tid, spoken_text=spoken))
            self._commit(tid, "".join(resp.parts).strip() if self.sink is None else spoken)
            self._finish(resp)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if self.turns.is_stale(tid):
                return
            log.warning("turn %d failed: %s", tid, err, exc_info=log.isEnabledFor(logging.DEBUG))
            self._emit(ev.Error(turn_id=tid, stage=getattr(err, "stage", "answer"), message=str(err)))
            if self.sink is not None and resp.ledger.written:
                self.sink.clear()
                self._out_pos = self.sink.played_samples
            if resp.llm_started:
                self._commit(tid, resp.ledger.spoken_text(self.sink.played_samples) if self.sink else "")
            resp.timer.cancelled = True
            self._finish(resp)

    def _finish(self, resp: _Response) -> None:
        tid = resp.turn_id
        resp.timer.mark("done", time.monotonic())
        self.turns.deactivate(tid)
        if self._response is resp:
            self._response = None
        self._notify()
        self._audible_until = time.monotonic() + self.pcfg.echo_tail_ms / 1000.0
        self._emit(resp.timer.to_event())
        self._set_status("listening", tid)
        self._end_turn(tid)

    async def _llm_stage(self, resp: _Response, q: asyncio.Queue[str | None]) -> None:
        from voice.tts.chunker import SpeechChunker

        chunker = SpeechChunker(self.cfg.tts.chunker)
        tid = resp.turn_id
        resp.timer.llm_start = time.monotonic()
        resp.llm_started = True
        stream = self.chain.astream(resp.text, turn_id=tid)
        try:
            async for delta in stream:
                if self.turns.is_stale(tid):
                    return
                if not delta:
                    continue
                resp.timer.mark("first_token", time.monotonic())
                resp.parts.append(delta)
                self._emit(ev.LlmDelta(turn_id=tid, text=delta))
                for piece in chunker.feed(delta):
                    await q.put(piece)
            for piece in chunker.flush():
                await q.put(piece)
            self._emit(ev.LlmDone(turn_id=tid, text="".join(resp.parts).strip()))
        except Exception as err:
            err.stage = "llm"  # type: ignore[attr-defined]
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), timeout=2.0)
            if not self.turns.is_stale(tid):
                await q.put(None)

    async def _speak_stage(self, resp: _Response, q: asyncio.Queue[str | None]) -> None:
        tid = resp.turn_id
        mark_turn = getattr(self.sink, "mark_turn", None)
        first = True
        while (piece := await q.get()) is not None:
            if self.tts is None or self.sink is None:
                continue
            if self.turns.is_stale(tid):
                return
            resp.timer.mark("tts_start", time.monotonic())
            t_piece = time.monotonic()
            try:
                async for chunk in self.tts.stream(piece, voice=self.voice, cancel=resp.token):
                    if self.turns.is_stale(tid):
                        return
                    now = time.monotonic()
                    if resp.timer.tts_first_chunk_s is None:
                        resp.timer.tts_first_chunk_s = now - t_piece
                    resp.timer.mark("first_audio", now)
                    audio = self._to_sink_rate(chunk.audio, chunk.sample_rate)
                    text = (chunk.text or piece).strip()
                    self._emit(ev.TtsChunk(turn_id=tid, text=text, index=chunk.index,
                                           samples=int(chunk.audio.shape[0]), sample_rate=chunk.sample_rate))
                    if audio.size == 0:
                        continue
                    if first and mark_turn is not None:
                        mark_turn()
                    # Book the chunk BEFORE the write: a sink queues it at once and then waits
                    # while its buffer is full (a chunk can be longer than the buffer), and all
                    # that time the chunk may sound. Barge-in must see it (to clear it and to
                    # know what was played) and the echo gate must know the assistant speaks.
                    resp.ledger.add(int(audio.shape[0]), text)
                    self._out_pos = resp.ledger.end
                    if self.echo is not None:
                        self.echo.far(self._to_rate(audio, self.sink.sample_rate, SAMPLE_RATE))
                    if first:
                        first = False
                        self._spawn(self._watch_first_sample(resp), bg=True)
                    await self.sink.write(audio)
                    if self.turns.is_stale(tid):
                        return  # cleared while we were waiting on the sink
                    self._emit(ev.AudioOut(turn_id=tid, audio=audio, sample_rate=self.sink.sample_rate,
                                           text=text))
            except Exception as err:
                err.stage = "tts"  # type: ignore[attr-defined]
                raise

    def _to_sink_rate(self, audio: np.ndarray, sr: int) -> np.ndarray:
        assert self.sink is not None
        return self._to_rate(audio, sr, self.sink.sample_rate)

    @staticmethod
    def _to_rate(audio: np.ndarray, sr: int, to_sr: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sr == to_sr or audio.size == 0:
            return audio
        from voice.audio.resample import resample

        return resample(audio, sr, to_sr)

    async def _watch_first_sample(self, resp: _Response) -> None:
        assert self.sink is not None
        while not self.turns.is_stale(resp.turn_id):
            if resp.ledger.started(self.sink.played_samples):
                resp.timer.mark("first_played", time.monotonic())
                self._emit(ev.PlaybackStarted(turn_id=resp.turn_id))
                self._set_status("speaking", resp.turn_id)
                return
            await asyncio.sleep(0.005)

    async def _wait_played(self, resp: _Response) -> None:
        if self.sink is None or not resp.ledger.written:
            return
        tol = int(END_TOLERANCE_S * self.sink.sample_rate)
        last, last_t = -1, time.monotonic()
        while not self.turns.is_stale(resp.turn_id):
            played = self.sink.played_samples
            if played >= resp.ledger.end - tol:
                if resp.timer.first_played is None:
                    resp.timer.mark("first_played", time.monotonic())
                    self._emit(ev.PlaybackStarted(turn_id=resp.turn_id))
                return
            if played != last:
                last, last_t = played, time.monotonic()
            elif time.monotonic() - last_t > STALL_S:
                log.warning("sink stopped playing (%d of %d samples); going on", played, resp.ledger.end)
                self._out_pos = played
                return
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ cancel

    def interrupt(self, reason: str = "cancelled") -> str | None:
        """Stop the current answer now: clear the sink, cancel LLM and TTS, commit to memory only
        what was played. Returns that text (None when nothing was being answered)."""
        resp = self._response
        if resp is None:
            return None
        if self.sink is not None and resp.ledger.written:
            self.sink.clear()  # first: the output must stop at once
        played = self.sink.played_samples if self.sink is not None else 0
        spoken = resp.ledger.spoken_text(played) if self.sink is not None else ""
        self._out_pos = played if self.sink is not None else 0
        if self.echo is not None:
            self.echo.reset()
            self._echo_pos = played
        resp.token.cancel()
        self.turns.deactivate(resp.turn_id)
        self._response = None
        self._notify()
        if resp.task is not None:
            resp.task.cancel()
        tid = resp.turn_id
        if reason == "barge_in":
            self._emit(ev.BargeIn(turn_id=tid, played_text=spoken))
        self._emit(ev.TurnCancelled(turn_id=tid, reason=reason, spoken_text=spoken))
        resp.timer.cancelled = True
        resp.timer.mark("done", time.monotonic())
        self._emit(resp.timer.to_event())
        self._audible_until = 0.0
        # commit once the LLM stream is closed (the chain records the full answer on close)
        self._commit_task = self._spawn(self._commit_after(resp, spoken), pending=True)
        return spoken

    async def _commit_after(self, resp: _Response, spoken: str) -> None:
        try:
            if resp.task is not None:
                await asyncio.wait([resp.task], timeout=5.0)
            if resp.llm_started:
                self._commit(resp.turn_id, spoken)
        finally:
            self._end_turn(resp.turn_id)

    def _commit(self, turn_id: int, spoken: str) -> None:
        try:
            self.chain.commit_assistant(turn_id, spoken)
        except Exception as err:
            log.warning("memory commit for turn %d failed: %s", turn_id, err)

    # ------------------------------------------------------------------ tasks

    def _spawn(self, coro: Any, *, pending: bool = False, bg: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        group = self._pending if pending else self._bg
        group.add(task)
        task.add_done_callback(group.discard)
        task.add_done_callback(self._notify)
        task.add_done_callback(_log_failure)
        return task

    async def aclose(self, grace_s: float = 3.0) -> None:
        """Cancel everything in flight (answer, transcriptions)."""
        self._closed = True
        self.interrupt("closed")
        tasks: Iterable[asyncio.Task[Any]] = [*self._pending, *self._bg]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(list(tasks), timeout=grace_s)
        for fut in self._done.values():
            if not fut.done():
                fut.set_result(None)
        self._set_status("stopped", self.turns.last)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("pipeline task failed: %r", task.exception())

