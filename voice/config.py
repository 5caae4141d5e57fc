"""Typed configuration: built-in defaults < TOML file < ``VOICE_*`` environment < flags.

Every section is a dataclass whose field docstrings (the ``#:`` comments) document the key.
``None`` means "the engine's own default". Environment variables use a double underscore
between levels: ``VOICE_ASR__MODEL=whisper-base``, ``VOICE_TTS__PIPER__LENGTH_SCALE=1.1``.
"""

from __future__ import annotations

import dataclasses
import math
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
LogLevel = Literal["debug", "info", "warning", "error"]
ComputeType = Literal["default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                      "float16", "bfloat16", "float32"]
#: Must match voice.tts.base.ENGINES, voice.llm.backends.PRESETS and voice.llm.tools.BUILTIN_TOOLS
#: (tests/test_config.py checks).
TtsEngine = Literal["piper", "chattts", "chatterbox"]
LlmBackend = Literal["embedded", "ollama", "llamacpp", "vllm", "openai", "gemini"]
LlmTool = Literal["current_time", "search_knowledge"]
Speculative = Literal["off", "ngram", "draft"]
EndOfTurn = Literal["silence", "smart_turn"]

ENV_PREFIX = "VOICE_"


@dataclass
class GeneralConfig:
    #: Where knowledge bases and other user data live. Default: $XDG_DATA_HOME/voice.
    data_dir: str | None = None
    #: Where assembled model files are cached. Default: $XDG_CACHE_HOME/voice.
    cache_dir: str | None = None
    #: Logging level: debug, info, warning or error.
    log_level: LogLevel = "warning"
    #: Allow model downloads from a hub when a model is not installed locally.
    allow_download: bool = False


@dataclass
class AudioConfig:
    #: Microphone by name (substring) or index; None = the system default.
    input_device: str | None = None
    #: Speaker by name (substring) or index; None = the system default.
    output_device: str | None = None
    #: Sample rate the pipeline works in (VAD and ASR want 16000); 8000 to 48000.
    sample_rate: int = field(default=16000, metadata={"range": (8000, 48000)})
    #: Frame length in milliseconds delivered by the microphone stream; 10 to 100.
    frame_ms: int = field(default=32, metadata={"range": (10, 100)})
    #: Frames buffered between the microphone callback and the pipeline before dropping; 1 to 100000.
    max_queued_frames: int = field(default=256, metadata={"range": (1, 100000)})


@dataclass
class VadConfig:
    #: Speech probability at or above which a frame counts as speech; 0 to 1.
    threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    #: Probability below which a frame counts as silence (hysteresis); 0 to vad.threshold;
    #: None = threshold - 0.15.
    neg_threshold: float | None = field(default=None, metadata={"range": (0.0, 1.0)})
    #: Speech must last this long before a turn starts (ms); 0 to 10000.
    min_speech_ms: int = field(default=250, metadata={"range": (0, 10000)})
    #: While a start is being confirmed, dips below neg_threshold this short (ms) pause the count
    #: instead of starting over: the gaps between short words, and word edges that echo
    #: cancellation clips when the user talks over the assistant. 0 = any dip starts over; at most 10000.
    start_gap_ms: int = field(default=96, metadata={"range": (0, 10000)})
    #: Silence hang-over: speech ends after this much silence (ms); 0 to 60000.
    min_silence_ms: int = field(default=600, metadata={"range": (0, 60000)})
    #: What ends a turn: "silence" (min_silence_ms of it) or "smart_turn" (the Smart Turn v3.2
    #: model, pip install --no-deps pipecat-ai==1.14.0, hears the utterance when silence starts; if
    #: it says complete, the turn ends after smart_turn_silence_ms, else after min_silence_ms).
    #: "silence" by default: on the test clips it called 10 of 26 mid-sentence stops complete (README).
    end_of_turn: EndOfTurn = "silence"
    #: smart_turn: the hang-over when the model says complete (ms); the turn ends once the model has
    #: answered (~160 ms on one core) and never later than min_silence_ms; 0 to 60000.
    smart_turn_silence_ms: int = field(default=300, metadata={"range": (0, 60000)})
    #: smart_turn: the model's probability of "complete" at or above which it counts; 0 to 1.
    smart_turn_threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    #: Audio kept from before the detected start (ms); 0 to 10000.
    pre_roll_ms: int = field(default=300, metadata={"range": (0, 10000)})
    #: An utterance is cut after this many seconds; 1 to 3600.
    max_speech_s: float = field(default=30.0, metadata={"range": (1.0, 3600.0)})


@dataclass
class AsrConfig:
    #: Registry name or path of a faster-whisper (CTranslate2) model folder.
    model: str = "whisper-tiny.en"
    #: auto picks cuda only when a real warm-up on it works.
    device: Device = "auto"
    #: CTranslate2 compute type (default, auto, int8, int8_float32, int8_float16, int8_bfloat16,
    #: int16, float16, bfloat16, float32); None = int8 on CPU, float16 on CUDA.
    compute_type: ComputeType | None = None
    #: CPU threads for inference; 0 = the number of cores; at most 1024.
    cpu_threads: int = field(default=0, metadata={"range": (0, 1024)})
    #: Language code such as "en"; None = detect (multilingual models only).
    language: str | None = None
    #: Beam size for live turns (1 = greedy, lowest latency); 1 to 64.
    live_beam_size: int = field(default=1, metadata={"range": (1, 64)})
    #: Beam size for files (accuracy first); 1 to 64.
    file_beam_size: int = field(default=5, metadata={"range": (1, 64)})
    #: Encoder window (s) for live turns: faster-whisper pads every utterance to 30 s; an utterance
    #: is encoded over max(this, its length + 1 s) instead when that is under 30 s (30 = stock).
    #: 10 s: same or better WER on the 14 test clips, 2.3x faster with tiny.en on CPU; on 60 short
    #: Piper-spoken questions WER 10.4 % vs 9.4 % at 30 s (README); windows under ~10 s made
    #: tiny.en repeat itself on 1-2 s clips (docs/server.md, scripts/bench_asr.py --window). 1 to 30.
    live_window_s: float = field(default=10.0, metadata={"range": (1.0, 30.0)})
    #: The same for files (30 = stock: with beam search a 10 s window cost one word on the clips).
    file_window_s: float = field(default=30.0, metadata={"range": (1.0, 30.0)})


@dataclass
class PiperConfig:
    #: Registry name or path of a Piper .onnx voice (its .onnx.json beside it).
    voice: str = "piper-joe-medium"
    #: Speaker id for multi-speaker voices; 0 to 100000.
    speaker_id: int | None = field(default=None, metadata={"range": (0, 100000)})
    #: Speaking rate: >1 slower, <1 faster; 0.1 to 10; None = the voice's default.
    length_scale: float | None = field(default=None, metadata={"range": (0.1, 10.0)})
    #: Generator noise, 0 to 2; None = the voice's default.
    noise_scale: float | None = field(default=None, metadata={"range": (0.0, 2.0)})
    #: Phoneme width noise, 0 to 2; None = the voice's default.
    noise_w_scale: float | None = field(default=None, metadata={"range": (0.0, 2.0)})
    #: ONNX Runtime threads per loaded voice; 0 = its default (all cores); at most 1024.
    threads: int = field(default=0, metadata={"range": (0, 1024)})
    #: ONNX Runtime's CPU memory arena. None: on for one user (chat, say, synth), off under
    #: `voice serve` and `voice wyoming`, where sessions synthesize at once: 8 concurrent
    #: 250-character sentences left RSS at 1.54-1.55 GB with it after they finished (it keeps
    #: every thread's peak) and 325-367 MB without, at about 1.2x the time (2-core CPU, loaded).
    cpu_mem_arena: bool | None = None
    #: Most phonemes Piper synthesizes in one call: a longer piece is split between words.
    #: Characters do not bound phonemes ("$999,999,999" is 12 characters and 60 phonemes: 300
    #: characters of such text make 1,511), and memory follows phonemes (about 1.3 MB each).
    #: 400: a 300-character piece of ordinary words (~350 phonemes) stays whole; 300 characters
    #: of "$999,999,999" peaked at 1,658 MB in one call, at 570 MB with this cap.
    max_phonemes: int = field(default=400, metadata={"range": (20, 10_000)})


@dataclass
class ChatTTSConfig:
    #: Registry name or path of a folder in ChatTTS's custom layout (asset/...).
    model: str = "chattts"
    #: Speaker file (.pt or .txt embedding) for a stable voice; None = sample one from seed.
    speaker: str | None = None
    #: Seed used to sample a speaker when none is given; 0 to 2**32 - 1.
    seed: int | None = field(default=None, metadata={"range": (0, 4294967295)})
    #: Run ChatTTS's text refinement (adds oral-style tokens) before synthesis.
    refine_text: bool = False
    #: Sampling temperature; 0.01 to 5.
    temperature: float = field(default=0.3, metadata={"range": (0.01, 5.0)})
    #: Nucleus sampling mass; 0.01 to 1.
    top_p: float = field(default=0.7, metadata={"range": (0.01, 1.0)})
    #: Tokens sampled from; 1 to 1000.
    top_k: int = field(default=20, metadata={"range": (1, 1000)})
    #: Prosody prompt such as "[speed_5]"; None = the engine default ("[speed_5]", or from tts.speed).
    prompt: str | None = None
    #: Refinement prosody prompt, e.g. "[oral_2][laugh_0][break_6]" (used when refine_text is on).
    refine_prompt: str | None = None
    #: Most audio tokens per sentence (ChatTTS's max_new_token; about 21 tokens per second); 1 to 4096.
    max_new_tokens: int = field(default=2048, metadata={"range": (1, 4096)})
    #: Fewest audio tokens per sentence before ChatTTS may stop (its min_new_token); 0 to max_new_tokens.
    min_new_tokens: int = field(default=0, metadata={"range": (0, 4096)})
    #: Audio tokens per streamed piece (ChatTTS's stream_batch); 1 to 4096.
    stream_batch: int = field(default=24, metadata={"range": (1, 4096)})
    #: JSON sha256 map in ChatTTS's own format, for weights other than its official release;
    #: None = ChatTTS's built-in map (see docs/expressive-tts.md).
    sha256_map: str | None = None


@dataclass
class ChatterboxConfig:
    #: Registry name or path of a folder with ve/t3_cfg/s3gen safetensors and tokenizer.json.
    model: str = "chatterbox"
    #: "standard" or "turbo".
    variant: Literal["standard", "turbo"] = "standard"
    #: Reference audio file to clone; None = the built-in conditionals (conds.pt).
    reference_audio: str | None = None
    #: Emotion exaggeration; 0 to 2.
    exaggeration: float = field(default=0.5, metadata={"range": (0.0, 2.0)})
    #: Classifier-free guidance weight; 0 to 1.
    cfg_weight: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    #: Sampling temperature; 0.05 to 5.
    temperature: float = field(default=0.8, metadata={"range": (0.05, 5.0)})


@dataclass
class ChunkerConfig:
    #: The first piece is spoken as soon as a clause boundary follows this many characters;
    #: 1 to max_chars.
    min_first_chars: int = field(default=8, metadata={"range": (1, 100000)})
    #: If no clause boundary came yet, the first piece goes at a word boundary once it has this
    #: many words (speech starts sooner; the break may fall mid-phrase). 0 = wait for a boundary;
    #: at most 1000. 5 (was 8): first sound 0.68x as long after the question, no playback stall
    #: in 16 grounded answers, but 14 of 16 first pieces end mid-phrase (scripts/bench_first_piece.py,
    #: README).
    first_words: int = field(default=5, metadata={"range": (0, 1000)})
    #: Later pieces are whole sentences of at least this many characters; 1 to max_chars.
    min_chars: int = field(default=40, metadata={"range": (1, 100000)})
    #: A piece is cut at a word boundary once it grows past this many characters; 10 to 100000.
    max_chars: int = field(default=300, metadata={"range": (10, 100000)})
    #: Most characters of one answer that are spoken (after markdown cleanup; the text itself is
    #: still shown in full). The piece that would cross it and everything after are dropped, with
    #: a warning in the log: an answer is cut at a sentence boundary (or where max_chars cut an
    #: over-long one). 4000 characters is about 4 minutes of speech.
    max_response_chars: int = field(default=4000, metadata={"range": (1, None)})


@dataclass
class TtsConfig:
    #: piper, chattts or chatterbox.
    engine: TtsEngine = "piper"
    #: Voice name for the engine (Piper: registry name or path); None = engine default.
    voice: str | None = None
    device: Device = "auto"
    #: If an expressive engine has no GPU, use Piper instead (with a warning).
    fallback_to_piper: bool = True
    #: Speed factor (1.0 = normal); 0.25 to 4.
    speed: float = field(default=1.0, metadata={"range": (0.25, 4.0)})
    #: Longest piece of text any engine synthesizes in one call (characters): a longer sentence
    #: is split at a clause boundary, else between words, else hard (one giant "word"). The
    #: memory of one call grows with its audio: Piper (joe-medium, CPU) peaks at about 150 MB +
    #: 1.3 MB per phoneme, i.e. 520 MB RSS for 300 characters of words, 720 MB for 400, 1.3 GB for
    #: 800 (24 GB for 15,000 without this cap). At speed 0.5 the audio, and the figure, doubles.
    #: 300 leaves 99.7 % of the sentences in this README and docs and ~90 % of those in legal
    #: prose (GPL, Apache licences) whole, and matches tts.chunker.max_chars.
    max_sentence_chars: int = field(default=300, metadata={"range": (20, 5000)})
    #: Longest text `voice say` takes (characters, argument or stdin); longer is an error (exit 2).
    #: Also the longest `input` of POST /v1/audio/speech under `voice serve` (longer: 400).
    #: 50,000 characters is about 55 minutes of speech.
    max_say_chars: int = field(default=50_000, metadata={"range": (1, None)})
    #: Longest text of one `voice synth` row (characters): a longer row fails with this reason
    #: in the manifest, the other rows finish.
    max_synth_row_chars: int = field(default=50_000, metadata={"range": (1, None)})
    piper: PiperConfig = field(default_factory=PiperConfig)
    chattts: ChatTTSConfig = field(default_factory=ChatTTSConfig)
    chatterbox: ChatterboxConfig = field(default_factory=ChatterboxConfig)
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)


