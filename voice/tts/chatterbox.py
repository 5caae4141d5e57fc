"""Chatterbox (``chatterbox-tts``, Resemble AI): standard and Turbo, 24 kHz, wants a GPU.

Weights load only from a local folder through the library's own ``from_local(dir, device)``:
standard reads ve.safetensors, t3_cfg.safetensors, s3gen.safetensors, tokenizer.json and an
optional conds.pt (the built-in voice); Turbo reads ve.safetensors, t3_turbo_v1.safetensors,
s3gen_meanflow.safetensors, the GPT-2 tokenizer files and conds.pt.

A voice is a reference audio file to clone (``tts.chatterbox.reference_audio`` or ``voice=``);
None uses the folder's conds.pt. Output goes through Chatterbox's watermarker (Resemble's
Perth implicit watermark) as the library ships it; when the ``resemble-perth`` package cannot
build it, loading fails with a clear message rather than producing unmarked audio.

Chatterbox's package pins torch==2.6.0/torchaudio==2.6.0/numpy<2/transformers==5.2.0/gradio:
voice installs it with --no-deps beside torch 2.13 (CPU) and stands in for torchaudio
(:mod:`voice.tts.torchaudio_compat`); see docs/expressive-tts.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.devices import DeviceChoice
from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.models import registry_for
from voice.tts.base import AudioChunk, CancelToken
from voice.tts.chunker import split_sentences

if TYPE_CHECKING:
    from voice.config import Config

log = logging.getLogger(__name__)

KIND = "tts-chatterbox"
SAMPLE_RATE = 24000
INSTALL = "bash scripts/install.sh --expressive"
FILES = {
    "standard": ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json"),
    "turbo": ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors"),
}
TURBO_TOKENIZER = ("tokenizer.json", "vocab.json")  # either: the GPT-2 tokenizer files


def missing_dependency() -> str | None:
    for mod in ("torch", "chatterbox", "perth", "s3tokenizer", "diffusers", "librosa", "transformers"):
        if importlib.util.find_spec(mod) is None:
            return INSTALL
    return None


def create(cfg: Config, device: DeviceChoice) -> ChatterboxEngine:
    return ChatterboxEngine(cfg, device)


def check_reference(path: str | Path) -> Path:
    """A readable, non-empty audio file; InputError (one line) otherwise."""
    from voice.audio.files import load_audio

    p = Path(path).expanduser()
    audio = load_audio(p, sample_rate=16000)  # raises InputError for missing/empty/non-audio
    if len(audio) < 1600:
        raise InputError(f"reference audio {p} is too short to clone a voice (under 0.1 s)")
    return p


class ChatterboxEngine:
    """Chatterbox behind the TTSEngine interface; one synthesis at a time per engine."""

    name = "chatterbox"

    def __init__(self, cfg: Config, device: DeviceChoice) -> None:
        self.cfg = cfg
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()
        self._busy: asyncio.Lock | None = None
        self._conds_for: str | None = None  # the reference the current conditionals came from
        self._builtin: Any = None

    @property
    def variant(self) -> str:
        v = self.cfg.tts.chatterbox.variant
        if v not in FILES:
            raise ConfigError(f"tts.chatterbox.variant must be standard or turbo, not {v!r}")
        return v

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def voices(self) -> list[str]:
        ref = self.cfg.tts.voice or self.cfg.tts.chatterbox.reference_audio
        return [ref] if ref else ["builtin"]

    # ------------------------------------------------------------------ loading
    def model_dir(self) -> Path:
        name = self.cfg.tts.chatterbox.model
        if self.variant == "turbo" and name == "chatterbox":
            name = "chatterbox-turbo"
        root = registry_for(self.cfg).resolve(name, kind=KIND).path
        missing = [f for f in FILES[self.variant] if not (root / f).is_file()]
        if self.variant == "turbo" and not any((root / f).is_file() for f in TURBO_TOKENIZER):
            missing.append("the GPT-2 tokenizer files (tokenizer.json or vocab.json + merges.txt)")
        if missing:
            raise ModelNotAvailable(
                f"Chatterbox ({self.variant}) folder {root} lacks {', '.join(missing)};"
                " put the release files there (see docs/expressive-tts.md)"
            )
        return root

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            if missing_dependency():
                raise ModelNotAvailable(f"Chatterbox is not installed; install it with: {INSTALL}")
            root = self.model_dir()
            from voice.tts.torchaudio_compat import ensure_torchaudio

            ensure_torchaudio()
            import perth

            if getattr(perth, "PerthImplicitWatermarker", None) is None:
                raise ModelNotAvailable(
                    "Chatterbox's watermarker (resemble-perth's PerthImplicitWatermarker) cannot be"
                    " built here (it needs pkg_resources: setuptools<81); reinstall with: " + INSTALL
                )
            if self.variant == "turbo":
                from chatterbox.tts_turbo import ChatterboxTurboTTS as cls
            else:
                from chatterbox.tts import ChatterboxTTS as cls  # type: ignore[assignment]
            try:
                model = cls.from_local(root, self.device.device)
            except (OSError, RuntimeError, ValueError, KeyError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ModelNotAvailable(f"Chatterbox could not load {root}: {first}") from None
            self._builtin = model.conds
            self._model = model
            log.info("Chatterbox %s loaded from %s on %s", self.variant, root, self.device.device)
            return model

    # ------------------------------------------------------------------ synthesis
    def _use_voice(self, model: Any, voice: str | None) -> None:
        """Set the model's conditionals for ``voice`` (reference audio path) or the built-in one."""
        ref = voice or self.cfg.tts.voice or self.cfg.tts.chatterbox.reference_audio
        if ref in (None, "builtin"):
            if self._builtin is None:
                raise InputError(
                    "Chatterbox needs a voice: give a reference audio file (--voice FILE or"
                    " tts.chatterbox.reference_audio); this model folder has no conds.pt"
                )
            model.conds = self._builtin
            self._conds_for = None
            return
        path = check_reference(ref)
        if self._conds_for == str(path):
            return
        kwargs: dict[str, Any] = {"exaggeration": self.cfg.tts.chatterbox.exaggeration}
        try:
            model.prepare_conditionals(str(path), **kwargs)
        except (OSError, ValueError, RuntimeError, EOFError) as err:
            raise InputError(f"reference audio {path} cannot be used: {err}") from None
        self._conds_for = str(path)

    def _generate(self, model: Any, sentence: str) -> np.ndarray:
        c = self.cfg.tts.chatterbox
        kwargs: dict[str, Any] = {"temperature": c.temperature}
        if self.variant == "standard":
            kwargs.update(exaggeration=c.exaggeration, cfg_weight=c.cfg_weight)
        wav = model.generate(sentence, **kwargs)
        return np.asarray(wav.detach().cpu().numpy(), dtype=np.float32).reshape(-1)

    async def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float | None = None,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """One chunk per sentence (Chatterbox has no speed control; ``speed`` is ignored)."""
        ref = voice or self.cfg.tts.voice or self.cfg.tts.chatterbox.reference_audio
        if ref not in (None, "builtin"):
            check_reference(ref)  # a bad file fails before any model loading
        model = self._model or await asyncio.to_thread(self._load)
        if self._busy is None:
            self._busy = asyncio.Lock()
        async with self._busy:
            await asyncio.to_thread(self._use_voice, model, voice)
            index = 0
            for sentence in split_sentences(text):
                if cancel is not None and cancel.cancelled:
                    return
                audio = await asyncio.to_thread(self._generate, model, sentence)
                if cancel is not None and cancel.cancelled:
                    return
                if len(audio) == 0:
                    continue
                yield AudioChunk(audio, SAMPLE_RATE, sentence, index)
                index += 1
