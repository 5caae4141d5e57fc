"""A small pure-torch stand-in for the parts of torchaudio that ChatTTS and Chatterbox use.

No torchaudio release runs beside the CPU build of torch 2.13 that voice installs (PyPI's
torchaudio wheels link CUDA libraries and fail to load). ChatTTS, vocos, encodec, s3tokenizer,
Chatterbox and its watermarker (perth) only use a few transforms from it at our code path:
``MelSpectrogram``/``Spectrogram``/``InverseSpectrogram``/``Resample``, ``melscale_fbanks`` and
``compliance.kaldi.fbank``, plus ``load``/``save``. :func:`ensure_torchaudio` registers this
module under the name ``torchaudio`` only when the real one cannot be imported; with a working
torchaudio installed, the real one is used and nothing here runs.

The implementations follow torchaudio's documented algorithms and keep its module layout and
buffer names (``spectrogram.window``, ``mel_scale.fb``), so state dicts saved with the real
torchaudio load unchanged.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__version__ = "0.0+voice.compat"


def ensure_torchaudio() -> str:
    """Import the real torchaudio, or register this stand-in. Returns "torchaudio" or "compat"."""
    current = sys.modules.get("torchaudio")
    if current is not None and getattr(current, "__version__", "") == __version__:
        return "compat"
    try:
        importlib.import_module("torchaudio")
        return "torchaudio"
    except (ImportError, OSError, RuntimeError):
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
    _register()
    return "compat"


def _register() -> None:
    root = types.ModuleType("torchaudio")
    root.__version__ = __version__  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchaudio.transforms")
    functional = types.ModuleType("torchaudio.functional")
    functional_functional = types.ModuleType("torchaudio.functional.functional")
    compliance = types.ModuleType("torchaudio.compliance")
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    for cls in (Spectrogram, InverseSpectrogram, MelScale, MelSpectrogram, Resample, TimeStretch):
        setattr(transforms, cls.__name__, cls)
    for fn in (melscale_fbanks, resample, _hz_to_mel, _mel_to_hz):
        setattr(functional, fn.__name__, fn)
        setattr(functional_functional, fn.__name__, fn)
    kaldi.fbank = fbank  # type: ignore[attr-defined]
    compliance.kaldi = kaldi  # type: ignore[attr-defined]
    functional.functional = functional_functional  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    root.functional = functional  # type: ignore[attr-defined]
    root.compliance = compliance  # type: ignore[attr-defined]
    root.load = load  # type: ignore[attr-defined]
    root.save = save  # type: ignore[attr-defined]
    import importlib.machinery

    for mod in (root, transforms, functional, functional_functional, compliance, kaldi):
        is_pkg = mod in (root, functional, compliance)
        mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None, is_package=is_pkg)
    sys.modules.update(
        {
            "torchaudio": root,
            "torchaudio.transforms": transforms,
            "torchaudio.functional": functional,
            "torchaudio.functional.functional": functional_functional,
            "torchaudio.compliance": compliance,
            "torchaudio.compliance.kaldi": kaldi,
        }
    )


# ----------------------------------------------------------------------------- I/O


def load(path: Any, *args: Any, **kwargs: Any) -> tuple[Tensor, int]:
    """(channels, frames) float32 and the sample rate, read with soundfile."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), int(sr)


def save(path: Any, src: Tensor, sample_rate: int, *args: Any, **kwargs: Any) -> None:
    import soundfile as sf

    sf.write(str(path), src.detach().cpu().numpy().T, int(sample_rate))


# ----------------------------------------------------------------------------- mel scale


