"""ChatTTS (``chattts``): expressive, 24 kHz, wants a GPU.

Weights load only from a local folder in ChatTTS's own layout (``asset/...``) through
``Chat.load(source="custom", custom_path=...)``; never ``source="local"`` (it downloads and runs
a binary). ChatTTS checks every file's sha256 against its built-in map of the official release;
for other weights (fine-tunes, the tests' tiny models) ``tts.chattts.sha256_map`` names a JSON
map in the same format (:func:`write_sha256_map` makes one), which replaces the built-in map on
the ``Chat`` object, so the check still runs.

An optional ``voice-chattts.json`` in the model folder overrides ChatTTS's built-in model sizes
(``Chat.config``: gpt, embed, dvae, decoder, vocos, spk_stat) for weights of other sizes.

Speakers are files: ``.txt`` holds ChatTTS's own speaker string, ``.pt`` a float tensor. A voice
is a speaker file path, ``seed:N`` (sample from a seed), or None (``tts.chattts.speaker``, else
``tts.chattts.seed``, else one random speaker per engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import AsyncIterator, Generator
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

KIND = "tts-chattts"
SAMPLE_RATE = 24000
INSTALL = "bash scripts/install.sh --expressive"
OVERRIDES_FILE = "voice-chattts.json"
#: The files ChatTTS's custom loader reads, relative to the model folder (its sha256 map keys).
ASSET_FILES = (
    "asset/Decoder.safetensors",
    "asset/DVAE.safetensors",
    "asset/Embed.safetensors",
    "asset/Vocos.safetensors",
    "asset/gpt/config.json",
    "asset/gpt/model.safetensors",
    "asset/tokenizer/special_tokens_map.json",
    "asset/tokenizer/tokenizer_config.json",
    "asset/tokenizer/tokenizer.json",
)
_POLL_S = 0.02


def missing_dependency() -> str | None:
    for mod in ("torch", "ChatTTS", "vocos", "vector_quantize_pytorch", "pybase16384", "transformers"):
        if importlib.util.find_spec(mod) is None:
            return INSTALL
    return None


def create(cfg: Config, device: DeviceChoice) -> ChatTTSEngine:
    return ChatTTSEngine(cfg, device)


# ----------------------------------------------------------------------------- helpers


def _sha_key(rel: str) -> str:
    return "sha256_" + rel.replace("/", "_").replace(".", "_")


def write_sha256_map(model_dir: Path, out: Path) -> Path:
    """Hash ``model_dir``'s asset files into a JSON map in ChatTTS's own format."""
    mapping = {}
    for rel in ASSET_FILES:
        h = hashlib.sha256()
        with (model_dir / rel).open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        mapping[_sha_key(rel)] = h.hexdigest()
    out.write_text(json.dumps(mapping, indent=1) + "\n")
    return out


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A deep copy of ChatTTS's ``Config`` with nested fields replaced (dataclasses or dicts)."""
    config = copy.deepcopy(config)

    def merge(obj: Any, values: dict[str, Any], where: str) -> None:
        for key, value in values.items():
            if not hasattr(obj, key):
                raise ConfigError(f"{where}: ChatTTS config has no field {key!r}")
            current = getattr(obj, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                merge(current, value, f"{where}.{key}")
            else:
                setattr(obj, key, value)

    merge(config, overrides, OVERRIDES_FILE)
    return config


def save_speaker(path: Path, speaker: str) -> Path:
    """Write a ChatTTS speaker string: ``.pt`` as a float16 tensor, anything else as text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        import torch
        from ChatTTS.model.speaker import Speaker

        torch.save(torch.from_numpy(Speaker._decode(speaker)), path)
    else:
        path.write_text(speaker + "\n", encoding="utf-8")
    return path


def load_speaker(path: Path) -> str:
    """A ChatTTS speaker string from a ``.txt`` or ``.pt`` file; InputError when unusable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"ChatTTS speaker file {path} does not exist")
    try:
        if path.suffix == ".pt":
            import torch
            from ChatTTS.model.speaker import Speaker

            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, str):
                return data
            if not isinstance(data, torch.Tensor) or data.ndim != 1:
                raise ValueError("not a 1-D speaker tensor")
            return str(Speaker._encode(data))
        text = path.read_text(encoding="utf-8").strip()
        from ChatTTS.model.speaker import Speaker

        Speaker._decode(text)  # validates
        return text
    except (OSError, ValueError, RuntimeError, UnicodeDecodeError) as err:
        raise InputError(f"ChatTTS speaker file {path} cannot be read: {err}") from None
    except Exception as err:  # lzma/b14 decode errors of a damaged string
        raise InputError(f"ChatTTS speaker file {path} is not a ChatTTS speaker: {err}") from None