@dataclass
class EmbeddedLlmConfig:
    #: Registry name or path of a GGUF file. The default is the packaged Qwen2.5 0.5B with its
    #: Q5_0 tensors requantized to Q4_0 once, on first use (same accuracy on the evaluation set,
    #: prefill 1.45x and decode 1.29x faster on an AVX2 CPU: README).
    model: str = "qwen2.5-0.5b-instruct-q4_0"
    #: Context window in tokens; 128 to 1048576.
    n_ctx: int = field(default=4096, metadata={"range": (128, 1048576)})
    #: Layers on the GPU when CUDA works; -1 = all, 0 = CPU only; at most 10000.
    n_gpu_layers: int = field(default=-1, metadata={"range": (-1, 10000)})
    #: CPU threads; 0 = the number of cores; at most 1024.
    threads: int = field(default=0, metadata={"range": (0, 1024)})
    device: Device = "auto"
    #: Parallel request slots (sessions answered at once); each may use the whole context; 1 to 256.
    parallel: int = field(default=2, metadata={"range": (1, 256)})
    #: Seconds to wait for the server to become healthy; 1 to 3600.
    start_timeout_s: float = field(default=120.0, metadata={"range": (1.0, 3600.0)})
    #: Speculative decoding: off; ngram (drafts copied from the prompt's own token history,
    #: no second model); draft (a small model of the same family drafts, see draft_model).
    #: README gives the figures behind the default.
    speculative: Speculative = "off"
    #: Registry name or path of the draft model for speculative = "draft"; it must share the
    #: main model's tokenizer (Qwen2.5 0.5B drafting for 1.5B).
    draft_model: str = "qwen2.5-0.5b-instruct"
    #: Most tokens drafted per step (draft model or n-gram match); 1 to 64.
    draft_max: int = field(default=16, metadata={"range": (1, 64)})
    #: llama.cpp's host-memory prompt cache (MiB): earlier prompts kept beside the slots, so a
    #: prompt that starts like an earlier one reuses its prefix; -1 = no limit, 0 = off (the
    #: slots' own cache stays). At most 1048576.
    cache_ram_mib: int = field(default=8192, metadata={"range": (-1, 1048576)})
    #: Prefill the fixed start of the prompt (system prompt, tools, context header) into each
    #: conversation's slot when it starts (voice chat, voice serve), in the background, so the
    #: first turn evaluates only its own tokens.
    warm_up: bool = True


