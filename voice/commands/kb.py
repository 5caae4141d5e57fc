"""``voice kb list|remove PATH|clear|search QUERY [--kb DIR]``: look after the knowledge base."""

from __future__ import annotations

import argparse
import json

from voice.commands import Subparsers
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser("kb", help="list, search, remove or clear documents in the knowledge base")
    kbsub = p.add_subparsers(dest="kb_command", metavar="ACTION", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        q = kbsub.add_parser(name, help=help_)
        q.add_argument("--kb", metavar="DIR", help="knowledge base folder (default: from config)")
        q.set_defaults(handler=run)
        return q

    lst = add("list", "list stored documents")
    lst.add_argument("--json", action="store_true", help="print JSON lines")
    rm = add("remove", "remove a document (or every document under a folder)")
    rm.add_argument("path", metavar="PATH")
    add("clear", "remove every document")
    se = add("search", "show the passages retrieval would use for a query")
    se.add_argument("query")
    se.add_argument("-k", "--top-k", type=int, help="passages to return (default: rag.top_k)")
    se.add_argument("--threshold", type=float, help="minimum cosine similarity (default: rag.score_threshold)")
    se.add_argument("--json", action="store_true", help="print JSON lines")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from voice.commands import apply_flags
    from voice.rag import KnowledgeBase

    action = args.kb_command
    if action == "search":
        apply_flags(cfg, {"rag.top_k": args.top_k, "rag.score_threshold": args.threshold},
                    {"rag.top_k": "-k/--top-k", "rag.score_threshold": "--threshold"})
    with KnowledgeBase(cfg, args.kb) as kb:
        if action == "list":
            docs = kb.list_documents()
            for d in docs:
                if args.json:
                    print(json.dumps({"source": d.source, "chunks": d.chunks, "sha256": d.file_hash,
                                      "complete": d.complete, "exists": d.exists}))
                else:
                    flags = ("" if d.exists else "  [file gone]") + ("" if d.complete else "  [incomplete]")
                    print(f"{d.chunks:>5} chunks  {d.file_hash[:12]}  {d.source}{flags}")
            if not args.json:
                print(f"{len(docs)} documents in {kb.location}")
        elif action == "remove":
            for s in kb.remove(args.path):
                print(f"removed {s}")
        elif action == "clear":
            n = len(kb.list_documents())
            kb.clear()
            print(f"cleared {n} documents from {kb.location}")
        elif action == "search":
            hits = kb.search(args.query)
            if hits and not args.json:
                print("  dense   bm25   fused  source #unit (title)")
            for p in hits:
                if args.json:
                    print(json.dumps({"score": round(p.score, 4), "bm25": round(p.lexical, 3),
                                      "fused": round(p.fused, 5), "source": p.source,
                                      "chunk": p.chunk_index, "title": p.title, "text": p.text}))
                else:
                    title = f" ({p.title})" if p.title else ""
                    print(f"{p.score:7.3f} {p.lexical:6.2f} {p.fused:7.4f}  {p.source} #{p.chunk_index}{title}\n"
                          f"      {' '.join(p.text.split())[:300]}")
            if not hits and not args.json:
                print("no passage reaches the score threshold")
    return 0
