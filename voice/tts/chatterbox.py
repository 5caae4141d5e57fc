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
import json
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
from voice.tts.chunker import utterances

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
#: Optional file in a standard model folder: module sizes for weights of other sizes.
SIZES_FILE = "voice-chatterbox.json"


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


# ----------------------------------------------------------------------------- sized models
#
# ``ChatterboxTTS.from_local`` builds every module at the release's sizes (T3 from a module-level
# table, S3Gen with sizes written into its constructor). A standard folder that holds
# ``voice-chatterbox.json`` is loaded by :func:`load_sized` instead: the same modules from
# Chatterbox's own classes at the sizes in that file, then exactly from_local's steps (the same
# files, load_state_dict calls, tokenizer, conds.pt and ChatterboxTTS object).


def build_t3(sizes: dict[str, Any], *, turbo: bool = False) -> Any:
    """Chatterbox's T3 at the given sizes (Llama backbone; Turbo: GPT-2 with Turbo's settings
    from ``ChatterboxTurboTTS.from_local``); mirrors ``T3.__init__``."""
    from chatterbox.models.t3.llama_configs import GPT2_MEDIUM_CONFIG, LLAMA_520M_CONFIG_DICT
    from chatterbox.models.t3.modules.cond_enc import T3CondEnc
    from chatterbox.models.t3.modules.learned_pos_emb import LearnedPositionEmbeddings
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.t3.t3 import T3
    from torch import nn
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    base = GPT2_MEDIUM_CONFIG if turbo else LLAMA_520M_CONFIG_DICT
    tcfg = {**base, **sizes.get("gpt2" if turbo else "llama", {})}

    class SizedT3Config(T3Config):
        @property
        def n_channels(self) -> int:
            return int(tcfg["hidden_size"])

    hp = SizedT3Config(text_tokens_dict_size=50276) if turbo else SizedT3Config()
    if turbo:
        hp.llama_config_name = "GPT2_medium"
        hp.speech_tokens_dict_size = 6563
        hp.input_pos_emb = None
        hp.speech_cond_prompt_len = 375
        hp.use_perceiver_resampler = False
        hp.emotion_adv = False
    for key, value in sizes.get("hp", {}).items():
        if not hasattr(hp, key):
            raise ConfigError(f"{SIZES_FILE}: T3Config has no field {key!r}")
        setattr(hp, key, value)
    t3 = T3.__new__(T3)
    nn.Module.__init__(t3)
    t3.hp = hp
    t3.is_gpt = turbo
    t3.cfg = GPT2Config(**tcfg) if turbo else LlamaConfig(**tcfg)
    t3.tfmr = GPT2Model(t3.cfg) if turbo else LlamaModel(t3.cfg)
    t3.dim = dim = t3.cfg.hidden_size
    t3.deepspeed_patch_applied = False
    t3.cond_enc = T3CondEnc(hp)
    t3.text_emb = nn.Embedding(hp.text_tokens_dict_size, dim)
    t3.speech_emb = nn.Embedding(hp.speech_tokens_dict_size, dim)
    t3.text_pos_emb = None
    t3.speech_pos_emb = None
    if hp.input_pos_emb == "learned":
        t3.text_pos_emb = LearnedPositionEmbeddings(hp.max_text_tokens + 2, dim)
        t3.speech_pos_emb = LearnedPositionEmbeddings(hp.max_speech_tokens + 2 + 2, dim)
    t3.text_head = nn.Linear(dim, hp.text_tokens_dict_size, bias=False)
    t3.speech_head = nn.Linear(dim, hp.speech_tokens_dict_size, bias=turbo)
    t3.compiled = False
    return t3