@dataclass
class LlmConfig:
    #: embedded, ollama, llamacpp, vllm, openai or gemini.
    backend: LlmBackend = "embedded"
    #: Override the preset's base URL.
    base_url: str | None = None
    #: Override the preset's model name.
    model: str | None = None
    #: Name of the environment variable holding the API key (never the key itself).
    api_key_env: str | None = None
    #: Seconds before a request fails; 0.1 to 3600.
    timeout_s: float = field(default=30.0, metadata={"range": (0.1, 3600.0)})
    #: Retries after a failed request; 0 to 10.
    max_retries: int = field(default=1, metadata={"range": (0, 10)})
    #: Sampling temperature; 0 to 2.
    temperature: float = field(default=0.3, metadata={"range": (0.0, 2.0)})
    #: Most tokens per answer; 1 to 131072.
    max_tokens: int = field(default=200, metadata={"range": (1, 131072)})
    #: System prompt; None = the built-in prompt written for speech. At most
    #: max_instructions_chars() characters (also the limit of realtime session instructions).
    system_prompt: str | None = None
    #: Token budget for conversation memory; 0 to 1048576.
    memory_tokens: int = field(default=1024, metadata={"range": (0, 1048576)})
    #: Built-in tools to offer the model: current_time, search_knowledge.
    tools: list[LlmTool] = field(default_factory=list)
    #: A custom chain as "module:attribute" (anything with ``astream``); None = built-in.
    chain: str | None = None
    embedded: EmbeddedLlmConfig = field(default_factory=EmbeddedLlmConfig)

    def max_instructions_chars(self) -> int:
        """Longest system prompt / session instructions: one character per token of
        ``embedded.n_ctx`` (the context assumed for every backend), i.e. about a quarter of the
        context at ~4 characters per English token, leaving the rest to memory, passages and
        the answer. 4096 by default."""
        return max(256, self.embedded.n_ctx)


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
    #: up to it. Changing it applies to files ingested afterwards (voice ingest --rebuild). 50 to 100000.
    chunk_size: int = field(default=240, metadata={"range": (50, 100000)})
    #: Characters of trailing sentences repeated at the start of the next unit (0: neighbours
    #: are added at query time instead, see context_tokens); under chunk_size.
    chunk_overlap: int = field(default=0, metadata={"range": (0, 100000)})
    #: At most this many units (before widening to neighbours) go into the prompt; 1 to 100.
    top_k: int = field(default=3, metadata={"range": (1, 100)})
    #: Cosine similarity below which a unit is not used, unless its lexical score reaches
    #: lexical_threshold; -1 to 1.
    score_threshold: float = field(default=0.35, metadata={"range": (-1.0, 1.0)})
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
    #: Files larger than this are skipped on ingest (MB); 0 to 10240.
    max_file_mb: float = field(default=20.0, metadata={"range": (0.0, 10240.0)})


