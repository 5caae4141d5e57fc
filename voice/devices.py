"""Pick cuda or cpu per engine. ``auto`` picks cuda only when a real warm-up on it works.

Missing CUDA libraries often show up only when a kernel runs, so each runtime has a probe that
does real work on the GPU (a CTranslate2 encode, a torch matmul, an ONNX Runtime session run).
Probe results are cached per process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from voice.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    """The device an engine will use, and why."""

    device: str  # "cpu" or "cuda"
    compute_type: str  # e.g. int8 / float16 (CTranslate2), float32 (torch)
    reason: str


Probe = Callable[[], None]
"""Does one real piece of work on CUDA; raises when CUDA does not work."""


def choose(
    requested: str,
    probe: Probe,
    *,
    runtime: str,
    cpu_compute: str = "int8",
    cuda_compute: str = "float16",
    compute_type: str | None = None,
) -> DeviceChoice:
    """Resolve ``auto|cpu|cuda`` for one engine using ``probe`` as the CUDA warm-up."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise DeviceError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu":
        return DeviceChoice("cpu", compute_type or cpu_compute, "cpu requested in config")
    error = _probe_cached(runtime, probe)
    if error is None:
        why = "cuda requested" if requested == "cuda" else f"auto: {runtime} warm-up on cuda worked"
        return DeviceChoice("cuda", compute_type or cuda_compute, why)
    if requested == "cuda":
        raise DeviceError(f"device = cuda but {runtime} cannot use CUDA: {error}")
    return DeviceChoice("cpu", compute_type or cpu_compute, f"auto: no working CUDA for {runtime} ({error})")


_results: dict[str, str | None] = {}


def _probe_cached(runtime: str, probe: Probe) -> str | None:
    """None when the probe worked, else a one-line reason. Cached per runtime per process."""
    if runtime not in _results:
        try:
            probe()
            _results[runtime] = None
        except Exception as err:  # noqa: BLE001 - any failure means "cuda does not work"
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.debug("%s cuda probe failed: %s", runtime, msg)
            _results[runtime] = msg
    return _results[runtime]


def reset_probe_cache() -> None:
    _results.clear()


# ----------------------------------------------------------------------------- probes


def ctranslate2_probe(model_path: str | None = None) -> Probe:
    """Device count, then one real Whisper encode on cuda when a model folder is given."""

    def probe() -> None:
        import ctranslate2
        import numpy as np

        n = ctranslate2.get_cuda_device_count()
        if n < 1:
            raise RuntimeError("CTranslate2 sees no CUDA device")
        if model_path is None:
            return
        model = ctranslate2.models.Whisper(model_path, device="cuda", compute_type="float16")
        n_mels = model.n_mels if hasattr(model, "n_mels") else 80
        feats = ctranslate2.StorageView.from_array(np.zeros((1, n_mels, 3000), dtype=np.float32))
        model.encode(feats)

    return probe


def torch_probe() -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is false")
    a = torch.ones((64, 64), device="cuda")
    float((a @ a).sum().item())


def onnxruntime_probe() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")


def llamacpp_probe() -> None:
    """llama.cpp offloads to a GPU only when its wheel was built with CUDA and sees a device."""
    import ctypes.util

    if ctypes.util.find_library("cuda") is None:
        raise RuntimeError("no CUDA driver library (libcuda) found")
    import xllamacpp

    info = getattr(xllamacpp, "get_device_info", None)
    if info is None:
        raise RuntimeError("this xllamacpp build reports no GPU devices")
    devices = [d for d in info() if "cpu" not in str(d).lower()]
    if not devices:
        raise RuntimeError("this xllamacpp build found no GPU device")


@functools.cache
def probe_for(runtime: str) -> Probe:
    return {
        "ctranslate2": ctranslate2_probe(),
        "torch": torch_probe,
        "onnxruntime": onnxruntime_probe,
        "llama.cpp": llamacpp_probe,
    }[runtime]