def _hz_to_mel(freq: float, mel_scale: str = "htk") -> float:
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    if freq >= min_log_hz:
        mels = min_log_mel + math.log(freq / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: Tensor, mel_scale: str = "htk") -> Tensor:
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * torch.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> Tensor:
    """Triangular mel filter bank, shape (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = _mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up))
    if norm == "slaney":
        fb *= (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


# ----------------------------------------------------------------------------- transforms


class Spectrogram(nn.Module):
    window: Tensor

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        power: float | None = 2.0,
        normalized: bool | str = False,
        wkwargs: dict[str, Any] | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
        return_complex: bool | None = None,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        window = window_fn(self.win_length) if wkwargs is None else window_fn(self.win_length, **wkwargs)
        self.register_buffer("window", window)
        self.pad, self.power, self.normalized = pad, power, normalized
        self.center, self.pad_mode, self.onesided = center, pad_mode, onesided

    def forward(self, waveform: Tensor) -> Tensor:
        if self.pad > 0:
            waveform = F.pad(waveform, (self.pad, self.pad), "constant")
        shape = waveform.size()
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=self.normalized == "frame_length",
            onesided=self.onesided,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.normalized is True or self.normalized == "window":
            spec = spec / self.window.pow(2.0).sum().sqrt()
        if self.power is None:
            return spec
        if self.power == 1.0:
            return spec.abs()
        return spec.abs().pow(self.power)


class InverseSpectrogram(nn.Module):
    window: Tensor

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        normalized: bool | str = False,
        wkwargs: dict[str, Any] | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        window = window_fn(self.win_length) if wkwargs is None else window_fn(self.win_length, **wkwargs)
        self.register_buffer("window", window)
        self.pad, self.normalized, self.center, self.onesided = pad, normalized, center, onesided

    def forward(self, spectrogram: Tensor, length: int | None = None) -> Tensor:
        if self.normalized is True or self.normalized == "window":
            spectrogram = spectrogram * self.window.pow(2.0).sum().sqrt()
        shape = spectrogram.size()
        spec = spectrogram.reshape(-1, shape[-2], shape[-1])
        if length is not None:
            length = length + 2 * self.pad
        wave = torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            normalized=self.normalized == "frame_length",
            onesided=self.onesided,
            length=length,
            return_complex=False,
        )
        if self.pad > 0:
            wave = wave[:, self.pad : -self.pad]
        return wave.reshape(shape[:-2] + wave.shape[-1:])


class MelScale(nn.Module):
    fb: Tensor

    def __init__(
        self,
        n_mels: int = 128,
        sample_rate: int = 16000,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_stft: int = 201,
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        fb = melscale_fbanks(n_stft, f_min, f_max or float(sample_rate // 2), n_mels, sample_rate, norm, mel_scale)
        self.register_buffer("fb", fb)

    def forward(self, specgram: Tensor) -> Tensor:
        return torch.matmul(specgram.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        pad: int = 0,
        n_mels: int = 128,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        power: float = 2.0,
        normalized: bool = False,
        wkwargs: dict[str, Any] | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool | None = None,
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, pad=pad, window_fn=window_fn,
            power=power, normalized=normalized, wkwargs=wkwargs, center=center, pad_mode=pad_mode,
        )
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1, norm, mel_scale)

    def forward(self, waveform: Tensor) -> Tensor:
        return self.mel_scale(self.spectrogram(waveform))


class TimeStretch(nn.Module):
    """Constructed by the watermarker but not used on its embedding path."""

    def __init__(self, hop_length: int | None = None, n_freq: int = 201, fixed_rate: float | None = None) -> None:
        super().__init__()
        hop = hop_length if hop_length is not None else n_freq - 1
        self.register_buffer("phase_advance", torch.linspace(0, math.pi * hop, n_freq)[..., None])

    def forward(self, complex_specgrams: Tensor, overriding_rate: float | None = None) -> Tensor:
        raise NotImplementedError("TimeStretch is not part of voice's torchaudio stand-in")


# ----------------------------------------------------------------------------- resampling


def _sinc_kernel(orig: int, new: int, gcd: int, width_taps: int = 6, rolloff: float = 0.99) -> tuple[Tensor, int]:
    orig, new = orig // gcd, new // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(width_taps * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-width_taps, width_taps)
    window = torch.cos(t * math.pi / width_taps / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernels = kernels * window * (base / orig)
    return kernels.to(torch.float32), width


def _apply_kernel(waveform: Tensor, orig: int, new: int, gcd: int, kernel: Tensor, width: int) -> Tensor:
    orig, new = orig // gcd, new // gcd
    shape = waveform.size()
    waveform = waveform.reshape(-1, shape[-1])
    n, length = waveform.shape
    padded = F.pad(waveform, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(waveform.dtype), stride=orig)
    out = out.transpose(1, 2).reshape(n, -1)
    out = out[..., : int(math.ceil(new * length / orig))]
    return out.reshape(shape[:-1] + out.shape[-1:])


def resample(waveform: Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99, **_: Any) -> Tensor:
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    kernel, width = _sinc_kernel(int(orig_freq), int(new_freq), gcd, lowpass_filter_width, rolloff)
    return _apply_kernel(waveform, int(orig_freq), int(new_freq), gcd, kernel.to(waveform.device), width)


class Resample(nn.Module):
    kernel: Tensor

    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, resampling_method: str = "sinc_interp_hann",
                 lowpass_filter_width: int = 6, rolloff: float = 0.99, beta: float | None = None,
                 *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        self.gcd = math.gcd(self.orig_freq, self.new_freq)
        if self.orig_freq != self.new_freq:
            kernel, self.width = _sinc_kernel(self.orig_freq, self.new_freq, self.gcd, lowpass_filter_width, rolloff)
            self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        if self.orig_freq == self.new_freq:
            return waveform
        return _apply_kernel(waveform, self.orig_freq, self.new_freq, self.gcd, self.kernel, self.width)


# ----------------------------------------------------------------------------- Kaldi fbank


def _kaldi_mel(freq: Tensor | float) -> Any:
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _kaldi_mel_banks(num_bins: int, padded: int, sample_freq: float, low_freq: float, high_freq: float) -> Tensor:
    num_fft_bins = padded // 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    fft_bin_width = sample_freq / padded
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _kaldi_mel(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(up, down))


def fbank(
    waveform: Tensor,
    *,
    dither: float = 0.0,
    energy_floor: float = 1.0,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    high_freq: float = 0.0,
    low_freq: float = 20.0,
    num_mel_bins: int = 23,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    sample_frequency: float = 16000.0,
    snip_edges: bool = True,
    subtract_mean: bool = False,
    use_log_fbank: bool = True,
    use_power: bool = True,
    window_type: str = "povey",
    channel: int = -1,
    **unsupported: Any,
) -> Tensor:
    """Kaldi-compatible log mel filter bank features, (frames, num_mel_bins); povey/hanning windows."""
    if unsupported.get("use_energy") or unsupported.get("htk_compat") or unsupported.get("vtln_warp", 1.0) != 1.0:
        raise NotImplementedError(f"fbank options not supported by voice's stand-in: {sorted(unsupported)}")
    device, dtype = waveform.device, waveform.dtype
    wave = waveform[max(channel, 0), :]
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    n = wave.numel()
    if not snip_edges:
        raise NotImplementedError("fbank(snip_edges=False) is not supported by voice's stand-in")
    if n < size:
        return torch.empty((0, num_mel_bins), device=device, dtype=dtype)
    m = 1 + (n - size) // shift
    frames = wave.as_strided((m, size), (shift * wave.stride(0), wave.stride(0)))
    if dither != 0.0:
        frames = frames + dither * torch.randn_like(frames)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        prev = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
        frames = frames - preemphasis_coefficient * prev[:, :-1]
    if window_type == "povey":
        window = torch.hann_window(size, periodic=False, device=device, dtype=dtype).pow(0.85)
    elif window_type == "hanning":
        window = torch.hann_window(size, periodic=False, device=device, dtype=dtype)
    elif window_type == "hamming":
        window = torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, device=device, dtype=dtype)
    else:
        raise NotImplementedError(f"fbank window {window_type!r} is not supported by voice's stand-in")
    frames = frames * window.unsqueeze(0)
    if padded != size:
        frames = F.pad(frames, (0, padded - size))
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = _kaldi_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq).to(device, dtype)
    banks = F.pad(banks, (0, 1))
    feats = torch.mm(spectrum, banks.T)
    if use_log_fbank:
        feats = torch.max(feats, torch.tensor(torch.finfo(torch.float).eps, device=device, dtype=dtype)).log()
    if subtract_mean:
        feats = feats - feats.mean(dim=0, keepdim=True)
    return feats