@dataclass
class PipelineConfig:
    #: Speak the assistant's answer (false = text only).
    speak: bool = True
    #: Let the user interrupt the assistant by speaking.
    barge_in: bool = True
    #: While an answer is under way, speech must last this long (ms, instead of
    #: vad.min_speech_ms) to interrupt it: a cough, a short "mm-hm" or a burst of echo residual
    #: does not cut the assistant off. The stop itself still follows the decision at once. 0 to 10000.
    barge_in_min_speech_ms: int = field(default=400, metadata={"range": (0, 10000)})
    #: Headphones: the microphone stays open while the assistant speaks.
    headphones: bool = False
    #: End of turn by VAD ("vad") or push-to-talk ("ptt").
    turn_detection: Literal["vad", "ptt"] = "vad"
    #: Bounded queue size between stages; 1 to 100000.
    queue_size: int = field(default=64, metadata={"range": (1, 100000)})
    #: Cancel the echo of the assistant's voice in the microphone signal (WebRTC AEC3 via the
    #: pywebrtc-audio package); lets barge-in work on loudspeakers. Off: the microphone is
    #: ignored while the assistant speaks unless headphones is true.
    echo_cancel: bool = False
    #: Without headphones or echo cancellation, keep the microphone closed this long after the
    #: assistant's audio ends (room echo dies away), in ms; 0 to 10000.
    echo_tail_ms: int = field(default=250, metadata={"range": (0, 10000)})
    #: Start transcribing when silence begins (during the VAD hang-over); discarded if speech resumes.
    early_transcribe: bool = True
    #: Preemptive answers (needs early_transcribe and VAD turns): the early transcript starts the
    #: answer (retrieval, LLM, TTS) during the hang-over, held back until the hang-over confirms
    #: the turn; dropped unheard, and memory untouched, if the user speaks again. On: from
    #: silence p50 1.21 / 1.15 s against 1.42 / 1.53 s off, two quiet runs (docs/pipeline.md).
    preemptive: bool = True
    #: With echo cancellation, while the assistant speaks: a microphone frame whose cleaned
    #: energy is this many dB below the raw one is residual echo and reaches the VAD as silence
    #: (someone talking over the assistant keeps most of the energy). 0 = off; at most 100.
    echo_suppress_db: float = field(default=10.0, metadata={"range": (0.0, 100.0)})


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    #: TCP port; 0 = any free port; at most 65535.
    port: int = field(default=8765, metadata={"range": (0, 65535)})
    #: Environment variable holding the bearer token (required off loopback).
    token_env: str = "VOICE_SERVER_TOKEN"
    #: Host headers accepted (``name`` or ``name:port``; "*" = any). Empty = bound to loopback
    #: without a token: only 127.0.0.1, localhost and [::1] with the bound port (DNS-rebinding
    #: defence); otherwise any.
    allowed_hosts: list[str] = field(default_factory=list)
    #: Browser Origins accepted (``scheme://host[:port]``; "*" = any). Empty = ``http://`` plus an
    #: accepted Host (loopback names with the port on the default set-up; else the request's
    #: Host). The ``null`` Origin is refused unless listed.
    allowed_origins: list[str] = field(default_factory=list)
    #: Sessions served at once; 1 to 10000.
    max_sessions: int = field(default=16, metadata={"range": (1, 10000)})
    #: Largest WebSocket message (bytes); 1024 to 268435456.
    max_message_bytes: int = field(default=1048576, metadata={"range": (1024, 268435456)})
    #: Seconds without a client message (and no answer under way) before the session closes with
    #: 1001; 1 to 86400.
    idle_timeout_s: float = field(default=300.0, metadata={"range": (1.0, 86400.0)})
    #: Seconds the client may leave our writes unread (send buffer full) before the connection is
    #: closed: close frame best-effort, then the TCP connection aborted.
    send_timeout_s: float = field(default=20.0, metadata={"range": (0.1, 3600.0)})
    #: Most events (everything but audio) waiting for one client; one more closes with 1008.
    send_queue_events: int = field(default=1024, metadata={"range": (16, 1_000_000)})
    #: Most bytes waiting for one client, per kind: audio past it waits (TTS backpressure); an
    #: event past it closes the session with 1008. Also caps the socket's own write buffer.
    send_queue_bytes: int = field(default=2_097_152, metadata={"range": (65_536, 1 << 30)})
    #: SO_SNDBUF of each client socket (the kernel doubles it; 0 = the OS's autotuning, up to
    #: ~3 MB unread per client on Linux before a stalled reader is noticed).
    socket_send_buffer_bytes: int = field(default=131_072, metadata={"range": (0, 64 << 20)})
    #: Error events per second one client may cause on average (token bucket); past the burst
    #: the session closes with 1008.
    error_rate_per_s: float = field(default=50.0, metadata={"range": (0.0, None)})
    #: Error events one client may cause at once before the rate applies.
    error_burst: int = field(default=2000, metadata={"range": (1, None)})
    #: Seconds between keepalive pings; a pong must come within ping_timeout_s (else close 1011).
    ping_interval_s: float = field(default=20.0, metadata={"range": (0.1, 3600.0)})
    ping_timeout_s: float = field(default=20.0, metadata={"range": (0.1, 3600.0)})
    #: Seconds the closing handshake may take before the TCP connection is aborted.
    close_timeout_s: float = field(default=2.0, metadata={"range": (0.1, 60.0)})
    #: llama.cpp slots for the embedded LLM under `voice serve` (answers decoded together,
    #: continuous batching); 0 = llm.embedded.parallel; at most 256.
    llm_slots: int = field(default=8, metadata={"range": (0, 256)})
    #: Threads for blocking inference (ASR, TTS) shared by all sessions; 0 = 4 + 2 x max_sessions;
    #: at most 1024.
    worker_threads: int = field(default=0, metadata={"range": (0, 1024)})
    #: OpenAI audio API over HTTP (/v1/audio/*, /v1/models): requests served at once (1-1024);
    #: one more gets 429 (busy) with Retry-After.
    http_max_requests: int = field(default=8, metadata={"range": (1, 1024)})
    #: Largest request body in bytes (an upload to /v1/audio/transcriptions, a speech request);
    #: 1 KiB - 1 GiB, default 25 MiB (OpenAI's own limit). More gets 413.
    http_max_body_bytes: int = field(default=26_214_400, metadata={"range": (1024, 1 << 30)})
    #: Longest audio one transcription or translation takes, in seconds (1-86400); longer gets
    #: 400. Whisper is shared with the realtime sessions: a file holds it for its length times
    #: the real-time factor (about 0.1-0.5 with tiny.en on 2 CPU cores).
    http_max_audio_s: float = field(default=900.0, metadata={"range": (1.0, 86_400.0)})
    #: Longest text form field or JSON string other than the speech `input` (prompt, language,
    #: model, voice, ...), in characters (16 - 1,000,000); more gets 400. Speech `input` is bounded
    #: by tts.max_say_chars.
    http_max_field_chars: int = field(default=4096, metadata={"range": (16, 1_000_000)})
    #: Seconds a client may take to send a whole HTTP request (headers and body) from connecting
    #: (1-3600); a slower one is answered 408 and disconnected.
    http_request_timeout_s: float = field(default=120.0, metadata={"range": (1.0, 3600.0)})
    #: Seconds a client may leave an HTTP response unread (send buffer full) before the
    #: connection is aborted and its synthesis stopped (0.1-3600).
    http_send_timeout_s: float = field(default=20.0, metadata={"range": (0.1, 3600.0)})
    #: Seconds the WebSocket opening handshake (and the request line of any request) may take
    #: (1-3600); websockets' own open_timeout, applied by the server since HTTP responses share it.
    open_timeout_s: float = field(default=10.0, metadata={"range": (1.0, 3600.0)})


