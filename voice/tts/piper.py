"""Piper (piper-tts, ONNX): the default engine, fast on CPU.

Voices are registry names (kind ``tts-piper``) or paths to a ``.onnx`` file with its
``.onnx.json`` beside it. Each voice loads once per engine, on first use; synthesis runs one
sentence at a time in a worker thread, and ``cancel`` is checked between sentences.

Memory: one ONNX call turns a phoneme sequence into all of its audio at once, and the tensors
of the HiFi-GAN decoder (256 channels at the frame rate, up-sampled 8x8x4 to 32 channels at
the sample rate, three residual blocks per stage) scale with that audio: ~22 MB per second of
speech, ~1.3 MB per phoneme. So each call is bounded twice: ``tts.max_sentence_chars`` (for
every engine, :func:`voice.tts.chunker.utterances`) and ``tts.piper.max_phonemes`` here,
because digits, symbols and currency expand several-fold from characters to phonemes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.devices import DeviceChoice
from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.models import registry_for
from voice.tts.base import AudioChunk, CancelToken
from voice.tts.chunker import utterances

if TYPE_CHECKING:
    from voice.config import Config

KIND = "tts-piper"
INSTALL = "pip install piper-tts==1.8.0"


def missing_dependency() -> str | None:
    return None if importlib.util.find_spec("piper") is not None else INSTALL


def create(cfg: Config, device: DeviceChoice) -> PiperEngine:
    return PiperEngine(cfg, device)


def phoneme_runs(phonemes: list[str], limit: int) -> list[list[str]]:
    """``phonemes`` (one espeak sentence) in runs of at most ``limit``, cut after the last word
    (a ``" "`` phoneme) that fits, or hard at ``limit`` inside one giant word."""
    runs: list[list[str]] = []
    while len(phonemes) > limit:
        cut = next((i for i in range(limit, 0, -1) if phonemes[i - 1] == " "), limit)
        runs.append(phonemes[:cut])
        phonemes = phonemes[cut:]
    runs.append(phonemes)
    return [r for r in runs if any(p != " " for p in r)]


class PiperEngine:
    """The Piper engine. Constructing it is cheap; voices load lazily and are cached."""

    name = "piper"

    def __init__(self, cfg: Config, device: DeviceChoice) -> None:
        self.cfg = cfg
        self.device = device
        self._registry = registry_for(cfg)
        self._voices: dict[Path, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ voices
    @property
    def default_voice(self) -> str:
        return self.cfg.tts.voice or self.cfg.tts.piper.voice

    def voices(self) -> list[str]:
        names = [n for n in self._registry.names(KIND) if self._registry.availability(n).available]
        if self.default_voice not in names:
            names.insert(0, self.default_voice)
        return names

    def resolve_voice(self, voice: str | None = None) -> Path:
        """The .onnx file for a registry name or path; ConfigError/InputError when unusable."""
        name = voice or self.default_voice
        path = Path(name).expanduser()
        registered = self._registry.canonical(name) is not None
        if not registered and not path.exists():
            if name.endswith(".onnx") or "/" in name:
                raise InputError(f"Piper voice file {name} does not exist")
            known = ", ".join(self._registry.names(KIND)) or "none"
            raise ConfigError(f"unknown Piper voice {name!r} (registered: {known}; or give a .onnx path)")
        resolved = self._registry.resolve(name, kind=KIND if registered else None)
        onnx = resolved.path
        if onnx.is_dir():
            found = sorted(onnx.glob("*.onnx"))
            if not found:
                raise InputError(f"Piper voice folder {onnx} holds no .onnx file")
            onnx = found[0]
        if onnx.suffix != ".onnx":
            raise InputError(f"Piper voice {onnx} is not a .onnx file")
        if not Path(f"{onnx}.json").is_file():
            raise InputError(f"Piper voice {onnx} has no {onnx.name}.json config beside it")
        return onnx

    @property
    def sample_rate(self) -> int:
        """The default voice's rate (read from its JSON config; no model load)."""
        onnx = self.resolve_voice()
        loaded = self._voices.get(onnx)
        if loaded is not None:
            return int(loaded.config.sample_rate)
        with open(f"{onnx}.json", encoding="utf-8") as fh:
            return int(json.load(fh)["audio"]["sample_rate"])

    # ------------------------------------------------------------------ loading
    async def load(self) -> None:
        onnx = self.resolve_voice()
        await asyncio.to_thread(self._load_voice, onnx)

    def _load_voice(self, onnx: Path) -> Any:
        with self._lock:
            if onnx in self._voices:
                return self._voices[onnx]
            try:
                import onnxruntime
                from piper import PiperVoice
                from piper.config import PiperConfig as VoiceConfig
            except ImportError:
                raise ModelNotAvailable(f"piper-tts is not installed; install it with: {INSTALL}") from None
            try:
                with open(f"{onnx}.json", encoding="utf-8") as fh:
                    voice_cfg = VoiceConfig.from_dict(json.load(fh))
                opts = onnxruntime.SessionOptions()
                # Every piece has its own input length; ORT's memory patterns are planned and kept
                # per shape, and with them the arena kept growing: 30 pieces of ~300 characters
                # peaked at 743 MB (501 MB after 5), without them at 568 MB, no slower.
                opts.enable_mem_pattern = False
                opts.enable_cpu_mem_arena = self.cfg.tts.piper.cpu_mem_arena is not False
                if self.cfg.tts.piper.threads > 0:
                    opts.intra_op_num_threads = self.cfg.tts.piper.threads
                    opts.inter_op_num_threads = 1
                providers: list[Any] = ["CPUExecutionProvider"]
                if self.device.device == "cuda":
                    providers.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
                session = onnxruntime.InferenceSession(str(onnx), sess_options=opts, providers=providers)
            except (OSError, ValueError, KeyError) as err:
                raise InputError(f"Piper voice {onnx} cannot be loaded: {err}") from None
            except Exception as err:  # onnxruntime raises its own types for bad model files
                if type(err).__module__.startswith("onnxruntime"):
                    raise InputError(f"Piper voice {onnx} is not a valid ONNX model: {err}") from None
                raise
            pv = PiperVoice(session=session, config=voice_cfg)
            self._voices[onnx] = pv
            return pv

    # ------------------------------------------------------------------ synthesis
    def _syn_config(self, pv: Any, speed: float | None) -> Any:
        from piper import SynthesisConfig

        pcfg = self.cfg.tts.piper
        speed = self.cfg.tts.speed if speed is None else speed
        if not speed or speed <= 0:
            raise InputError(f"speed must be a positive number, not {speed!r}")
        base = pcfg.length_scale if pcfg.length_scale is not None else pv.config.length_scale
        return SynthesisConfig(
            speaker_id=pcfg.speaker_id,
            length_scale=base / speed,
            noise_scale=pcfg.noise_scale,
            noise_w_scale=pcfg.noise_w_scale,
        )

    def _synth_sentence(self, pv: Any, sentence: str, syn: Any, cancel: CancelToken | None) -> np.ndarray:
        """Piper's own ``synthesize`` loop (espeak sentences, peak-normalized each), with every
        ONNX call capped at ``tts.piper.max_phonemes``."""
        parts: list[np.ndarray] = []
        for phonemes in pv.phonemize(sentence):
            for run in phoneme_runs(phonemes, self.cfg.tts.piper.max_phonemes):
                audio = np.asarray(pv.phoneme_ids_to_audio(pv.phonemes_to_ids(run), syn), dtype=np.float32)
                peak = float(np.max(np.abs(audio))) if audio.size else 0.0
                if syn.normalize_audio:
                    audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
                parts.append(np.clip(audio * syn.volume, -1.0, 1.0).astype(np.float32, copy=False))
                if cancel is not None and cancel.cancelled:
                    break
            if cancel is not None and cancel.cancelled:
                break
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float | None = None,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """One chunk per sentence; stops quietly once ``cancel`` is set."""
        onnx = self.resolve_voice(voice)
        pv: Any = self._voices.get(onnx)
        if pv is None:
            pv = await asyncio.to_thread(self._load_voice, onnx)
        pcfg = self.cfg.tts.piper
        if pcfg.speaker_id is not None and pcfg.speaker_id >= max(1, pv.config.num_speakers):
            raise ConfigError(
                f"tts.piper.speaker_id = {pcfg.speaker_id}, but voice {onnx.name} has"
                f" {pv.config.num_speakers} speaker(s)"
            )
        syn = self._syn_config(pv, speed)
        index = 0
        for sentence in utterances(text, self.cfg.tts.max_sentence_chars):
            if cancel is not None and cancel.cancelled:
                return
            audio = await asyncio.to_thread(self._synth_sentence, pv, sentence, syn, cancel)
            if cancel is not None and cancel.cancelled:
                return
            if len(audio) == 0:
                continue
            yield AudioChunk(audio=audio, sample_rate=int(pv.config.sample_rate), text=sentence, index=index)
            index += 1
