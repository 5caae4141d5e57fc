"""``voice ingest PATH... [--kb DIR] [--prune] [--rebuild]``: add files and folders to the knowledge base."""

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
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or folders (searched recursively); with --rebuild, default: the stored documents")
    p.add_argument("--kb", metavar="DIR", help="knowledge base folder (default: from config)")
    p.add_argument("--prune", action="store_true", help="also remove documents whose file is gone")
    p.add_argument("--rebuild", action="store_true",
                   help="drop the knowledge base and ingest again (after an upgrade of voice or a change"
                   " of rag.chunk_size)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary and skips")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from voice.errors import InputError
    from voice.rag import KnowledgeBase

    def progress(path: str, outcome: str, detail: str) -> None:
        if outcome == "skipped":
            print(f"skipped   {path}: {detail}", file=sys.stderr)
        elif not args.quiet:
            print(f"{outcome:<9} {path} ({detail})", flush=True)

    if not args.paths and not args.rebuild:
        raise InputError("give the files or folders to ingest (or --rebuild to re-read the stored ones)")
    with KnowledgeBase(cfg, args.kb) as kb:
        if args.rebuild:
            paths = kb.rebuild(args.paths)
            print(f"rebuilding {kb.location} from {len(paths)} paths", flush=True)
        else:
            paths = args.paths
        report = kb.ingest(paths, prune=args.prune, progress=progress)
        print(f"{report.summary()} -> {kb.location}")
    return 0 if report.ok else 1