@dataclass
class WyomingConfig:
    """``voice wyoming``: ASR, TTS and the chain over the Wyoming protocol (Home Assistant)."""

    #: Where to listen: tcp://HOST:PORT (port 0 = any free port) or unix:///path/to.sock. The
    #: protocol has no authentication: bind off loopback only on a network you trust.
    uri: str = "tcp://127.0.0.1:10300"
    #: Clients served at once (1-1024); one more gets an `error` event and is closed.
    max_clients: int = field(default=16, metadata={"range": (1, 1024)})
    #: Largest JSON header line plus data block of one event, in bytes (1 KiB - 16 MiB). A bigger
    #: event gets an `error` event and is skipped; a header line past it closes the connection.
    max_event_bytes: int = field(default=65_536, metadata={"range": (1024, 16 << 20)})
    #: Largest binary payload (an audio chunk) of one event, in bytes (1 KiB - 64 MiB).
    max_payload_bytes: int = field(default=1_048_576, metadata={"range": (1024, 64 << 20)})
    #: Longest audio of one transcription, in seconds (1-3600); more gets an `error` event.
    max_audio_s: float = field(default=120.0, metadata={"range": (1.0, 3600.0)})
    #: Longest text of one synthesize, one synthesize stream or one transcript to handle
    #: (characters, 1-1,000,000).
    max_text_chars: int = field(default=10_000, metadata={"range": (1, 1_000_000)})
    #: false: transcribe with the file settings of `voice transcribe` (beam asr.file_beam_size,
    #: 30 s window), as accurate as wyoming-faster-whisper. true: the live-turn settings (greedy,
    #: the asr.live_window_s window), about 2x faster with more errors on short commands.
    asr_live: bool = False
    #: Samples per audio-chunk event sent to clients (64-65536).
    samples_per_chunk: int = field(default=1024, metadata={"range": (64, 65_536)})
    #: Seconds a client may send nothing (outside a request being answered) before it is closed
    #: (1-86400).
    idle_timeout_s: float = field(default=300.0, metadata={"range": (1.0, 86_400.0)})


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
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)

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

