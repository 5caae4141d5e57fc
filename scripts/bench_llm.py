#!/usr/bin/env python
"""LLM benchmark: prints JSON.

- ttft: time to first token through the chain vs a direct OpenAI-SDK request with the same
  messages to the same embedded server, alternating, in one run (goal: ratio <= 1.10); the
  headline ratio is the worse of "new question" (each variant first) and "cached question".
- tokens_per_s: generation speed (server-side token count over streaming time).
- retrieval: KnowledgeBase.search latency per query (embedding included) at 1k and 10k chunks.
- first_turn: time to first token for a question with retrieval (top-k passages) vs with every
  document pasted into the prompt (the baseline), prompt cache defeated with a fresh prefix.

Usage: .venv/bin/python scripts/bench_llm.py [--model qwen2.5-0.5b-instruct] [--runs 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.config import load_config  # noqa: E402
from voice.llm import LlmRuntime, create_chain  # noqa: E402
from voice.llm.prompt import SPEECH_SYSTEM_PROMPT, build_messages  # noqa: E402

QUESTIONS = [
    "What is the tallest mountain in Africa?",
    "Why is the sky blue?",
    "How many legs does a spider have?",
    "What do bees make?",
    "Name a planet with rings.",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
    "What colour is a ripe banana?",
]

TOPICS = ["lighthouse", "orchard", "observatory", "brewery", "library", "railway", "museum", "harbour"]


def make_docs(folder: Path) -> dict[str, str]:
    """Eight ~250-word documents, each with one fact a model cannot know."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, topic in enumerate(TOPICS):
        fact = f"The {topic} of Vellmar is managed by Ingrid Kavanagh{i} since the spring."
        filler = " ".join(
            f"The {topic} has {k + 3} rooms on floor {k}, painted in a pale colour, and visitors"
            f" often remark on the quiet atmosphere of room {k}." for k in range(5)
        )
        text = f"{fact} {filler}"
        (folder / f"{topic}.txt").write_text(text)
        out[topic] = text
    return out


async def ttft_stream(agen: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    first = None
    n = 0
    async for _ in agen:
        if first is None:
            first = time.perf_counter() - t0
        n += 1
    return (first if first is not None else float("nan")), n


async def direct_stream(client: Any, model: str, messages: list[dict[str, Any]], llm: Any) -> Any:
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, temperature=llm.temperature, max_tokens=llm.max_tokens
    )
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content
    finally:
        await stream.close()


async def tokens_predicted(http: Any, root: str) -> float:
    text = (await http.get(root + "/metrics")).text
    m = re.search(r"^llamacpp:tokens_predicted_total (\S+)", text, re.M)
    return float(m.group(1)) if m else float("nan")