def build_s3gen(sizes: dict[str, Any], *, meanflow: bool = False) -> Any:
    """Chatterbox's S3Gen (speech tokenizer, CAMPPlus, flow, HiFT) at the given sizes; mirrors
    ``S3Token2Mel.__init__`` and ``S3Token2Wav.__init__``."""
    import librosa
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.s3gen.configs import CFM_PARAMS
    from chatterbox.models.s3gen.const import S3GEN_SR
    from chatterbox.models.s3gen.decoder import ConditionalDecoder
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
    from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
    from chatterbox.models.s3gen.hifigan import HiFTGenerator
    from chatterbox.models.s3gen.transformer.upsample_encoder import UpsampleConformerEncoder
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram
    from chatterbox.models.s3gen.xvector import CAMPPlus
    from chatterbox.models.s3tokenizer import S3_SR, S3Tokenizer
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2
    from torch import nn

    gen = S3Gen.__new__(S3Gen)
    nn.Module.__init__(gen)
    tok = S3Tokenizer.__new__(S3Tokenizer)
    tcfg = ModelConfig(**sizes.get("tokenizer", {}))
    S3TokenizerV2.__init__(tok, "speech_tokenizer_v2_25hz", tcfg)
    tok.n_fft = 400
    tok.register_buffer(
        "_mel_filters", torch.FloatTensor(librosa.filters.mel(sr=S3_SR, n_fft=tok.n_fft, n_mels=tcfg.n_mels))
    )
    tok.register_buffer("window", torch.hann_window(tok.n_fft))
    gen.tokenizer = tok
    gen.mel_extractor = mel_spectrogram
    gen.speaker_encoder = CAMPPlus(memory_efficient=False, **sizes.get("speaker_encoder", {}))
    gen.meanflow = meanflow
    enc = {"output_size": 512, "attention_heads": 8, "linear_units": 2048, "num_blocks": 6,
           **sizes.get("encoder", {})}
    encoder = UpsampleConformerEncoder(
        dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True,
        input_layer="linear", pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn",
        input_size=enc["output_size"], use_cnn_module=False, macaron_style=False, **enc,
    )
    est = {"channels": [256], "attention_head_dim": 64, "n_blocks": 4, "num_mid_blocks": 12, "num_heads": 8,
           **sizes.get("estimator", {})}
    estimator = ConditionalDecoder(in_channels=320, out_channels=80, causal=True, dropout=0.0, act_fn="gelu",
                                   meanflow=meanflow, **est)
    decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
    gen.flow = CausalMaskedDiffWithXvec(input_size=enc["output_size"], encoder=encoder, decoder=decoder)
    gen.resamplers = {}
    hift = sizes.get("hift", {})
    f0 = ConvRNNF0Predictor(cond_channels=hift.get("f0_cond_channels", 512))
    gen.mel2wav = HiFTGenerator(
        sampling_rate=S3GEN_SR, base_channels=hift.get("base_channels", 512), upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7], source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], f0_predictor=f0,
    )
    n_trim = S3GEN_SR // 50
    trim_fade = torch.zeros(2 * n_trim)
    trim_fade[n_trim:] = (torch.cos(torch.linspace(torch.pi, 0, n_trim)) + 1) / 2
    gen.register_buffer("trim_fade", trim_fade, persistent=False)
    gen.estimator_dtype = "fp32"
    return gen


def build_voice_encoder(sizes: dict[str, Any]) -> Any:
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.models.voice_encoder.config import VoiceEncConfig

    hp = VoiceEncConfig()
    for key, value in sizes.get("voice_encoder", {}).items():
        setattr(hp, key, value)
    return VoiceEncoder(hp)