#: Where a key's value came from when no source set it.
DEFAULT_SOURCE = "built-in default"


def _shown(text: str) -> str:
    """``text`` fit for a one-line message: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _value(value: Any) -> str:
    """A value's repr for a message, one line and short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _allowed(bounds: tuple[Any, Any]) -> str:
    lo, hi = bounds
    if lo is None:
        return f"at most {hi}"
    if hi is None:
        return f"at least {lo}"
    return f"{lo} to {hi}"


def _check_range(value: Any, bounds: tuple[Any, Any] | None, key: str, source: str) -> None:
    if value is None or bounds is None:
        return
    lo, hi = bounds
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{source}: {key} = {_value(value)} is out of range (allowed: {_allowed(bounds)})")


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
        if not isinstance(value, str) or value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{source}: {key} = {_value(value)} is not one of {choices}")
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
        raise ConfigError(f"{source}: {key} must be true or false, got {_value(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be an integer, got {_value(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e300 else math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{source}: {key} must be a finite number, got {_value(value)}")
            return number
        raise ConfigError(f"{source}: {key} must be a number, got {_value(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key} must be a string, got {_value(value)}")
    raise ConfigError(f"{source}: {key} has unsupported type {_type_name(tp)}")


def _merge(obj: Any, data: Mapping[str, Any], source: str, origins: dict[str, str] | None = None,
           prefix: str = "") -> None:
    """Apply a nested mapping onto dataclass ``obj`` in place, checking keys, types and ranges.

    ``origins`` records the source of each key set (for errors that involve two keys).
    """
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        dotted = _shown(f"{prefix}{key}")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{dotted}' must be a table")
            _merge(current, value, source, origins, f"{dotted}.")
        else:
            value = _coerce(value, hints[key], dotted, source)
            _check_range(value, fields[key].metadata.get("range"), dotted, source)
            setattr(obj, key, value)
            if origins is not None:
                origins[dotted] = source


