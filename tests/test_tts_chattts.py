"""ChatTTS through its real loader (source="custom") with tiny random weights in its own layout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from voice.devices import reset_probe_cache
from voice.errors import InputError, ModelNotAvailable
from voice.tts.base import CancelToken, create_engine, synthesize

pytestmark = pytest.mark.slow


@pytest.fixture
def chat_cfg(cfg, tiny_chattts_dir: Path):
    cfg.tts.engine = "chattts"
    cfg.tts.device = "cpu"
    cfg.tts.chattts.model = str(tiny_chattts_dir)
    cfg.tts.chattts.sha256_map = str(tiny_chattts_dir / "sha256_map.json")
    cfg.tts.chattts.max_new_tokens = 48
    cfg.tts.chattts.stream_batch = 8
    cfg.tts.chattts.seed = 7
    return cfg


async def _collect(engine, text, **kw):
    out, times = [], []
    t0 = time.monotonic()
    async for chunk in engine.stream(text, **kw):
        out.append(chunk)
        times.append(time.monotonic() - t0)
    return out, times, time.monotonic() - t0


async def test_streams_sentences_in_order_at_24k(chat_cfg):
    engine = create_engine(chat_cfg)
    assert engine.name == "chattts" and engine.device.device == "cpu"
    assert engine.sample_rate == 24000
    await engine.load()
    await synthesize(engine, "Hello.")  # first-call warm-up, not part of the timing
    chunks, times, total = await _collect(engine, "Hello world. This is a test. One two three.")
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.text for c in chunks if c.text] == ["Hello world.", "This is a test.", "One two three."]
    for c in chunks:
        assert c.sample_rate == 24000
        assert c.audio.dtype == np.float32 and c.audio.ndim == 1 and len(c.audio) > 0
        assert np.isfinite(c.audio).all()
    # Streaming: each sentence comes in several pieces, and the first arrives well before the end.
    assert len(chunks) > 3
    assert times[0] < 0.7 * total


async def test_an_unpunctuated_text_is_synthesized_in_capped_pieces(chat_cfg):
    """tts.max_sentence_chars holds for ChatTTS too (the same utterances() as Piper's)."""
    chat_cfg.tts.max_sentence_chars = 40
    engine = create_engine(chat_cfg)
    await engine.load()
    text = " ".join(["one two three four five six seven"] * 4)  # 135 characters, no punctuation
    chunks, _, _ = await _collect(engine, text)
    said = [c.text for c in chunks if c.text]
    assert len(said) == 4 and all(len(t) <= 40 for t in said) and " ".join(said) == text


async def test_cancel_between_chunks_stops_the_reply(chat_cfg):
    engine = create_engine(chat_cfg)
    await engine.load()
    cancel = CancelToken()
    got = []
    async for chunk in engine.stream("Hello world. This is a test. One two three.", cancel=cancel):
        got.append(chunk)
        if len(got) == 2:
            cancel.cancel()
    assert len(got) == 2
    # The engine is free again right away.
    again, _, _ = await _collect(engine, "Hello.")
    assert again and again[0].index == 0


async def test_cancel_interrupts_chattts_generation(chat_cfg):
    """A cancel during a long generation step reaches ChatTTS's own interrupt."""
    chat_cfg.tts.chattts.max_new_tokens = chat_cfg.tts.chattts.min_new_tokens = 300
    chat_cfg.tts.chattts.stream_batch = 4096  # one long step: only chat.interrupt() can stop it early
    engine = create_engine(chat_cfg)
    await engine.load()
    t0 = time.monotonic()
    full = await synthesize(engine, "Hello world.")
    t_300 = time.monotonic() - t0  # one sentence of exactly 300 tokens, uncancelled
    assert len(full) > 300 * 400  # ~512 samples per token: 300 tokens were generated
    chat_cfg.tts.chattts.max_new_tokens = chat_cfg.tts.chattts.min_new_tokens = 2048
    cancel = CancelToken()
    asyncio.get_running_loop().call_later(0.2, cancel.cancel)
    t0 = time.monotonic()
    chunks, _, _ = await _collect(engine, "Hello world. This is a test.", cancel=cancel)
    elapsed = time.monotonic() - t0
    assert chunks == []
    # Uncancelled, 2 x 2048 tokens would take about 14 x t_300; interrupt stops within a token or so.
    assert elapsed < 0.2 + max(0.5, 0.5 * t_300), (elapsed, t_300)


async def test_speaker_files_seed_and_reuse(chat_cfg, tmp_path):
    from voice.tts.chattts import load_speaker, save_speaker

    engine = create_engine(chat_cfg)
    await engine.load()
    a, b, c = engine.sample_speaker(3), engine.sample_speaker(3), engine.sample_speaker(4)
    assert a == b and a != c
    pt, txt = save_speaker(tmp_path / "spk.pt", a), save_speaker(tmp_path / "spk.txt", a)
    assert load_speaker(pt) == a and load_speaker(txt) == a
    chunks, _, _ = await _collect(engine, "Hello world.", voice=str(pt))
    assert chunks and chunks[0].text == "Hello world."
    with pytest.raises(InputError):
        await _collect(engine, "Hello.", voice=str(tmp_path / "missing.pt"))
    (tmp_path / "bad.txt").write_text("not a speaker")
    with pytest.raises(InputError):
        await _collect(engine, "Hello.", voice=str(tmp_path / "bad.txt"))


async def test_refine_text_and_prosody(chat_cfg):
    from voice.tts.chattts import speed_prompt

    assert speed_prompt(1.0) == "[speed_5]" and speed_prompt(0.4) == "[speed_2]" and speed_prompt(3) == "[speed_9]"
    chat_cfg.tts.chattts.refine_text = True
    chat_cfg.tts.chattts.refine_prompt = "[oral_2][laugh_0][break_6]"
    chat_cfg.tts.chattts.max_new_tokens = 24
    engine = create_engine(chat_cfg)
    audio = await synthesize(engine, "Hello world.", speed=1.4)
    assert audio.dtype == np.float32 and len(audio) > 0


def test_builtin_sha256_map_rejects_other_weights(chat_cfg):
    chat_cfg.tts.chattts.sha256_map = None
    engine = create_engine(chat_cfg)
    with pytest.raises(ModelNotAvailable, match="sha256"):
        engine._load()


def test_missing_weights_say_where_they_go(cfg, tmp_path):
    cfg.tts.device = "cpu"
    cfg.tts.chattts.model = str(tmp_path)
    engine = create_engine(cfg, "chattts")
    with pytest.raises(ModelNotAvailable, match="asset/Decoder.safetensors"):
        engine._load()
    cfg.tts.chattts.model = "chattts"  # the registry entry: no weights installed here
    with pytest.raises(ModelNotAvailable, match="models/chattts"):
        create_engine(cfg, "chattts")._load()


def test_auto_device_without_gpu_is_cpu(chat_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    reset_probe_cache()
    chat_cfg.tts.device = "auto"
    chat_cfg.tts.fallback_to_piper = False
    engine = create_engine(chat_cfg)
    assert engine.device.device == "cpu" and "no working CUDA" in engine.device.reason


async def test_cuda_is_picked_on_a_gpu(chat_cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reset_probe_cache()
    chat_cfg.tts.device = "auto"
    engine = create_engine(chat_cfg)
    assert engine.device.device == "cuda"
    await engine.load()
    assert next(engine._chat.gpt.parameters()).device.type == "cuda"
    audio = await synthesize(engine, "Hello world.")
    assert audio.dtype == np.float32 and len(audio) > 0


async def test_abandoned_stream_mid_step_frees_the_engine(chat_cfg):
    """A consumer that gives up while ChatTTS is generating (task cancelled) leaves no running
    generation behind: the engine answers the next request at once."""
    chat_cfg.tts.chattts.max_new_tokens = chat_cfg.tts.chattts.min_new_tokens = 2048
    chat_cfg.tts.chattts.stream_batch = 4096
    engine = create_engine(chat_cfg)
    await engine.load()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await _collect(engine, "Hello world. This is a test.")
    assert time.monotonic() - t0 < 3.0
    chat_cfg.tts.chattts.max_new_tokens, chat_cfg.tts.chattts.min_new_tokens = 24, 0
    chat_cfg.tts.chattts.stream_batch = 8
    chunks, _, _ = await _collect(engine, "Hello.")
    assert chunks and chunks[0].index == 0
