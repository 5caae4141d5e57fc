"""Piper with the real bundled voice, checked by the project's own Whisper; the engine registry."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.textnorm import corpus_wer
from voice.tts import AudioChunk, CancelToken, TTSEngine, create_engine, synthesize
from voice.tts.chunker import SpeechChunker

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please turn off the lights in the kitchen before you leave.",
    "The weather today is sunny with a gentle breeze from the west.",
    "My favorite book is about a sailor who crosses the ocean alone.",
    "Remember to buy milk, bread and fresh apples at the market.",
    "She opened the window and listened to the birds singing outside.",
]


@pytest.fixture(scope="session")
def tts_cfg(tmp_path_factory: pytest.TempPathFactory):
    from voice.config import load_config

    c = load_config(environ={})
    base = tmp_path_factory.mktemp("tts")
    c.general.data_dir = str(base / "data")
    c.general.cache_dir = str(base / "cache")
    c.tts.device = "cpu"
    return c


@pytest.fixture(scope="session")
def piper(tts_cfg):
    engine = create_engine(tts_cfg, "piper")
    asyncio.run(engine.load())
    return engine


async def collect(engine: TTSEngine, text: str, **kw) -> list[AudioChunk]:
    return [c async for c in engine.stream(text, **kw)]


def to16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from voice.audio.resample import resample

    return resample(audio, rate, 16000)


# ----------------------------------------------------------------------------- registry


def test_registry_picks_piper_on_cpu(tts_cfg) -> None:
    engine = create_engine(tts_cfg)
    assert isinstance(engine, TTSEngine)
    assert engine.name == "piper"
    assert engine.device.device == "cpu"
    assert engine.sample_rate == 22050
    assert "piper-joe-medium" in engine.voices()


def test_unknown_engine_is_a_config_error(tts_cfg) -> None:
    with pytest.raises(ConfigError, match="unknown TTS engine 'nope'.*piper"):
        create_engine(tts_cfg, "nope")


def test_expressive_engine_without_gpu_or_package_falls_back(tts_cfg, caplog: pytest.LogCaptureFixture) -> None:
    """Here (no GPU, device auto) chattts either is not installed or has no GPU: Piper + a warning."""
    import copy

    cfg = copy.deepcopy(tts_cfg)
    cfg.tts.device = "auto"
    cfg.tts.fallback_to_piper = True
    with caplog.at_level(logging.WARNING, logger="voice.tts.base"):
        engine = create_engine(cfg, "chattts")
    assert engine.name == "piper"
    assert any("using piper instead" in r.getMessage() for r in caplog.records)


def test_missing_package_says_how_to_install_even_with_fallback(tts_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine module whose package is absent: ModelNotAvailable naming the install command,
    never a silent Piper (tts.fallback_to_piper is for a missing GPU, not a missing package)."""
    import copy
    import sys
    import types

    from voice.tts import base

    fake = types.ModuleType("voice.tts._fake_engine")
    fake.missing_dependency = lambda: "pip install 'voice[fake]'"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voice.tts._fake_engine", fake)
    monkeypatch.setitem(base.ENGINES, "fake", base.EngineInfo("fake", "voice.tts._fake_engine", "torch", True))
    cfg = copy.deepcopy(tts_cfg)
    cfg.tts.fallback_to_piper = False
    with pytest.raises(ModelNotAvailable, match=r"'fake' is not installed; install it with: pip install 'voice\[fake\]'"):
        create_engine(cfg, "fake")
    cfg.tts.fallback_to_piper = True
    cfg.tts.device = "auto"
    with pytest.raises(ModelNotAvailable, match="install it with"):
        create_engine(cfg, "fake")


def test_phoneme_runs_cut_between_words_or_hard() -> None:
    from voice.tts.piper import phoneme_runs

    words = list("hə lˈoʊ wˈɜːld ") * 50  # 750 phonemes, a space every 5 or so
    runs = phoneme_runs(words, 400)
    assert len(runs) == 2 and all(len(r) <= 400 for r in runs)
    assert runs[0][-1] == " " and sum(runs, []) == words
    giant = ["a"] * 1000
    assert [len(r) for r in phoneme_runs(giant, 400)] == [400, 400, 200]
    assert phoneme_runs([" ", " "], 400) == []


# ----------------------------------------------------------------------------- round trip


@pytest.mark.slow
def test_piper_words_come_back_through_whisper(piper, tiny_transcriber) -> None:
    pairs = []
    for text in SENTENCES:
        audio = asyncio.run(synthesize(piper, text))
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 0.05 < float(np.max(np.abs(audio))) <= 1.0
        got = tiny_transcriber.transcribe_sync(to16k(audio, piper.sample_rate)).text
        pairs.append((text, got))
    wer = corpus_wer(pairs)
    assert wer <= 0.1, pairs