def validate(obj: Any, source: str = "config", prefix: str = "") -> None:
    """Check every key of a config (or one section) for its type, range and choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        dotted = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, source, f"{dotted}.")
        else:
            _coerce(value, hints[f.name], dotted, source)
            _check_range(value, f.metadata.get("range"), dotted, source)


def _check_relations(cfg: Config, origins: Mapping[str, str]) -> None:
    """Limits that involve two keys: ``a`` must not exceed (or, strict, must stay under) ``b``."""
    pairs = [
        ("vad.neg_threshold", cfg.vad.neg_threshold, "vad.threshold", cfg.vad.threshold, False),
        ("tts.chattts.min_new_tokens", cfg.tts.chattts.min_new_tokens,
         "tts.chattts.max_new_tokens", cfg.tts.chattts.max_new_tokens, False),
        ("tts.chunker.min_chars", cfg.tts.chunker.min_chars, "tts.chunker.max_chars", cfg.tts.chunker.max_chars, False),
        ("tts.chunker.min_first_chars", cfg.tts.chunker.min_first_chars,
         "tts.chunker.max_chars", cfg.tts.chunker.max_chars, False),
        ("rag.chunk_overlap", cfg.rag.chunk_overlap, "rag.chunk_size", cfg.rag.chunk_size, True),
    ]
    for a, va, b, vb, strict in pairs:
        if va is not None and (va >= vb if strict else va > vb):
            rel = "must be under" if strict else "must not exceed"
            sa, sb = origins.get(a, DEFAULT_SOURCE), origins.get(b, DEFAULT_SOURCE)
            raise ConfigError(f"{a} = {_value(va)} ({sa}) {rel} {b} = {_value(vb)} ({sb})")
    prompt, limit = cfg.llm.system_prompt, cfg.llm.max_instructions_chars()
    if prompt is not None and len(prompt) > limit:
        raise ConfigError(f"llm.system_prompt ({origins.get('llm.system_prompt', DEFAULT_SOURCE)}) is "
                          f"{len(prompt)} characters; at most {limit} (llm.embedded.n_ctx) fit the model's context")


def _parse_scalar(text: str) -> Any:
    """Read an environment or flag value as one TOML value when it parses, else as a plain string."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    return doc["v"] if len(doc) == 1 else text  # "1\nx = 2" is text, not the value 1


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _env_items(environ: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """``(variable, dotted key, parsed value)`` for each ``VOICE_SECTION__KEY``, by name."""
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and "__" in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out.append((name, dotted, _parse_scalar(environ[name])))
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``VOICE_SECTION__KEY=value`` pairs as a dotted mapping (values parsed as TOML)."""
    return {dotted: value for _, dotted, value in _env_items(environ)}


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """``--set section.key=value`` flags as a dotted mapping."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {_value(pair)}: expected section.key=value")
        out[key.strip()] = _parse_scalar(value.strip())
    return out