def load_sized(root: Path, device: str, sizes: dict[str, Any], *, turbo: bool = False) -> Any:
    """``ChatterboxTTS.from_local`` (or the Turbo one) for a folder with module sizes in
    ``voice-chatterbox.json``: the same files and steps, modules at those sizes."""
    import torch
    from chatterbox.tts import ChatterboxTTS, Conditionals
    from safetensors.torch import load_file

    map_location = torch.device("cpu") if device in ("cpu", "mps") else None
    ve = build_voice_encoder(sizes)
    ve.load_state_dict(load_file(root / "ve.safetensors"))
    ve.to(device).eval()
    t3 = build_t3(sizes.get("t3", {}), turbo=turbo)
    t3_state = load_file(root / ("t3_turbo_v1.safetensors" if turbo else "t3_cfg.safetensors"))
    t3.load_state_dict(t3_state)
    if turbo:
        del t3.tfmr.wte
    t3.to(device).eval()
    s3gen = build_s3gen(sizes.get("s3gen", {}), meanflow=turbo)
    s3gen.load_state_dict(load_file(root / ("s3gen_meanflow.safetensors" if turbo else "s3gen.safetensors")),
                          strict=turbo)
    s3gen.to(device).eval()
    tokenizer: Any
    if turbo:
        from chatterbox.tts_turbo import ChatterboxTurboTTS
        from chatterbox.tts_turbo import Conditionals as TurboConditionals
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(root)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        conds = None
        if (builtin := root / "conds.pt").exists():
            conds = TurboConditionals.load(builtin, map_location=map_location).to(device)
        return ChatterboxTurboTTS(t3, s3gen, ve, tokenizer, device, conds=conds)
    from chatterbox.models.tokenizers import EnTokenizer

    tokenizer = EnTokenizer(str(root / "tokenizer.json"))
    conds = None
    if (builtin := root / "conds.pt").exists():
        conds = Conditionals.load(builtin, map_location=map_location).to(device)
    return ChatterboxTTS(t3, s3gen, ve, tokenizer, device, conds=conds)


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
            sized = root / SIZES_FILE
            try:
                if sized.is_file():
                    sizes = json.loads(sized.read_text())
                    model = load_sized(root, self.device.device, sizes, turbo=self.variant == "turbo")
                else:
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
            if self.variant == "turbo":
                self._prepare_turbo(model, path, kwargs)
            else:
                model.prepare_conditionals(str(path), **kwargs)
        except (OSError, EOFError) as err:  # read by librosa after our own check passed
            raise InputError(f"reference audio {path} cannot be used: {err}") from None
        except AssertionError as err:  # Turbo: "Audio prompt must be longer than 5 seconds!"
            raise InputError(f"reference audio {path} cannot be used: {err}") from None
        self._conds_for = str(path)

    @staticmethod
    def _prepare_turbo(model: Any, path: Path, kwargs: dict[str, Any]) -> None:
        """Turbo's prepare_conditionals with its loudness step done here in float32.

        Its own step multiplies float32 audio by a NumPy float64 gain, which under NumPy 2 (the
        package pins numpy<2) turns the audio into float64 and its speech tokenizer then fails
        ("expected scalar type Double"). Same normalization, same file path API, float32 kept."""
        import tempfile

        import librosa
        import soundfile as sf
        from chatterbox.models.s3gen.const import S3GEN_SR

        wav, sr = librosa.load(str(path), sr=S3GEN_SR)
        wav = np.asarray(model.norm_loudness(wav, sr), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="voice-ref-") as tmp:
            ref = Path(tmp) / "reference.wav"
            sf.write(ref, wav, sr, subtype="FLOAT")
            model.prepare_conditionals(str(ref), norm_loudness=False, **kwargs)

    def _generate(self, model: Any, sentence: str) -> np.ndarray:
        c = self.cfg.tts.chatterbox
        kwargs: dict[str, Any] = {"temperature": c.temperature}
        if self.variant == "standard":
            if c.cfg_weight < 0:
                raise ConfigError(f"tts.chatterbox.cfg_weight must be >= 0, not {c.cfg_weight}")
            # chatterbox-tts 0.1.7's T3.inference always builds a guided batch of two, which
            # generate() only prepares for cfg_weight > 0: 0 (no guidance) becomes a negligible weight.
            kwargs.update(exaggeration=c.exaggeration, cfg_weight=max(c.cfg_weight, 1e-6))
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
            for sentence in utterances(text, self.cfg.tts.max_sentence_chars):
                if cancel is not None and cancel.cancelled:
                    return
                audio = await asyncio.to_thread(self._generate, model, sentence)
                if cancel is not None and cancel.cancelled:
                    return
                if len(audio) == 0:
                    continue
                yield AudioChunk(audio, SAMPLE_RATE, sentence, index)
                index += 1