def speed_prompt(speed: float) -> str:
    """ChatTTS's ``[speed_N]`` (0..9, 5 = normal) for a speed factor (1.0 = normal)."""
    return f"[speed_{max(0, min(9, round(5 * speed)))}]"


# ----------------------------------------------------------------------------- engine


class ChatTTSEngine:
    """ChatTTS behind the TTSEngine interface; one synthesis at a time per engine."""

    name = "chattts"

    def __init__(self, cfg: Config, device: DeviceChoice) -> None:
        self.cfg = cfg
        self.device = device
        self._chat: Any = None
        self._model_dir: Path | None = None
        self._lock = threading.Lock()
        self._busy: asyncio.Lock | None = None
        self._default_speaker: str | None = None

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def speakers_dir(self) -> Path:
        return self.cfg.data_dir() / "speakers" / "chattts"

    def voices(self) -> list[str]:
        """Saved speaker files (``<data dir>/speakers/chattts``) plus the configured one."""
        found = sorted(str(p) for p in self.speakers_dir.glob("*") if p.suffix in {".pt", ".txt"})
        conf = self.cfg.tts.chattts.speaker or self.cfg.tts.voice
        return ([conf] if conf and conf not in found else []) + found

    # ------------------------------------------------------------------ loading
    def model_dir(self) -> Path:
        """The model folder, with every asset file present; ModelNotAvailable otherwise."""
        name = self.cfg.tts.chattts.model
        root = registry_for(self.cfg).resolve(name, kind=KIND).path
        missing = [rel for rel in ASSET_FILES if not (root / rel).is_file()]
        if missing:
            raise ModelNotAvailable(
                f"ChatTTS folder {root} lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''};"
                " put the 2Noise/ChatTTS release there (see docs/expressive-tts.md)"
            )
        return root

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        with self._lock:
            if self._chat is not None:
                return self._chat
            if missing_dependency():
                raise ModelNotAvailable(f"ChatTTS is not installed; install it with: {INSTALL}")
            root = self.model_dir()
            from voice.tts.torchaudio_compat import ensure_torchaudio

            ensure_torchaudio()
            import ChatTTS
            import torch

            chat = ChatTTS.Chat(logging.getLogger("ChatTTS"))
            over = root / OVERRIDES_FILE
            if over.is_file():
                try:
                    chat.config = apply_overrides(chat.config, json.loads(over.read_text()))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{over} is not valid JSON: {err}") from None
            ccfg = self.cfg.tts.chattts
            if ccfg.sha256_map:
                try:
                    chat.sha256_map = json.loads(Path(ccfg.sha256_map).expanduser().read_text())
                except (OSError, json.JSONDecodeError) as err:
                    raise ConfigError(f"tts.chattts.sha256_map {ccfg.sha256_map}: {err}") from None
            ok = chat.load(
                source="custom", custom_path=str(root), device=torch.device(self.device.device), compile=False
            )
            if not ok:
                raise ModelNotAvailable(
                    f"ChatTTS could not load {root}: its files failed ChatTTS's sha256 check or did not"
                    " load (for weights other than the official release set tts.chattts.sha256_map)"
                )
            self._chat, self._model_dir = chat, root
            log.info("ChatTTS loaded from %s on %s", root, self.device.device)
            return chat

    # ------------------------------------------------------------------ speakers
    def sample_speaker(self, seed: int | None = None) -> str:
        """A random speaker (a ChatTTS speaker string), reproducible for a given seed."""
        import torch

        chat = self._load()
        if seed is None:
            return str(chat.sample_random_speaker())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return str(chat.sample_random_speaker())

    def resolve_speaker(self, voice: str | None) -> str:
        ccfg = self.cfg.tts.chattts
        voice = voice or self.cfg.tts.voice or ccfg.speaker
        if voice is None:
            if ccfg.seed is not None:
                return self.sample_speaker(ccfg.seed)
            if self._default_speaker is None:
                self._default_speaker = self.sample_speaker()
            return self._default_speaker
        if voice.startswith("seed:"):
            try:
                return self.sample_speaker(int(voice[5:]))
            except ValueError:
                raise InputError(f"ChatTTS voice {voice!r}: seed must be an integer") from None
        return load_speaker(Path(voice))

    # ------------------------------------------------------------------ synthesis
    def _params(self, chat: Any, speaker: str, speed: float | None) -> tuple[Any, Any]:
        ccfg = self.cfg.tts.chattts
        speed = self.cfg.tts.speed if speed is None else speed
        if not speed or speed <= 0:
            raise InputError(f"speed must be a positive number, not {speed!r}")
        prompt = ccfg.prompt if ccfg.prompt is not None else speed_prompt(speed)
        code = chat.InferCodeParams(
            prompt=prompt, spk_emb=speaker, temperature=ccfg.temperature, top_P=ccfg.top_p,
            top_K=ccfg.top_k, max_new_token=ccfg.max_new_tokens, min_new_token=ccfg.min_new_tokens,
            stream_batch=ccfg.stream_batch,
            show_tqdm=False,
        )
        refine = chat.RefineTextParams(
            prompt=ccfg.refine_prompt or "", show_tqdm=False, max_new_token=min(384, ccfg.max_new_tokens)
        )
        return code, refine

    def _pieces(self, chat: Any, sentence: str, code: Any, refine: Any) -> Generator[np.ndarray, None, None]:
        gen = chat.infer(
            sentence, stream=True, skip_refine_text=not self.cfg.tts.chattts.refine_text, split_text=False,
            params_refine_text=refine, params_infer_code=code,
        )
        for wavs in gen:
            arr = np.asarray(wavs[0] if len(wavs) else [], dtype=np.float32).reshape(-1)
            if arr.size:
                yield arr

    async def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float | None = None,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioChunk]:
        """ChatTTS's streaming mode, sentence by sentence: several chunks per sentence (the first
        carries the sentence's text, the rest ""). Cancel stops between chunks and also
        interrupts ChatTTS's own generation loop."""
        chat = self._chat or await asyncio.to_thread(self._load)
        speaker = await asyncio.to_thread(self.resolve_speaker, voice)
        code, refine = self._params(chat, speaker, speed)
        if self._busy is None:
            self._busy = asyncio.Lock()
        index = 0
        async with self._busy:
            for sentence in utterances(text, self.cfg.tts.max_sentence_chars):
                if cancel is not None and cancel.cancelled:
                    return
                pieces = self._pieces(chat, sentence, code, refine)
                first = True
                step: asyncio.Future[np.ndarray | None] | None = None
                try:
                    while True:
                        step = asyncio.ensure_future(asyncio.to_thread(next, pieces, None))
                        piece = await self._wait(chat, step, cancel)
                        step = None
                        if piece is None or (cancel is not None and cancel.cancelled):
                            break
                        yield AudioChunk(piece, SAMPLE_RATE, sentence if first else "", index)
                        first = False
                        index += 1
                        if cancel is not None and cancel.cancelled:
                            break
                finally:
                    # Closed or cancelled mid-step: stop ChatTTS and let the step finish before
                    # closing its generator (a running generator cannot be closed).
                    if step is not None and not step.done():
                        chat.interrupt()
                        with contextlib.suppress(BaseException):
                            await step
                    await asyncio.to_thread(pieces.close)
                if cancel is not None and cancel.cancelled:
                    return

    @staticmethod
    async def _wait(
        chat: Any, step: asyncio.Future[np.ndarray | None], cancel: CancelToken | None
    ) -> np.ndarray | None:
        """The step's result; a cancel during the wait calls ChatTTS's interrupt()."""
        interrupted = False
        while not step.done():
            await asyncio.wait({step}, timeout=_POLL_S)
            if not interrupted and cancel is not None and cancel.cancelled:
                chat.interrupt()
                interrupted = True
        return step.result()
