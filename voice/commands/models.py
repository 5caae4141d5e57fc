"""``voice models``: every registered model, its other names, where it would load from, and whether it is here."""

from __future__ import annotations

import argparse
import json

from voice.commands import Subparsers
from voice.config import Config
from voice.errors import InputError
from voice.models import registry_for


def register(sub: Subparsers) -> None:
    p = sub.add_parser("models", help="list models, their sources, sizes and availability")
    p.add_argument("--kind", help="only this kind (asr, llm, tts-piper, embedder, ...)")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--fetch", metavar="NAME", help="assemble or download NAME into the cache now")
    p.set_defaults(handler=run)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def run(args: argparse.Namespace, cfg: Config) -> int:
    reg = registry_for(cfg)
    if args.fetch:
        res = reg.resolve(args.fetch)
        print(f"{res.name}: {res.path} ({res.source})")
        return 0
    kinds = sorted({e.kind for e in reg.entries().values()})
    if args.kind is not None and args.kind not in kinds:
        raise InputError(f"--kind {args.kind!r} is not a kind of model (kinds: {', '.join(kinds)})")
    rows = [reg.availability(n) for n in reg.names(args.kind)]
    if args.json:
        for a in rows:
            print(json.dumps({
                "name": a.entry.name, "aliases": list(a.entry.aliases), "kind": a.entry.kind,
                "available": a.available,
                "source": a.source, "path": str(a.path) if a.path else None,
                "size_bytes": a.size_bytes, "note": a.note, "description": a.entry.description,
            }))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="voice models")
    for col in ("name", "also", "kind", "available", "loads from", "size", "note"):
        table.add_column(col)
    for a in rows:
        table.add_row(
            a.entry.name, ", ".join(a.entry.aliases), a.entry.kind, "yes" if a.available else "[red]no[/red]",
            a.source, _size(a.size_bytes), a.note,
        )
    Console(width=160).print(table)
    return 0
