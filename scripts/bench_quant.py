#!/usr/bin/env python3
"""Prefill and decode speed of two GGUF files of one model, interleaved in one run (JSON).

Why: the packaged Qwen2.5 0.5B is mostly Q5_0, which llama.cpp does not repack for AVX2;
``qwen2.5-0.5b-instruct-q4_0`` is the same weights requantized to Q4_0 (voice/requant.py). Both
servers run at once (one slot each, host prompt cache off); for each question of the retrieval
evaluation set (tests/data/rag_eval among the Python reference topics, as in bench_rag.py) the
grounded prompt is sent to one then the other (the order alternates), after a reset request that
leaves only the fixed prefix (system prompt, context header) cached: the passages and the question
are new, as in a conversation. Reported from llama.cpp's own timings: tokens prefilled, prefill
ms and tokens/s, time to first token (client side), and decode tokens/s of a 40-token answer.
Accuracy is not measured here: scripts/bench_rag.py --llm MODEL does that.

Usage: .venv/bin/python scripts/bench_quant.py [--a qwen2.5-0.5b-instruct] [--b qwen2.5-0.5b-instruct-q4_0]
       [--questions 38] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


async def _ask(client: Any, model: str, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first: float | None = None
    timings: dict[str, Any] = {}
    stream = await client.chat.completions.create(model=model, messages=messages, stream=True, temperature=0.0,
                                                  max_tokens=max_tokens, extra_body={"cache_prompt": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        timings = (getattr(chunk, "model_extra", None) or {}).get("timings") or timings
    return {"ttft_s": first, **{k: timings.get(k) for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms")}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in rows if r.get(key) is not None))

    return {
        "prefilled_tokens_median": med("prompt_n"),
        "prefill_ms_median": round(med("prompt_ms"), 1),
        "prefill_tokens_per_s_median": round(statistics.median(r["prompt_n"] / r["prompt_ms"] * 1000 for r in rows), 1),
        "ttft_s_median": round(med("ttft_s"), 3),
    }


async def run(args: argparse.Namespace, per_q: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    import copy

    from voice.llm import LlmRuntime
    from voice.llm.prompt import SPEECH_SYSTEM_PROMPT, build_messages
    from voice.rag import Passage

    reset = build_messages(SPEECH_SYSTEM_PROMPT, [], "Hello", [Passage("Nothing here.", "reset", 0.0)])
    out: dict[str, Any] = {}
    async with LlmRuntime() as runtime:
        clients = {}
        for name in (args.a, args.b):
            c = copy.deepcopy(cfg)
            c.llm.embedded.model = name
            c.llm.embedded.parallel = 1
            c.llm.embedded.cache_ram_mib = 0
            info = await runtime.embedded(c)
            client, ep = await runtime.client(c)
            clients[name] = (client, ep.model)
            out[name] = {"file": info.model_path.name, "size_mb": round(info.model_path.stat().st_size / 1e6)}
        rows: dict[str, list[dict[str, Any]]] = {args.a: [], args.b: []}
        decode: dict[str, list[float]] = {args.a: [], args.b: []}
        for i, r in enumerate(per_q):
            messages = build_messages(SPEECH_SYSTEM_PROMPT, [], r["q"], r["context"])
            for name in ((args.a, args.b) if i % 2 == 0 else (args.b, args.a)):
                client, model = clients[name]
                await _ask(client, model, reset, 1)
                rows[name].append(await _ask(client, model, messages, 1))
                if i < args.decode_questions:
                    res = await _ask(client, model, messages, 40)  # prompt cached now: decode only
                    if res["predicted_n"] and res["predicted_ms"]:
                        decode[name].append(res["predicted_n"] / res["predicted_ms"] * 1000)
        for name in (args.a, args.b):
            out[name].update(_summary(rows[name]))
            out[name]["decode_tokens_per_s_median"] = round(statistics.median(decode[name]), 1) if decode[name] else None
        a, b = out[args.a], out[args.b]
        out["ratio_b_over_a"] = {
            "prefill_ms": round(b["prefill_ms_median"] / a["prefill_ms_median"], 3),
            "ttft": round(b["ttft_s_median"] / a["ttft_s_median"], 3),
            "decode_tokens_per_s": (round(b["decode_tokens_per_s_median"] / a["decode_tokens_per_s_median"], 3)
                                    if a["decode_tokens_per_s_median"] and b["decode_tokens_per_s_median"] else None),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="qwen2.5-0.5b-instruct", help="the baseline model (registry name or path)")
    ap.add_argument("--b", default="qwen2.5-0.5b-instruct-q4_0", help="the model compared with it")
    ap.add_argument("--questions", type=int, default=38)
    ap.add_argument("--decode-questions", type=int, default=8, help="questions also timed for decode speed")
    ap.add_argument("--workdir", type=Path, help="keep the corpus and knowledge base here (reused by a rerun)")
    args = ap.parse_args()

    import bench_rag

    from voice.config import load_config
    from voice.rag.embedder import load_embedder

    cfg = load_config(environ={})
    cfg.llm.timeout_s = 600.0
    start_load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_quant_") as tmp_name:
        work = args.workdir or Path(tmp_name)
        cfg.general.data_dir = str(work / "data")
        embedder = load_embedder(cfg)
        embedder.load()
        _, per_q, _ = bench_rag.retrieval_eval(cfg, embedder, work / "eval")
        result = asyncio.run(run(args, per_q[: args.questions], cfg))
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "load_avg_start": start_load, "load_avg_end": os.getloadavg()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
