"""``voice ingest PATH... [--kb DIR] [--prune]``: add files and folders to the knowledge base."""

from __future__ import annotations

import argparse
import sys

from voice.commands import Subparsers
from voice.config import Config


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "ingest",
        help="add .txt/.md/.html/.csv/.pdf files and folders to the knowledge base",
        description="Read, split, embed and store documents. Unchanged files are skipped, changed"
        " files replaced. Exits 1 when any file was skipped.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    p.add_argument("--kb", metavar="DIR", help="knowledge base folder (default: from config)")
    p.add_argument("--prune", action="store_true", help="also remove documents whose file is gone")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and skips")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from voice.rag import KnowledgeBase

    def progress(path: str, outcome: str, detail: str) -> None:
        if outcome == "skipped":
            print(f"skipped   {path}: {detail}", file=sys.stderr)
        elif not args.quiet:
            print(f"{outcome:<9} {path} ({detail})", flush=True)

    with KnowledgeBase(cfg, args.kb) as kb:
        report = kb.ingest(args.paths, prune=args.prune, progress=progress)
        print(f"{report.summary()} -> {kb.location}")
    return 0 if report.ok else 1
