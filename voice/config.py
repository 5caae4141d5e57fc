"""Typed configuration: built-in defaults < TOML file < ``VOICE_*`` environment < flags.

Every section is a dataclass whose field docstrings (the ``#:`` comments) document the key.
``None`` means "the engine's own default". Environment variables use a double underscore
between levels: ``VOICE_ASR__MODEL=whisper-base``, ``VOICE_TTS__PIPER__LENGTH_SCALE=1.1``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voice.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]

ENV_PREFIX = "VOICE_"


@dataclass
class GeneralConfig:
    #: Where knowledge bases and other user data live. Default: $XDG_DATA_HOME/voice.
    data_dir: str | None = None
    #: Where assembled model files are cached. Default: $XDG_CACHE_HOME/voice.
    cache_dir: str | None = None
    #: Logging level: debug, info, warning, error.
    log_level: str = "warning"
    #: Allow model downloads from a hub when a model is not installed locally.
    allow_download: bool = False


@dataclass
class AudioConfig:
    #: Microphone by name (substring) or index; None = the system default.
    input_device: str | None = None
    #: Speaker by name (substring) or index; None = the system default.
    output_device: str | None = None
    #: Sample rate the pipeline works in (VAD and ASR want 16000).
    sample_rate: int = 16000
    #: Frame length in milliseconds delivered by the microphone stream.
    frame_ms: int = 32
    #: Frames buffered between the microphone callback and the pipeline before dropping.
    max_queued_frames: int = 256


@dataclass
class VadConfig:
    #: Speech probability at or above which a frame counts as speech.
    threshold: float = 0.5
    #: Probability below which a frame counts as silence (hysteresis); None = threshold - 0.15.
    neg_threshold: float | None = None
    #: Speech must last this long before a turn starts (ms).
    min_speech_ms: int = 250
    #: While a start is being confirmed, dips below neg_threshold this short (ms) pause the count
    #: instead of starting over: the gaps between short words, and word edges that echo
    #: cancellation clips when the user talks over the assistant. 0 = any dip starts over.
    start_gap_ms: int = 96
    #: Silence hang-over: speech ends after this much silence (ms).
    min_silence_ms: int = 600
    #: Audio kept from before the detected start (ms).
    pre_roll_ms: int = 300
    #: An utterance is cut after this many seconds.
    max_speech_s: float = 30.0


@dataclass
class AsrConfig:
    #: Registry name or path of a faster-whisper (CTranslate2) model folder.
    model: str = "whisper-tiny.en"
    #: auto picks cuda only when a real warm-up on it works.
    device: Device = "auto"
    #: CTranslate2 compute type; None = int8 on CPU, float16 on CUDA.
    compute_type: str | None = None
    #: CPU threads for inference; 0 = the number of cores.
    cpu_threads: int = 0
    #: Language code such as "en"; None = detect (multilingual models only).
    language: str | None = None
    #: Beam size for live turns (1 = greedy, lowest latency).
    live_beam_size: int = 1
    #: Beam size for files (accuracy first).
    file_beam_size: int = 5
    #: Encoder window (s) for live turns: faster-whisper pads every utterance to 30 s; an utterance
    #: is encoded over max(this, its length + 1 s) instead when that is under 30 s (30 = stock).
    #: 10 s: same or better WER on the 14 test clips, 2.3x faster with tiny.en on CPU; on 60 short
    #: Piper-spoken questions WER 10.4 % vs 9.4 % at 30 s (README); windows under ~10 s made
    #: tiny.en repeat itself on 1-2 s clips (docs/server.md, scripts/bench_asr.py --window).
    live_window_s: float = 10.0
    #: The same for files (30 = stock: with beam search a 10 s window cost one word on the clips).
    file_window_s: float = 30.0


@dataclass
class PiperConfig:
    #: Registry name or path of a Piper .onnx voice (its .onnx.json beside it).
    voice: str = "piper-joe-medium"
    #: Speaker id for multi-speaker voices.
    speaker_id: int | None = None
    #: Speaking rate: >1 slower, <1 faster; None = the voice's default.
    length_scale: float | None = None
    #: Generator noise; None = the voice's default.
    noise_scale: float | None = None
    #: Phoneme width noise; None = the voice's default.
    noise_w_scale: float | None = None
    #: ONNX Runtime threads per loaded voice; 0 = its default (all cores).
    threads: int = 0


@dataclass
class ChatTTSConfig:
    #: Registry name or path of a folder in ChatTTS's custom layout (asset/...).
    model: str = "chattts"
    #: Speaker file (.pt or .txt embedding) for a stable voice; None = sample one from seed.
    speaker: str | None = None
    #: Seed used to sample a speaker when none is given.
    seed: int | None = None
    #: Run ChatTTS's text refinement (adds oral-style tokens) before synthesis.
    refine_text: bool = False
    #: Sampling temperature.
    temperature: float = 0.3
    top_p: float = 0.7
    top_k: int = 20
    #: Prosody prompt such as "[speed_5]"; None = the engine default ("[speed_5]", or from tts.speed).
    prompt: str | None = None
    #: Refinement prosody prompt, e.g. "[oral_2][laugh_0][break_6]" (used when refine_text is on).
    refine_prompt: str | None = None
    #: Most audio tokens per sentence (ChatTTS's max_new_token; about 21 tokens per second).
    max_new_tokens: int = 2048
    #: Fewest audio tokens per sentence before ChatTTS may stop (its min_new_token).
    min_new_tokens: int = 0
    #: Audio tokens per streamed piece (ChatTTS's stream_batch).
    stream_batch: int = 24
    #: JSON sha256 map in ChatTTS's own format, for weights other than its official release;
    #: None = ChatTTS's built-in map (see docs/expressive-tts.md).
    sha256_map: str | None = None


@dataclass
class ChatterboxConfig:
    #: Registry name or path of a folder with ve/t3_cfg/s3gen safetensors and tokenizer.json.
    model: str = "chatterbox"
    #: "standard" or "turbo".
    variant: str = "standard"
    #: Reference audio file to clone; None = the built-in conditionals (conds.pt).
    reference_audio: str | None = None
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8


@dataclass
class ChunkerConfig:
    #: The first piece is spoken as soon as a clause boundary follows this many characters.
    min_first_chars: int = 20
    #: If no clause boundary came yet, the first piece goes at a word boundary once it has this
    #: many words (speech starts sooner; the break may fall mid-phrase). 0 = wait for a boundary.
    first_words: int = 8
    #: Later pieces are whole sentences of at least this many characters.
    min_chars: int = 40
    #: A piece is cut at a word boundary once it grows past this many characters.
    max_chars: int = 300


@dataclass
class TtsConfig:
    #: piper, chattts or chatterbox.
    engine: str = "piper"
    #: Voice name for the engine (Piper: registry name or path); None = engine default.
    voice: str | None = None
    device: Device = "auto"
    #: If an expressive engine has no GPU, use Piper instead (with a warning).
    fallback_to_piper: bool = True
    #: Speed factor (1.0 = normal).
    speed: float = 1.0
    piper: PiperConfig = field(default_factory=PiperConfig)
    chattts: ChatTTSConfig = field(default_factory=ChatTTSConfig)
    chatterbox: ChatterboxConfig = field(default_factory=ChatterboxConfig)
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)


@dataclass
class EmbeddedLlmConfig:
    #: Registry name or path of a GGUF file.
    model: str = "qwen2.5-0.5b-instruct"
    #: Context window in tokens.
    n_ctx: int = 4096
    #: Layers on the GPU when CUDA works; -1 = all, 0 = CPU only.
    n_gpu_layers: int = -1
    #: CPU threads; 0 = the number of cores.
    threads: int = 0
    device: Device = "auto"
    #: Parallel request slots (sessions answered at once); each may use the whole context.
    parallel: int = 2
    #: Seconds to wait for the server to become healthy.
    start_timeout_s: float = 120.0


@dataclass
class LlmConfig:
    #: embedded, ollama, llamacpp, vllm, openai or gemini.
    backend: str = "embedded"
    #: Override the preset's base URL.
    base_url: str | None = None
    #: Override the preset's model name.
    model: str | None = None
    #: Name of the environment variable holding the API key (never the key itself).
    api_key_env: str | None = None
    #: Seconds before a request fails.
    timeout_s: float = 30.0
    max_retries: int = 1
    temperature: float = 0.3
    max_tokens: int = 200
    #: System prompt; None = the built-in prompt written for speech.
    system_prompt: str | None = None
    #: Token budget for conversation memory.
    memory_tokens: int = 1024
    #: Built-in tools to offer the model: current_time, search_knowledge.
    tools: list[str] = field(default_factory=list)
    #: A custom chain as "module:attribute" (anything with ``astream``); None = built-in.
    chain: str | None = None
    embedded: EmbeddedLlmConfig = field(default_factory=EmbeddedLlmConfig)


@dataclass
class RagConfig:
    #: Retrieve passages from the knowledge base for each question.
    enabled: bool = True
    #: Knowledge base folder; None = <data_dir>/kb.
    kb_dir: str | None = None
    #: Qdrant server URL; None = embedded local mode on disk.
    qdrant_url: str | None = None
    #: Registry name of the sentence-embedding model.
    embedder: str = "minilm-l6-int8"
    #: Where the embedder runs (onnxruntime); auto picks cuda only when it works.
    embedder_device: Device = "auto"
    #: Qdrant collection name (matters when several knowledge bases share one server).
    collection: str = "voice_kb"
    #: Retrieval unit length in characters: records (a CSV row, a paragraph, a section's list)
    #: longer than this are cut on sentence boundaries; short records of one section are packed
    #: up to it. Changing it applies to files ingested afterwards (voice ingest --rebuild).
    chunk_size: int = 240
    #: Characters of trailing sentences repeated at the start of the next unit (0: neighbours
    #: are added at query time instead, see context_tokens).
    chunk_overlap: int = 0
    #: At most this many units (before widening to neighbours) go into the prompt.
    top_k: int = 3
    #: Cosine similarity below which a unit is not used, unless its lexical score reaches
    #: lexical_threshold.
    score_threshold: float = 0.35
    #: BM25 score (Qdrant IDF scale) from which a unit is used whatever its cosine similarity:
    #: about two rare words (names, codes, numbers) shared with the question. On the evaluation
    #: set (2,661 units) unrelated questions reach at most 11, the units holding the answers 7
    #: to 42 (all of them also above score_threshold). 0 = the lexical side only reorders.
    lexical_threshold: float = field(default=15.0, metadata={"range": (0.0, None)})
    #: Units whose fused score is below this fraction of the best unit's are dropped (0..1; 0 =
    #: keep all that pass the thresholds).
    relative_cut: float = field(default=0.55, metadata={"range": (0.0, 1.0)})
    #: Context budget in tokens (estimated as characters / 4, headers included): the prompt gets
    #: the best units in fused order while they fit, then their neighbours in the same section
    #: while they fit. At least one unit is always given. 20..4000.
    context_tokens: int = field(default=150, metadata={"range": (20, 4000)})
    #: Candidates taken from each side (dense and lexical) before fusion. 1..500.
    candidates: int = field(default=30, metadata={"range": (1, 500)})
    #: Files larger than this are skipped on ingest (MB).
    max_file_mb: float = 20.0


@dataclass
class PipelineConfig:
    #: Speak the assistant's answer (false = text only).
    speak: bool = True
    #: Let the user interrupt the assistant by speaking.
    barge_in: bool = True
    #: While an answer is under way, speech must last this long (ms, instead of
    #: vad.min_speech_ms) to interrupt it: a cough, a short "mm-hm" or a burst of echo residual
    #: does not cut the assistant off. The stop itself still follows the decision at once.
    barge_in_min_speech_ms: int = 400
    #: Headphones: the microphone stays open while the assistant speaks.
    headphones: bool = False
    #: End of turn by VAD ("vad") or push-to-talk ("ptt").
    turn_detection: str = "vad"
    #: Bounded queue size between stages.
    queue_size: int = 64
    #: Cancel the echo of the assistant's voice in the microphone signal (WebRTC AEC3 via the
    #: pywebrtc-audio package); lets barge-in work on loudspeakers. Off: the microphone is
    #: ignored while the assistant speaks unless headphones is true.
    echo_cancel: bool = False
    #: Without headphones or echo cancellation, keep the microphone closed this long after the
    #: assistant's audio ends (room echo dies away), in ms.
    echo_tail_ms: int = 250
    #: Start transcribing when silence begins (during the VAD hang-over); discarded if speech resumes.
    early_transcribe: bool = True
    #: With echo cancellation, while the assistant speaks: a microphone frame whose cleaned
    #: energy is this many dB below the raw one is residual echo and reaches the VAD as silence
    #: (someone talking over the assistant keeps most of the energy). 0 = off.
    echo_suppress_db: float = 10.0


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    #: Environment variable holding the bearer token (required off loopback).
    token_env: str = "VOICE_SERVER_TOKEN"
    #: Allowed browser Origins; empty = same host only.
    allowed_origins: list[str] = field(default_factory=list)
    max_sessions: int = 16
    max_message_bytes: int = 1_048_576
    idle_timeout_s: float = 300.0
    #: llama.cpp slots for the embedded LLM under `voice serve` (answers decoded together,
    #: continuous batching); 0 = llm.embedded.parallel.
    llm_slots: int = 8
    #: Threads for blocking inference (ASR, TTS) shared by all sessions; 0 = 4 + 2 x max_sessions.
    worker_threads: int = 0


@dataclass
class Config:
    """The whole effective configuration."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def data_dir(self) -> Path:
        if self.general.data_dir:
            return Path(self.general.data_dir).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "voice"

    def cache_dir(self) -> Path:
        if self.general.cache_dir:
            return Path(self.general.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "voice"

    def kb_dir(self) -> Path:
        return Path(self.rag.kb_dir).expanduser() if self.rag.kb_dir else self.data_dir() / "kb"


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"{source}: {key} must not be empty")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{source}: {key} = {value!r} is not one of {choices}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    raise ConfigError(f"{source}: {key} has unsupported type {_type_name(tp)}")