def retrieval_bench(cfg: Any, tmp: Path, sizes: list[int], queries: int) -> dict[str, Any]:
    from voice.rag import KnowledgeBase
    from voice.rag.synthetic import build_synthetic_kb

    out: dict[str, Any] = {}
    real = {f"The {t} of Vellmar opens at {7 + i} in the morning.": f"When does the {t} open?"
            for i, t in enumerate(TOPICS)}
    for n in sizes:
        kb = KnowledgeBase(cfg, tmp / f"kb{n}")
        try:
            t0 = time.perf_counter()
            # Real text for a few units, synthetic ones for the bulk (same search cost).
            build_synthetic_kb(kb, n - len(real), needles=real)
            build_s = time.perf_counter() - t0
            kb.search("warm up")
            lat, emb = [], []
            for q in range(queries):
                query = f"When does the {TOPICS[q % len(TOPICS)]} open?"
                t0 = time.perf_counter()
                kb.embedder.embed_one(query)
                emb.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                hits = kb.search(query)
                lat.append(time.perf_counter() - t0)
            out[f"{n}"] = {
                "units": kb.store.count(),
                "search_ms_median": round(statistics.median(lat) * 1000, 2),
                "search_ms_p90": round(sorted(lat)[int(0.9 * (len(lat) - 1))] * 1000, 2),
                "of_which_embedding_ms_median": round(statistics.median(emb) * 1000, 2),
                "top_hit_is_real_unit": bool(hits and "needle" in hits[0].source),
                "build_s": round(build_s, 1),
            }
        finally:
            kb.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b-instruct", help="llm.embedded.model")
    ap.add_argument("--runs", type=int, default=6, help="TTFT pairs (chain vs direct; rounded up to even)")
    ap.add_argument("--queries", type=int, default=20, help="retrieval queries per store size")
    ap.add_argument("--sizes", default="1000,10000", help="store sizes in chunks")
    args = ap.parse_args()

    import httpx

    cfg = load_config(environ={})
    cfg.llm.embedded.model = args.model
    cfg.llm.temperature = 0.0
    cfg.llm.timeout_s = 600.0  # long pasted prompts prefill slowly on a busy CPU
    cfg.llm.max_tokens = 48
    tmp = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    cfg.general.data_dir = str(tmp / "data")
    result: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
                              "model": args.model}

    async with LlmRuntime() as runtime:
        t0 = time.perf_counter()
        info = await runtime.embedded(cfg)
        result["server"] = {"start_s": round(time.perf_counter() - t0, 2), "device": info.device,
                            "n_gpu_layers": info.n_gpu_layers}
        chain = create_chain(cfg, app=runtime)  # no kb: the same prompt as the direct request
        client, ep = await runtime.client(cfg)
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {info.api_key}"}, timeout=30)
        await ttft_stream(direct_stream(client, ep.model, build_messages(SPEECH_SYSTEM_PROMPT, [], "Hi", []), cfg.llm))

        # Both variants send the same prompt, so whichever goes second finds the question in
        # llama.cpp's prompt cache: compare first-with-first and second-with-second, over an
        # even number of pairs so each variant goes first equally often.
        runs = args.runs + args.runs % 2
        times: dict[tuple[str, int], list[float]] = {(w, k): [] for w in ("chain", "direct") for k in (0, 1)}
        for i in range(runs):
            q = QUESTIONS[i % len(QUESTIONS)]
            msgs = build_messages(SPEECH_SYSTEM_PROMPT, [], q, [])
            order = ("chain", "direct") if i % 2 == 0 else ("direct", "chain")
            for pos, which in enumerate(order):
                if which == "chain":
                    chain.memory.clear()
                    t = (await ttft_stream(chain.astream(q, turn_id=i)))[0]
                else:
                    t = (await ttft_stream(direct_stream(client, ep.model, msgs, cfg.llm)))[0]
                times[(which, pos)].append(t)

        def med(which: str, pos: int) -> float:
            return statistics.median(times[(which, pos)])

        cold = med("chain", 0) / med("direct", 0)
        warm = med("chain", 1) / med("direct", 1)
        result["ttft"] = {"ratio": round(max(cold, warm), 3), "goal_ratio_max": 1.10, "pairs": runs,
                          "new_question": {"chain_ms_median": round(med("chain", 0) * 1000, 1),
                                           "direct_ms_median": round(med("direct", 0) * 1000, 1),
                                           "ratio": round(cold, 3)},
                          "cached_question": {"chain_ms_median": round(med("chain", 1) * 1000, 1),
                                              "direct_ms_median": round(med("direct", 1) * 1000, 1),
                                              "ratio": round(warm, 3)},
                          "all_ms": {f"{w}_{'first' if k == 0 else 'second'}": [round(x * 1000) for x in v]
                                     for (w, k), v in times.items()}}

        cfg.llm.max_tokens = 160
        chain.memory.clear()
        before = await tokens_predicted(http, info.root_url)
        t0 = time.perf_counter()
        first = None
        async for _ in chain.astream("Tell me a long story about a lighthouse keeper.", turn_id=99):
            first = first or time.perf_counter()
        end = time.perf_counter()
        n_tok = await tokens_predicted(http, info.root_url) - before
        result["generation"] = {"tokens": n_tok, "tokens_per_s": round((n_tok - 1) / (end - (first or t0)), 1)}
        cfg.llm.max_tokens = 48

        # First turn: retrieval vs the whole documents pasted; a fresh system prefix each time
        # defeats llama.cpp's prompt cache so both pay the full prefill.
        from voice.rag import KnowledgeBase

        docs = make_docs(tmp / "docs")
        kb = KnowledgeBase(cfg, tmp / "kb_docs")
        kb.ingest([tmp / "docs"])
        rag_t, paste_t, rag_hits = [], [], []
        everything = [type("P", (), {"text": t, "source": f"{k}.txt", "score": 1.0})() for k, t in docs.items()]
        for i in range(2):
            topic = TOPICS[i]
            q = f"Who manages the {topic} of Vellmar?"
            nonce = f"Session {uuid.uuid4().hex[:8]}. "
            cfg.llm.system_prompt = nonce + SPEECH_SYSTEM_PROMPT
            c = create_chain(cfg, kb=kb, app=runtime)
            t0 = time.perf_counter()
            ttft, _ = await ttft_stream(c.astream(q, turn_id=1))
            rag_t.append(ttft)
            rag_hits.append(len(c.last_sources))
            nonce = f"Session {uuid.uuid4().hex[:8]}. "
            msgs = build_messages(nonce + SPEECH_SYSTEM_PROMPT, [], q, everything)
            paste_t.append((await ttft_stream(direct_stream(client, ep.model, msgs, cfg.llm)))[0])
        cfg.llm.system_prompt = None
        pasted_chars = sum(len(t) for t in docs.values())
        result["first_turn"] = {
            "with_retrieval_ms": [round(x * 1000) for x in rag_t],
            "whole_documents_pasted_ms": [round(x * 1000) for x in paste_t],
            "speedup": round(statistics.median(paste_t) / statistics.median(rag_t), 2),
            "passages_used": rag_hits, "documents": len(docs), "pasted_chars": pasted_chars,
            "note": "retrieval time (embedding + search) is included in with_retrieval_ms",
        }
        kb.close()
        await http.aclose()
        await client.close()
        await chain.aclose()

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result["retrieval"] = await asyncio.to_thread(retrieval_bench, cfg, tmp, sizes, args.queries)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
