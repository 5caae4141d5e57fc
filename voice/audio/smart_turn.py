"""Smart Turn v3.2: is the speaker done? One probability from the utterance so far.

The model (BSD-2, 8.7 MB ONNX, shipped in the ``pipecat-ai`` wheel; registry name
``smart-turn-v3.2``) takes the last 8 s of 16 kHz audio, zero-padded at the start, normalized to
zero mean and unit variance, as Whisper log-mel features (80 bins x 800 frames of 10 ms), and
returns the probability that the turn is complete. Features come from faster-whisper's numpy
extractor (the same math as ``transformers.WhisperFeatureExtractor(chunk_length=8)``, which the
model was trained with: ``scripts/bench_smart_turn.py --check-features`` found at most 2.2e-5 apart on
the 28 inputs it tries, and the same probabilities as the features pipecat computes).

:meth:`SmartTurn.predict` blocks for ~150-200 ms on one CPU thread: callers run it in a thread,
never on the event loop.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from voice.audio.pcm import SAMPLE_RATE

#: The model sees this much audio (the end of the utterance).
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
MODEL_NAME = "smart-turn-v3.2"


def window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of ``audio`` (16 kHz mono), zero-padded at the start, normalized."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if x.shape[0] < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.shape[0], np.float32), x])
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


class SmartTurn:
    """End-of-turn classifier; the ONNX session loads on first :meth:`predict` (thread-safe)."""

    def __init__(self, model_path: str | Path, *, threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        self._session: Any = None
        self._extractor: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Load the ONNX session now (blocking, ~0.1-0.3 s): e.g. while the user is still speaking."""
        self._load()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                import onnxruntime
                from faster_whisper.feature_extractor import FeatureExtractor

                opts = onnxruntime.SessionOptions()
                opts.inter_op_num_threads = 1
                opts.intra_op_num_threads = self.threads
                opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                opts.log_severity_level = 4
                self._extractor = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
                self._session = onnxruntime.InferenceSession(
                    str(self.model_path), providers=["CPUExecutionProvider"], sess_options=opts
                )
        return self._session, self._extractor

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The model's input for ``audio``: float32 (1, 80, 800)."""
        _, extractor = self._load()
        feats = extractor(window(audio), padding=0)
        return np.asarray(feats, dtype=np.float32)[None, :, : WINDOW_SAMPLES // 160]

    def predict(self, audio: np.ndarray) -> float:
        """Probability (0..1) that the utterance in ``audio`` (16 kHz float32) is complete."""
        session, _ = self._load()
        out = session.run(None, {"input_features": self.features(audio)})
        return float(np.asarray(out[0]).reshape(-1)[0])


def load_smart_turn(registry: Any, name: str = MODEL_NAME, *, threads: int = 1) -> SmartTurn:
    """A :class:`SmartTurn` for the registry model ``name`` (resolved now: a missing package
    raises :class:`voice.errors.ModelNotAvailable` with the pip command; the ONNX loads later)."""
    return SmartTurn(registry.resolve(name, kind="turn", progress=False).path, threads=threads)


def check_configured(cfg: Any) -> None:
    """With ``vad.end_of_turn = "smart_turn"``, fail now (before slow loads) if the model is missing."""
    if cfg.vad.end_of_turn == "smart_turn":
        from voice.models import registry_for

        load_smart_turn(registry_for(cfg))