def _merge(obj: Any, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Apply a nested mapping onto dataclass ``obj`` in place, checking keys and types."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {known})")
        tp = hints[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{dotted}' must be a table")
            _merge(current, value, source, f"{dotted}.")
        else:
            setattr(obj, key, _coerce(value, tp, dotted, source))


def _parse_scalar(text: str) -> Any:
    """Read an environment or flag value as TOML when it parses, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``VOICE_SECTION__KEY=value`` pairs as a dotted mapping (values parsed as TOML)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = _parse_scalar(value)
    return out


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """``--set section.key=value`` flags as a dotted mapping."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected section.key=value")
        out[key.strip()] = _parse_scalar(value.strip())
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config. ``overrides`` are dotted keys from command-line flags."""
    cfg = Config()
    if path is not None:
        p = Path(path).expanduser()
        _merge(cfg, read_toml(p), str(p))
    env = env_overrides(os.environ if environ is None else environ)
    if env:
        _merge(cfg, _nest(env), "environment (VOICE_*)")
    if overrides:
        flags = {k: v for k, v in overrides.items() if v is not None}
        _merge(cfg, _nest(flags), "command line")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value))


def to_toml(cfg: Config) -> str:
    """The config as TOML; keys whose value is None are written as comments."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        for key, value in scalars.items():
            if value is None:
                lines.append(f"# {key} = (engine default)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{name}.{key}")

    for section, table in to_dict(cfg).items():
        emit(table, section)
    return "\n".join(lines).rstrip() + "\n"
