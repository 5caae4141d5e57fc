"""The Whisper transcriber with real models: file vs live settings, silence, languages, caching."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import speech_dir
from voice.asr import (
    ModelCache,
    Transcriber,
    Transcript,
    file_options,
    get_transcriber,
    live_options,
    transcribe_sync,
)
from voice.asr.whisper import encoder_frames
from voice.audio.files import load_audio
from voice.config import AsrConfig
from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.textnorm import corpus_wer

pytestmark = pytest.mark.slow

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_audio(speech_dir() / "jfk.wav")


def test_options_live_vs_file() -> None:
    cfg = AsrConfig()
    live, files = live_options(cfg), file_options(cfg)
    assert (live.beam_size, live.without_timestamps, live.condition_on_previous_text) == (1, True, False)
    assert (files.beam_size, files.without_timestamps, files.condition_on_previous_text) == (5, False, True)
    assert file_options(cfg, beam_size=2).beam_size == 2


def test_encoder_frames_cover_the_audio_with_a_margin() -> None:
    assert encoder_frames(2.0, 10.0) == 1000
    assert encoder_frames(9.5, 10.0) == 1100  # 9.5 s + 1 s margin -> 11 s
    assert encoder_frames(11.0, 10.0) == 1200
    assert encoder_frames(10.3, 10.25) == 1200
    assert encoder_frames(3.0, 10.25) == 1026  # even: the encoder's stride-2 convolution
    assert encoder_frames(28.9, 10.0) is None  # 30 s window: the stock path
    assert encoder_frames(2.0, 30.0) is None and encoder_frames(2.0, 45.0) is None
    with pytest.raises(ConfigError, match="positive"):
        encoder_frames(2.0, 0.0)


def test_short_window_keeps_wer_and_is_faster(tiny_transcriber, speech_clips: dict[str, str]) -> None:
    """Live settings over every clip: the configured short window vs the stock 30 s window."""
    window = AsrConfig().live_window_s
    assert window < 30
    audio = {c: load_audio(c) for c in sorted(speech_clips)}
    texts: dict[float, list[tuple[str, str]]] = {30.0: [], window: []}
    spent = {30.0: 0.0, window: 0.0}
    slowest = 0.0
    for c, a in audio.items():
        for w in (30.0, window):
            t0 = time.perf_counter()
            text = tiny_transcriber.transcribe_sync(a, live=True, window_s=w).text
            dt = time.perf_counter() - t0
            spent[w] += dt
            texts[w].append((speech_clips[c], text))
            if w == window:
                slowest = max(slowest, dt)
    stock, short = corpus_wer(texts[30.0]), corpus_wer(texts[window])
    assert short <= stock + 0.01, (stock, short, texts[window])
    assert spent[window] < 0.7 * spent[30.0], spent  # measured ~0.37 on 2 cores
    assert slowest < 2.0, slowest  # no clip ran away repeating itself


def test_file_mode_transcript(tiny_transcriber, jfk: np.ndarray) -> None:
    assert isinstance(tiny_transcriber, Transcriber)
    t = tiny_transcriber.transcribe_sync(jfk)
    assert isinstance(t, Transcript)
    assert corpus_wer([(JFK, t.text)]) <= 0.1, t.text
    assert t.language == "en" and t.model == "whisper-tiny.en" and t.device == "cpu"
    assert t.duration_s == pytest.approx(11.0, abs=0.01)
    assert len(t.segments) >= 1
    ends = [s.end for s in t.segments]
    assert all(s.start < s.end for s in t.segments) and ends == sorted(ends) and ends[-1] <= 11.01
    assert " ".join(s.text for s in t.segments) == t.text


def test_live_mode_transcript(tiny_transcriber, jfk: np.ndarray) -> None:
    t = tiny_transcriber.transcribe_sync(jfk, live=True)
    assert corpus_wer([(JFK, t.text)]) <= 0.1, t.text


@pytest.mark.parametrize("audio", [np.zeros(16000 * 3, dtype=np.float32), np.zeros(0, dtype=np.float32),
                                   np.full(16000, 2e-4, dtype=np.float32)])
def test_silence_gives_an_empty_transcript(tiny_transcriber, audio: np.ndarray) -> None:
    t = tiny_transcriber.transcribe_sync(audio)
    assert t.text == "" and t.segments == []
    assert t.duration_s == pytest.approx(len(audio) / 16000)


def test_stereo_array_is_input_error(tiny_transcriber) -> None:
    with pytest.raises(InputError, match="mono"):
        tiny_transcriber.transcribe_sync(np.zeros((16000, 2), dtype=np.float32))


def test_resampled_mp3_transcribes_like_the_wav(tiny_transcriber, jfk: np.ndarray, tmp_path: Path) -> None:
    mp3 = tmp_path / "jfk.mp3"
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-y", "-loglevel", "error", "-i",
                    str(speech_dir() / "jfk.wav"), "-ac", "2", "-ar", "44100", str(mp3)], check=True)
    t = tiny_transcriber.transcribe_sync(load_audio(mp3), live=True)
    assert corpus_wer([(JFK, t.text)]) <= 0.1, t.text


async def test_async_transcribe_keeps_the_loop_free(tiny_transcriber, jfk: np.ndarray) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    a, b = await asyncio.gather(
        tiny_transcriber.transcribe(jfk, live=True), tiny_transcriber.transcribe(jfk[: 16000 * 4], live=True)
    )
    stop.set()
    await task
    assert corpus_wer([(JFK, a.text)]) <= 0.1
    assert b.text.lower().startswith("and so")
    assert len(gaps) > 20 and max(gaps) < 0.5, max(gaps)


def test_cache_loads_each_model_once(asr_cfg, asr_cache, tiny_transcriber, jfk: np.ndarray) -> None:
    loads = asr_cache.loads
    other = get_transcriber(asr_cfg, asr_cache)
    assert other is not tiny_transcriber
    assert other.load() is tiny_transcriber.load()
    assert asr_cache.loads == loads
    assert transcribe_sync(asr_cfg, jfk[: 16000 * 3], live=True, cache=asr_cache).text
    assert asr_cache.loads == loads
    fresh = ModelCache()
    assert get_transcriber(asr_cfg, fresh).load() is not tiny_transcriber.load()
    assert fresh.loads == 1


def test_english_only_model_refuses_another_language(tiny_transcriber, jfk: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="English-only") as err:
        tiny_transcriber.transcribe_sync(jfk, language="de")
    assert "\n" not in str(err.value)
    assert tiny_transcriber.transcribe_sync(jfk[:16000], language="en").language == "en"


def test_unknown_model_and_non_model_folder(asr_cfg, tmp_path: Path) -> None:
    import copy

    cfg = copy.deepcopy(asr_cfg)
    cfg.asr.model = "whisper-nonexistent"
    with pytest.raises(ConfigError, match="unknown model 'whisper-nonexistent'"):
        get_transcriber(cfg).load()
    cfg.asr.model = str(tmp_path)
    with pytest.raises(ModelNotAvailable, match="not a faster-whisper model folder"):
        get_transcriber(cfg).load()


def _german_clip(tmp_path: Path) -> Path:
    out = tmp_path / "de.wav"
    text = "Guten Morgen. Heute ist das Wetter in Berlin sehr schön, und wir gehen am Nachmittag in den Park."
    subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "-v", "de", "-w", str(out), text], check=True)
    return out


def test_whisper_base_assembles_loads_and_detects_language(asr_cfg, asr_cache, jfk: np.ndarray,
                                                           tmp_path: Path) -> None:
    import copy

    cfg = copy.deepcopy(asr_cfg)
    cfg.asr.model = "whisper-base"
    t = get_transcriber(cfg, asr_cache)
    loaded = t.load()
    assert loaded.multilingual
    folder = Path(cfg.cache_dir()) / "models" / "whisper-base"
    assert loaded.path == folder and (folder / ".complete").exists()
    assert (folder / "model.bin.sha256").read_text().startswith("d01c3014881c")
    german = load_audio(_german_clip(tmp_path))
    de = t.transcribe_sync(german, live=True)
    assert de.language == "de", de
    assert "morgen" in de.text.lower()
    en = t.transcribe_sync(jfk, live=True)
    assert en.language == "en" and corpus_wer([(JFK, en.text)]) <= 0.1
    fixed = t.transcribe_sync(german, live=True, language="de")
    assert fixed.language == "de"
    with pytest.raises(ConfigError, match="not a language code"):
        t.transcribe_sync(german, language="xx")


def _cuda_devices() -> int:
    import ctranslate2

    return int(ctranslate2.get_cuda_device_count())


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() == 0, reason="GPU-only: CTranslate2 sees no CUDA device here")
def test_auto_picks_cuda_when_a_real_encode_works(asr_cfg, jfk: np.ndarray) -> None:
    import copy

    from voice.devices import reset_probe_cache

    cfg = copy.deepcopy(asr_cfg)
    cfg.asr.device = "auto"
    reset_probe_cache()
    t = get_transcriber(cfg, ModelCache())
    loaded = t.load()
    assert loaded.choice.device == "cuda" and loaded.choice.compute_type == "float16", loaded.choice
    assert corpus_wer([(JFK, t.transcribe_sync(jfk).text)]) <= 0.1
