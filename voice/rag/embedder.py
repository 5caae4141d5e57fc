"""Sentence embeddings on onnxruntime + tokenizers (no torch).

The model is a BERT-style sentence-transformer exported to ONNX (default all-MiniLM-L6-v2 int8):
WordPiece tokens (truncated to ``max_tokens``), the encoder's ``last_hidden_state``, mean pooling
over the attention mask and L2 normalisation, so a dot product is the cosine similarity.

fastembed can load the same folder (``specific_model_path``), but needs a hand-written
``tokenizer_config.json`` and five more dependencies; the pipeline here is the same and was
checked against fastembed's vectors (cosine > 0.9999).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from voice.errors import ModelNotAvailable

log = logging.getLogger(__name__)


def _find_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


class OnnxEmbedder:
    """Embeds texts into L2-normalised float32 vectors. Loads lazily; thread-safe."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str = "embedder",
        providers: list[str] | None = None,
        threads: int = 0,
        max_tokens: int = 256,
        batch_size: int = 32,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.name = name
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()
        self._dim: int | None = None

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Open the ONNX session and the tokenizer (once)."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            model = _find_file(self.model_dir, ("model.onnx", "onnx/model.onnx", "model_quantized.onnx"))
            tok = _find_file(self.model_dir, ("tokenizer.json", "onnx/tokenizer.json"))
            if model is None or tok is None:
                raise ModelNotAvailable(
                    f"embedder folder {self.model_dir} needs model.onnx and tokenizer.json"
                )
            tokenizer = Tokenizer.from_file(str(tok))
            tokenizer.enable_truncation(max_length=self.max_tokens)
            pad_id = tokenizer.token_to_id("[PAD]")
            tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.threads > 0:
                opts.intra_op_num_threads = self.threads
            session = ort.InferenceSession(str(model), sess_options=opts, providers=self.providers)
            self._inputs = tuple(i.name for i in session.get_inputs())
            dim = session.get_outputs()[0].shape[-1]
            self._dim = dim if isinstance(dim, int) else None
            self._tokenizer = tokenizer
            self._session = session
            log.debug("embedder %s loaded from %s (%s)", self.name, model, self.providers)

    @property
    def dim(self) -> int:
        """Vector size (runs one tiny embedding when the model does not declare it)."""
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        """Vectors for ``texts`` as an array of shape (len(texts), dim), rows of unit length.

        Texts are sorted by length before batching so padding stays small; the output is in
        the input order.
        """
        self.load()
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        bs = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            vecs = self._run([texts[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _run(self, texts: list[str]) -> np.ndarray:
        encs = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def load_embedder(cfg: Any) -> OnnxEmbedder:
    """The embedder named by ``cfg.rag.embedder`` (registry name or folder), not yet loaded."""
    from voice.devices import choose, probe_for
    from voice.models import registry_for

    res = registry_for(cfg).resolve(cfg.rag.embedder, kind="embedder")
    choice = choose(cfg.rag.embedder_device, probe_for("onnxruntime"), runtime="onnxruntime",
                    cpu_compute="float32", cuda_compute="float32")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if choice.device == "cuda" else None
    log.info("embedder %s on %s (%s)", res.name, choice.device, choice.reason)
    return OnnxEmbedder(res.path, name=res.name, providers=providers)
