"""Chatterbox: tiny random-weight models in its own file layout loaded through create_engine,
voice cloning, streaming, cancellation, errors, device choice, its watermarker and the
torchaudio stand-in it runs on."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.devices import reset_probe_cache
from voice.errors import ConfigError, InputError, ModelNotAvailable
from voice.tts.base import CancelToken, create_engine


@pytest.fixture
def cb_cfg(cfg, tmp_path):
    cfg.tts.engine = "chatterbox"
    cfg.tts.device = "cpu"
    cfg.tts.chatterbox.model = str(tmp_path)
    return cfg


def test_missing_weights_name_files_and_place(cb_cfg, tmp_path):
    engine = create_engine(cb_cfg)
    assert engine.name == "chatterbox" and engine.device.device == "cpu" and engine.sample_rate == 24000
    with pytest.raises(ModelNotAvailable, match="t3_cfg.safetensors"):
        engine._load()
    cb_cfg.tts.chatterbox.variant = "turbo"
    with pytest.raises(ModelNotAvailable, match="t3_turbo_v1.safetensors"):
        create_engine(cb_cfg)._load()
    cb_cfg.tts.chatterbox.variant = "standard"
    cb_cfg.tts.chatterbox.model = "chatterbox"
    with pytest.raises(ModelNotAvailable, match="models/chatterbox"):
        create_engine(cb_cfg)._load()


def test_bad_variant(cb_cfg):
    cb_cfg.tts.chatterbox.variant = "large"
    with pytest.raises(ConfigError, match="standard or turbo"):
        create_engine(cb_cfg).model_dir()


@pytest.mark.parametrize("kind", ["missing", "text", "empty"])
async def test_bad_reference_audio_is_an_input_error(cb_cfg, tmp_path, kind):
    ref = tmp_path / f"ref-{kind}.wav"
    if kind == "text":
        ref.write_text("this is not audio")
    elif kind == "empty":
        sf.write(ref, np.zeros(0, dtype=np.float32), 16000)
    engine = create_engine(cb_cfg)
    with pytest.raises(InputError):
        async for _ in engine.stream("Hello.", voice=str(ref)):
            pass


def test_auto_device_without_gpu_is_cpu(cb_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    reset_probe_cache()
    cb_cfg.tts.device = "auto"
    cb_cfg.tts.fallback_to_piper = False
    assert create_engine(cb_cfg).device.device == "cpu"


def test_cuda_is_picked_on_a_gpu(cb_cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reset_probe_cache()
    cb_cfg.tts.device = "auto"
    assert create_engine(cb_cfg).device.device == "cuda"


# ----------------------------------------------------------------------------- what it runs on


def _stand_in():
    from voice.tts.torchaudio_compat import ensure_torchaudio

    ensure_torchaudio()
    import torchaudio

    return torchaudio


def test_stand_in_resample_and_mel_match_references():
    import librosa
    import torch

    ta = _stand_in()
    sr = 24000
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = ta.transforms.Resample(sr, 16000)(torch.from_numpy(x)[None])[0].numpy()
    assert len(y) == 16000
    ref = librosa.resample(x, orig_sr=sr, target_sr=16000)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 0.01
    mel = ta.transforms.MelSpectrogram(sample_rate=sr, n_fft=1024, hop_length=256, n_mels=100)(
        torch.from_numpy(x)
    ).numpy()
    ref_mel = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=1024, hop_length=256, n_mels=100, htk=True,
                                             norm=None, center=True, pad_mode="reflect")
    assert mel.shape == ref_mel.shape
    assert np.allclose(mel, ref_mel, rtol=1e-3, atol=1e-3 * ref_mel.max())
    feats = ta.compliance.kaldi.fbank(torch.from_numpy(x[:16000])[None], num_mel_bins=80)
    assert feats.shape == (1 + (16000 - 400) // 160, 80) and torch.isfinite(feats).all()
    # The 440 Hz tone's energy sits in the low mel bins.
    assert int(feats.mean(0).argmax()) < 20


@pytest.mark.slow
def test_watermarker_as_shipped_marks_and_detects():
    _stand_in()
    import perth

    assert perth.PerthImplicitWatermarker is not None, "resemble-perth cannot build its watermarker"
    wm = perth.PerthImplicitWatermarker()
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    marked = wm.apply_watermark(audio, sample_rate=24000)
    assert marked.shape == audio.shape
    assert wm.get_watermark(marked, sample_rate=24000) > 0.9
    assert wm.get_watermark(audio, sample_rate=24000) < 0.5


# ----------------------------------------------------------------------------- synthesis (tiny model)


@pytest.fixture
def tiny_cfg(cfg, tiny_chatterbox_dir: Path):
    cfg.tts.engine = "chatterbox"
    cfg.tts.device = "cpu"
    cfg.tts.chatterbox.model = str(tiny_chatterbox_dir)
    return cfg


async def _collect(engine, text, **kw):
    out, times = [], []
    t0 = time.monotonic()
    async for chunk in engine.stream(text, **kw):
        out.append(chunk)
        times.append(time.monotonic() - t0)
    return out, times


@pytest.mark.slow
async def test_clones_a_reference_and_streams_sentences(tiny_cfg, reference_wav):
    engine = create_engine(tiny_cfg)
    await engine.load()
    text = "Hello world. This is a test. One two three."
    chunks, times = await _collect(engine, text, voice=str(reference_wav))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.text for c in chunks] == ["Hello world.", "This is a test.", "One two three."]
    for c in chunks:
        assert c.sample_rate == engine.sample_rate == 24000
        assert c.audio.dtype == np.float32 and c.audio.ndim == 1 and len(c.audio) > 0
        assert np.isfinite(c.audio).all()
    # Sentence by sentence: the first is out well before the last.
    assert times[0] < 0.8 * times[-1]


@pytest.mark.slow
async def test_cancel_mid_reply(tiny_cfg, reference_wav):
    engine = create_engine(tiny_cfg)
    await engine.load()
    await _collect(engine, "Warm up.", voice=str(reference_wav))
    cancel = CancelToken()
    got, t_cancel = [], 0.0
    t0 = time.monotonic()
    async for chunk in engine.stream("Hello world. This is a test. One two three. Four five.",
                                     voice=str(reference_wav), cancel=cancel):
        got.append(chunk)
        cancel.cancel()
        t_cancel = time.monotonic()
    assert len(got) == 1
    # Stopped without synthesizing the rest (at most the sentence in flight).
    assert time.monotonic() - t_cancel < max(1.0, 2 * (t_cancel - t0))
    # A cancel set while a sentence is being made stops before its audio is yielded.
    late = CancelToken()
    asyncio.get_running_loop().call_later(0.05, late.cancel)
    chunks, _ = await _collect(engine, "Hello world.", voice=str(reference_wav), cancel=late)
    assert chunks == []


@pytest.mark.slow
async def test_builtin_voice_from_conds_pt_and_settings(tiny_cfg, tiny_chatterbox_dir, reference_wav, tmp_path):
    engine = create_engine(tiny_cfg)
    await engine.load()
    with pytest.raises(InputError, match="no conds.pt"):
        await _collect(engine, "Hello.")
    await _collect(engine, "Hello.", voice=str(reference_wav))
    folder = tmp_path / "with-conds"
    shutil.copytree(tiny_chatterbox_dir, folder)
    engine._model.conds.save(folder / "conds.pt")  # the library's own Conditionals format
    tiny_cfg.tts.chatterbox.model = str(folder)
    tiny_cfg.tts.chatterbox.exaggeration = 0.9
    tiny_cfg.tts.chatterbox.cfg_weight = 0.0
    tiny_cfg.tts.chatterbox.temperature = 0.5
    builtin = create_engine(tiny_cfg)
    assert builtin.voices() == ["builtin"]
    chunks, _ = await _collect(builtin, "Hello world.")
    assert len(chunks) == 1 and chunks[0].audio.dtype == np.float32 and len(chunks[0].audio) > 0


@pytest.mark.slow
async def test_turbo_clones_and_streams(cfg, tiny_chatterbox_turbo_dir, reference_wav, tmp_path):
    cfg.tts.engine = "chatterbox"
    cfg.tts.device = "cpu"
    cfg.tts.chatterbox.variant = "turbo"
    cfg.tts.chatterbox.model = str(tiny_chatterbox_turbo_dir)
    engine = create_engine(cfg)
    chunks, _ = await _collect(engine, "Hello world. This is a test.", voice=str(reference_wav))
    assert [c.text for c in chunks] == ["Hello world.", "This is a test."]
    assert all(c.sample_rate == 24000 and c.audio.dtype == np.float32 and len(c.audio) > 0 for c in chunks)
    assert [c.index for c in chunks] == [0, 1]
    short = tmp_path / "short.wav"
    data, sr = sf.read(reference_wav, dtype="float32")
    sf.write(short, data[: 2 * sr], sr)
    with pytest.raises(InputError, match="5 seconds"):
        await _collect(engine, "Hello.", voice=str(short))