@pytest.mark.slow
def test_stream_yields_sentences_in_order(piper) -> None:
    text = "First comes one. Then comes two! And is three last? Yes, four."
    chunks = asyncio.run(collect(piper, text))
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert [c.text for c in chunks] == ["First comes one.", "Then comes two!", "And is three last?", "Yes, four."]
    assert all(c.sample_rate == 22050 and c.audio.dtype == np.float32 and c.duration_s > 0.3 for c in chunks)


@pytest.mark.slow
def test_stream_first_chunk_arrives_before_the_rest_is_done(piper) -> None:
    text = " ".join(SENTENCES[:4])

    async def timed() -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        async for _ in piper.stream(text):
            first = first or time.perf_counter() - t0
        return first or 0.0, time.perf_counter() - t0

    first, whole = asyncio.run(timed())
    assert first < 0.6 * whole, (first, whole)


@pytest.mark.slow
def test_cancel_mid_reply_stops_between_chunks(piper) -> None:
    text = " ".join(SENTENCES)
    token = CancelToken()

    async def run() -> list[AudioChunk]:
        got = []
        async for c in piper.stream(text, cancel=token):
            got.append(c)
            if c.index == 1:
                token.cancel()
        return got

    got = asyncio.run(run())
    assert [c.index for c in got] == [0, 1]
    assert token.cancelled
    pre = CancelToken()
    pre.cancel()
    assert asyncio.run(collect(piper, text, cancel=pre)) == []


@pytest.mark.slow
def test_cancel_from_another_task_while_synthesizing(piper) -> None:
    text = " ".join(SENTENCES)
    token = CancelToken()

    async def run() -> list[AudioChunk]:
        got: list[AudioChunk] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for c in piper.stream(text, cancel=token):
                got.append(c)
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), timeout=30)
        token.cancel()
        await asyncio.wait_for(task, timeout=5)
        return got

    got = asyncio.run(run())
    assert 1 <= len(got) <= 2 < len(SENTENCES)


@pytest.mark.slow
def test_speed_and_length_scale(piper, tts_cfg) -> None:
    text = SENTENCES[1]

    def mean_len(speed: float) -> float:  # durations are sampled (noise_w): average a few
        return float(np.mean([len(asyncio.run(synthesize(piper, text, speed=speed))) for _ in range(3)]))

    normal, fast, slow = mean_len(1.0), mean_len(2.0), mean_len(0.5)
    assert fast < 0.8 * normal and slow > 1.4 * normal, (fast, normal, slow)
    with pytest.raises(InputError, match="speed"):
        asyncio.run(synthesize(piper, text, speed=0))


@pytest.mark.slow
def test_voice_by_path_and_bad_voices(piper, tmp_path: Path) -> None:
    src = piper.resolve_voice()
    onnx = tmp_path / "copy.onnx"
    shutil.copy(src, onnx)
    shutil.copy(f"{src}.json", f"{onnx}.json")
    chunks = asyncio.run(collect(piper, "A voice by its path.", voice=str(onnx)))
    assert len(chunks) == 1 and chunks[0].sample_rate == 22050
    with pytest.raises(ConfigError, match="unknown Piper voice 'nobody'"):
        asyncio.run(collect(piper, "Hi.", voice="nobody"))
    with pytest.raises(InputError, match="does not exist"):
        asyncio.run(collect(piper, "Hi.", voice=str(tmp_path / "missing.onnx")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    bad.with_name("bad.onnx.json").write_text(json.dumps(json.loads(Path(f"{src}.json").read_text())))
    with pytest.raises(InputError, match="bad.onnx"):
        asyncio.run(collect(piper, "Hi.", voice=str(bad)))
    nojson = tmp_path / "nojson.onnx"
    nojson.write_bytes(b"x")
    with pytest.raises(InputError, match="no nojson.onnx.json"):
        asyncio.run(collect(piper, "Hi.", voice=str(nojson)))


@pytest.mark.slow
def test_chunker_into_piper_speaks_clean_text(piper, tiny_transcriber) -> None:
    """LLM-style markdown deltas -> chunker -> Piper -> Whisper: the words, none of the markup."""
    reply = "**Sure!** Here is the plan:\n1. Buy some *fresh* bread\n2. Visit https://example.com today 🎉\n"
    chunker = SpeechChunker()
    pieces: list[str] = []
    for i in range(0, len(reply), 4):
        pieces += chunker.feed(reply[i : i + 4])
    pieces += chunker.flush()
    audio = np.concatenate([asyncio.run(synthesize(piper, p)) for p in pieces])
    text = tiny_transcriber.transcribe_sync(to16k(audio, piper.sample_rate)).text.lower()
    for word in ("sure", "plan", "bread", "visit", "today"):
        assert word in text, text
    for junk in ("asterisk", "http", "example", "star"):
        assert junk not in text, text
