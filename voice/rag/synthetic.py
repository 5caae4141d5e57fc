"""Synthetic knowledge bases of N units, built fast, for benchmarks (scripts/bench_rag.py,
scripts/bench_llm.py).

Embedding 10k real chunks takes minutes on a small CPU, so only a small set of real sentences is
embedded; every chunk's vector is a normalised random mix of a few of those plus noise, which
keeps the score distribution realistic. ``needles`` (text -> question) are embedded for real, so
a benchmark can check that retrieval still finds them among the filler.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from voice.rag.kb import KnowledgeBase
from voice.rag.lexical import doc_vector
from voice.rag.store import ChunkStore, point_id

_SUBJECTS = ["The harbour authority", "Our finance team", "The city library", "A local bakery",
             "The hiking club", "The school board", "The museum", "A software vendor",
             "The weather service", "The football club", "The railway company", "A chemistry lab"]
_VERBS = ["announced", "reviewed", "postponed", "approved", "described", "measured", "published",
          "cancelled", "renovated", "discussed", "reported", "planned"]
_OBJECTS = ["the annual budget", "a new opening schedule", "the rainfall statistics",
            "a safety inspection", "the membership fees", "a summer exhibition", "the delayed trains",
            "an updated privacy policy", "the results of the experiment", "a repair of the roof",
            "the winter timetable", "a volunteer programme"]


def synthetic_text(rng: random.Random, i: int) -> str:
    sentences = [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} in week {rng.randint(1, 52)}."
        for _ in range(rng.randint(3, 6))
    ]
    return f"Note {i}. " + " ".join(sentences)


def build_synthetic_kb(
    kb: KnowledgeBase,
    n_chunks: int,
    *,
    needles: Mapping[str, str] | None = None,
    seed: int = 0,
    base_texts: int = 64,
    batch: int = 1024,
) -> dict[str, Any]:
    """Fill ``kb`` (cleared first) with ``n_chunks`` filler chunks plus the needle chunks.

    Returns timings: ``embed_s`` (real embeddings), ``upsert_s``, ``chunks``.
    """
    import time

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    kb.clear()
    t0 = time.perf_counter()
    base = kb.embedder.embed([synthetic_text(rng, -k) for k in range(base_texts)])
    needle_texts = list(needles or {})
    needle_vecs = kb.embedder.embed(needle_texts) if needle_texts else np.zeros((0, base.shape[1]))
    embed_s = time.perf_counter() - t0
    dim = int(base.shape[1])
    kb.store.ensure(dim)

    def points() -> Iterator[Any]:
        for start in range(0, n_chunks, batch):
            n = min(batch, n_chunks - start)
            picks = nrng.integers(0, base_texts, size=(n, 3))
            weights = nrng.dirichlet(np.ones(3), size=n)[..., None]
            vecs = (base[picks] * weights).sum(axis=1) + nrng.normal(0, 0.03, size=(n, dim))
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for j in range(n):
                i = start + j
                src = f"/synthetic/doc{i // 20:05d}.txt"
                text = synthetic_text(rng, i)
                yield ChunkStore.make_point(
                    str(uuid.uuid5(uuid.NAMESPACE_OID, f"syn{seed}-{i}")), vecs[j].astype(np.float32),
                    doc_vector(text),
                    {"source": src, "chunk_index": i % 20, "n_chunks": 20, "text": text, "title": "",
                     "record": i % 20, "file_hash": f"synthetic-{i // 20}"},
                )
        for k, text in enumerate(needle_texts):
            src = f"/synthetic/needle{k}.txt"
            yield ChunkStore.make_point(
                point_id(src, "needle", 0), needle_vecs[k], doc_vector(text),
                {"source": src, "chunk_index": 0, "n_chunks": 1, "text": text, "title": "", "record": 0,
                 "file_hash": "needle"},
            )

    t0 = time.perf_counter()
    written = kb.store.upsert_points(points(), batch=batch)
    upsert_s = time.perf_counter() - t0
    return {"chunks": written, "embed_s": round(embed_s, 3), "upsert_s": round(upsert_s, 3)}


def synthetic_kb(cfg: Any, kb_dir: str | Path, n_chunks: int, **kwargs: Any) -> KnowledgeBase:
    """Open a local knowledge base in ``kb_dir`` and fill it; the caller closes it."""
    kb = KnowledgeBase(cfg, kb_dir, embedder=kwargs.pop("embedder", None))
    build_synthetic_kb(kb, n_chunks, **kwargs)
    return kb
