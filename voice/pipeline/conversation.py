"""A conversation: :class:`~voice.pipeline.hearing.Hearing` in front of the turn lifecycle.

Data flow (one way)::

    frames -> Hearing.hear -> VAD events -> TurnLifecycle.on_vad -> Transcription.final
           -> Answer.run (Chain.astream -> SpeechChunker -> TTSEngine.stream -> AudioSink.write)
           -> AnswerResult -> Chain.commit_assistant

The class knows nothing of devices or sockets: :meth:`Conversation.run` takes any async iterator
of float32 16 kHz mono frames, :meth:`Conversation.process_frame` one frame pushed from
elsewhere, and output goes to any :class:`~voice.pipeline.io.AudioSink`. What may change while
it runs is its :class:`~voice.pipeline.lifecycle.LiveSettings`, changed only through the
``set_*`` methods here; the config is read once, at construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE
from voice.pipeline.hearing import EchoCancel, Hearing, OutputFacts, VadEndpointer
from voice.pipeline.io import AudioSink
from voice.pipeline.lifecycle import LiveSettings, TurnLifecycle

if TYPE_CHECKING:
    from voice.asr.base import Transcriber
    from voice.config import Config, VadConfig
    from voice.llm.chain import Chain

__all__ = ["Conversation", "LiveSettings"]


class Conversation(TurnLifecycle):
    """One spoken (or typed) conversation. Reusable by any front end: terminal, file, socket.

    ``transcriber`` follows :class:`voice.asr.base.Transcriber`, ``chain``
    :class:`voice.llm.chain.Chain`, ``tts`` a :class:`voice.tts.base.TTSEngine` (None = text
    only), ``sink`` an :class:`AudioSink` (None = text only). ``endpointer`` defaults to a new
    :class:`voice.audio.vad.Endpointer`; ``echo`` is an optional echo canceller
    (:class:`voice.pipeline.echo.EchoCanceller`).
    """

    def __init__(self, cfg: Config, *, transcriber: Transcriber | None, chain: Chain,
                 tts: Any | None = None, sink: AudioSink | None = None, endpointer: VadEndpointer | None = None,
                 voice: str | None = None, echo: EchoCancel | None = None) -> None:
        settings = LiveSettings(vad=cfg.vad, manual=cfg.pipeline.turn_detection != "vad",
                                barge_in=cfg.pipeline.barge_in, voice=voice)
        hearing = Hearing(cfg.pipeline, cfg.vad, endpointer=endpointer, echo=echo, manual=settings.manual)
        super().__init__(cfg, transcriber=transcriber, chain=chain, tts=tts, sink=sink, hearing=hearing,
                         settings=settings)
        self.muted = False

    def set_turn_detection(self, vad: VadConfig | None, *, barge_in: bool = True,
                           endpointer: VadEndpointer | None = None) -> None:
        """``vad`` None: manual turns (push-to-talk); otherwise VAD turns with these parameters
        (``endpointer`` built from them, or None to keep the current one)."""
        if vad is None:
            if not self.settings.manual:
                self.clear_input()
            self.settings = dataclasses.replace(self.settings, manual=True)
        else:
            if endpointer is not None:
                self.hearing.set_endpointer(endpointer, vad)
            self.settings = dataclasses.replace(self.settings, vad=vad, manual=False, barge_in=barge_in)
        self.hearing.set_manual(self.settings.manual)

    def set_voice(self, voice: str | None) -> None:
        """The TTS voice of the next answer."""
        self.settings = dataclasses.replace(self.settings, voice=voice)

    def set_chain(self, chain: Chain) -> None:
        """Answer the next turn with ``chain`` (a new system prompt)."""
        self._ahead.drop("chain replaced")  # an answer prepared ahead came from the old one
        self.chain = chain

    def set_muted(self, muted: bool) -> None:
        """Ignore the microphone (an utterance in progress is dropped)."""
        self.muted = muted
        if muted:
            self._reset_input()

    def process_frame(self, frame: np.ndarray) -> None:
        """Feed one chunk of float32 16 kHz mono audio (any length). Never blocks."""
        sink = self.sink
        facts = OutputFacts(audible=self._out.audible(), answering=self._out.answer is not None,
                            barge_in=self.settings.barge_in, closed=self.muted or self._closed,
                            played=sink.played_samples if sink is not None else 0,
                            sink_rate=sink.sample_rate if sink is not None else SAMPLE_RATE)
        for event in self.hearing.hear(frame, facts):
            self.on_vad(event)

    async def run(self, frames: AsyncIterator[np.ndarray], *, hold_while_busy: bool = False) -> None:
        """Consume ``frames`` until they end, then finish the last turn.

        ``hold_while_busy`` (for recordings): pull no frame while a turn is being answered, so a
        recorded conversation is not taken as the user talking over the assistant; a recording
        holds no echo of the assistant either, so the microphone is never gated.
        """
        if hold_while_busy:
            self.hearing.echo_path = False
        async for frame in frames:
            if self._closed:
                break
            self.process_frame(frame)
            if hold_while_busy and self.busy:
                await self.wait_idle()
        for event in self.hearing.flush():
            self.on_vad(event)
        await self.wait_idle()
