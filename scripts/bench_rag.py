#!/usr/bin/env python3
"""Retrieval latency per query at 1k and 10k chunks (Qdrant local mode), printed as JSON.

Per query: embedding the question (ONNX MiniLM) and the Qdrant search; the baseline in the same
run is an exact numpy dot product over the same vectors. Also checks that a real "needle" chunk
is found among the synthetic filler. Usage: .venv/bin/python scripts/bench_rag.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NEEDLES = {
    "The Zorblax fusion reactor in Tromsø produces 42 megawatts of power.":
        "How much power does the Zorblax reactor produce?",
    "Mount Ferrovel is a dormant volcano that last erupted in the year 1312.":
        "When did Mount Ferrovel last erupt?",
}
QUERIES = [*NEEDLES.values(), "When is the library open in winter?", "What did the finance team approve?",
           "Which trains were delayed?", "Tell me about the summer exhibition"]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(xs) * 1000, 2), "p95_ms": round(_pct(xs, 0.95) * 1000, 2),
            "mean_ms": round(statistics.fmean(xs) * 1000, 2)}


def bench_size(cfg, embedder, n: int, repeats: int, workdir: Path) -> dict:
    import numpy as np

    from voice.rag import KnowledgeBase
    from voice.rag.synthetic import build_synthetic_kb

    kb_dir = workdir / f"kb{n}"
    kb = KnowledgeBase(cfg, kb_dir, embedder=embedder)
    build = build_synthetic_kb(kb, n, needles=NEEDLES)
    kb.close()
    t0 = time.perf_counter()
    kb = KnowledgeBase(cfg, kb_dir, embedder=embedder)
    count = kb.store.count()  # forces the local store to load
    open_s = time.perf_counter() - t0
    # Baseline: the same vectors in a numpy matrix, exact dot product.
    pts, vecs, offset = [], [], None
    while True:
        batch, offset = kb.store._client.scroll(kb.rag.collection, limit=4096, offset=offset,
                                                with_vectors=True, with_payload=["source"])
        pts += [p.payload["source"] for p in batch]
        vecs += [p.vector for p in batch]
        if offset is None:
            break
    matrix = np.asarray(vecs, dtype=np.float32)
    embed_t, search_t, total_t, numpy_t = [], [], [], []
    found = 0
    for _ in range(repeats):
        for q in QUERIES:
            t0 = time.perf_counter()
            vec = embedder.embed_one(q)
            t1 = time.perf_counter()
            hits = kb.store.search(vec, kb.rag.top_k, kb.rag.score_threshold)
            t2 = time.perf_counter()
            embed_t.append(t1 - t0)
            search_t.append(t2 - t1)
            total_t.append(t2 - t0)
            t3 = time.perf_counter()
            scores = matrix @ vec
            top = np.argpartition(-scores, kb.rag.top_k)[: kb.rag.top_k]
            _ = [pts[i] for i in top[np.argsort(-scores[top])] if scores[i] >= kb.rag.score_threshold]
            numpy_t.append(time.perf_counter() - t3)
            if q in NEEDLES.values() and hits and "needle" in hits[0][1]["source"]:
                found += 1
    kb.close()
    return {
        "chunks": count, "build": build, "open_s": round(open_s, 3),
        "query_embed": _ms(embed_t), "qdrant_search": _ms(search_t), "retrieval_total": _ms(total_t),
        "baseline_numpy_search": _ms(numpy_t),
        "needle_top1": f"{found}/{repeats * len(NEEDLES)}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from voice.config import load_config
    from voice.rag.embedder import load_embedder

    cfg = load_config()
    embedder = load_embedder(cfg)
    t0 = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_rag_") as tmp:
        results = {str(n): bench_size(cfg, embedder, n, args.repeats, Path(tmp)) for n in args.sizes}
    print(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "embedder": embedder.name, "embedder_load_s": round(load_s, 3),
        "store": "qdrant local mode", "top_k": cfg.rag.top_k, "score_threshold": cfg.rag.score_threshold,
        "queries_per_size": args.repeats * len(QUERIES), "sizes": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