def apply_overrides(cfg: Config, flags: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Apply dotted keys (None = not given) onto ``cfg``, each checked like a config key.

    ``names`` gives the source shown in errors per key (e.g. ``{"rag.top_k": "-k/--top-k"}``);
    default "command-line flag".
    """
    origins: dict[str, str] = {}
    for key, value in flags.items():
        if value is not None:
            source = (names or {}).get(key) or f"command-line flag for {_shown(key)}"
            _merge(cfg, _nest({key: value}), source, origins)
    if origins:
        _check_relations(cfg, origins)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {_shown(str(path))} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {_shown(str(path))} is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{_shown(str(path))}: not valid TOML: {_shown(str(err))}") from None
    except RecursionError:
        raise ConfigError(f"{_shown(str(path))}: not valid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"config file {_shown(str(path))} cannot be read: {_shown(str(err))}") from None


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config. ``overrides`` are dotted keys from ``--set`` flags.

    Every value is checked for its type, range and choices; an error is one line that names
    the key, where the value came from and what is allowed.
    """
    cfg = Config()
    validate(cfg, DEFAULT_SOURCE)
    origins: dict[str, str] = {}
    if path is not None:
        p = Path(path).expanduser()
        _merge(cfg, read_toml(p), _shown(str(p)), origins)
    for name, dotted, value in _env_items(os.environ if environ is None else environ):
        _merge(cfg, _nest({dotted: value}), f"environment variable {_shown(name)}", origins)
    for key, value in (overrides or {}).items():
        if value is not None:
            _merge(cfg, _nest({key: value}), f"--set {_shown(key)}", origins)
    _check_relations(cfg, origins)
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
