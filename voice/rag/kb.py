"""The knowledge base: ingest files, search passages, list/remove documents.

Ingest of one file: size check -> read + sha256 -> skip when the stored version has the same
hash and all its chunks -> extract text -> split -> embed every chunk -> write all chunks ->
delete the file's older versions. Any failure before the write skips the file with a reason and
leaves the store as it was; the ingest goes on with the next file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.errors import InputError
from voice.rag.embedder import OnnxEmbedder, load_embedder
from voice.rag.loaders import SUPPORTED_SUFFIXES, DocumentError, extract_text, is_supported
from voice.rag.splitter import _check, split_text
from voice.rag.store import ChunkStore, ClientPool, StoredDoc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk: its text, the file it came from, and the cosine similarity."""

    text: str
    source: str
    score: float
    chunk_index: int = 0


@dataclass(frozen=True)
class DocumentInfo:
    source: str
    file_hash: str
    chunks: int
    complete: bool = True
    exists: bool = True


@dataclass
class IngestReport:
    """What one ingest did; ``skipped`` holds (path, reason)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks_written: int = 0

    @property
    def ok(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged,"
                f" {len(self.skipped)} skipped, {len(self.removed)} removed ({self.chunks_written} chunks written)")


#: Called once per file with (path, outcome, detail): outcome is added/updated/unchanged/skipped.
Progress = Callable[[str, str, str], None]


@functools.cache
def default_pool() -> ClientPool:
    """The process-wide pool of Qdrant clients (local mode allows one client per folder)."""
    import atexit

    pool = ClientPool()
    atexit.register(pool.close_all)
    return pool


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iter_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, bool]]:
    """(file, named) for each given file and each supported file under given folders.

    ``named`` is true for files given by name (an unsupported one is reported, not ignored).
    Hidden files and folders are left out of folder walks.
    """
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    f = Path(root) / name
                    if not name.startswith(".") and is_supported(f):
                        found.append(f)
            for f in sorted(found):
                yield f.resolve(), False
        else:
            yield p.resolve(), True


class KnowledgeBase:
    """Documents in a Qdrant collection, searchable by meaning.

    ``kb_dir`` (default ``cfg.kb_dir()``) holds the local Qdrant store; with ``rag.qdrant_url``
    set, the server's ``rag.collection`` is used instead. The embedder loads on first use; pass
    ``embedder`` to share one. Methods are blocking: call them via ``asyncio.to_thread`` from
    async code. Several objects on one folder in one process share one client.
    """

    def __init__(self, cfg: Any, kb_dir: str | Path | None = None, *,
                 embedder: OnnxEmbedder | None = None, pool: ClientPool | None = None) -> None:
        self.cfg = cfg
        self.rag = cfg.rag
        _check(self.rag.chunk_size, self.rag.chunk_overlap)
        self.kb_dir = Path(kb_dir).expanduser() if kb_dir is not None else cfg.kb_dir()
        if self.kb_dir.exists() and not self.kb_dir.is_dir():
            raise InputError(f"knowledge base {self.kb_dir} is a file, not a folder")
        self._embedder = embedder
        url = self.rag.qdrant_url or None
        self.store = ChunkStore(pool or default_pool(), self.rag.collection,
                                path=None if url else self.kb_dir / "qdrant", url=url)

    # ------------------------------------------------------------------ lifecycle
    @property
    def embedder(self) -> OnnxEmbedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.cfg)
        return self._embedder

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ingest
    def ingest(self, paths: Iterable[str | Path], *, prune: bool = False,
               progress: Progress | None = None) -> IngestReport:
        """Add or update the given files and folders; see the module docstring."""
        paths = list(paths)
        missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
        if missing:
            raise InputError(f"no such file or folder: {', '.join(missing)}")
        report = IngestReport()
        note = progress or (lambda path, outcome, detail: None)
        seen: set[Path] = set()
        for path, named in iter_files(paths):
            if path in seen:
                continue
            seen.add(path)
            if not is_supported(path):
                if named:
                    reason = (f"unsupported file type {path.suffix or '(none)'}"
                              f" (supported: {', '.join(SUPPORTED_SUFFIXES)})")
                    report.skipped.append((str(path), reason))
                    note(str(path), "skipped", reason)
                continue
            outcome, detail = self._ingest_file(path, report)
            note(str(path), outcome, detail)
        if prune:
            for doc in self.list_documents():
                if not doc.exists and doc.source not in report.removed:
                    self.store.delete_source(doc.source)
                    report.removed.append(doc.source)
                    note(doc.source, "removed", "file is gone")
        return report

    def _ingest_file(self, path: Path, report: IngestReport) -> tuple[str, str]:
        source = str(path)

        def skip(reason: str) -> tuple[str, str]:
            report.skipped.append((source, reason))
            return "skipped", reason

        try:
            size = path.stat().st_size
            limit = int(self.rag.max_file_mb * 1_000_000)
            if size > limit:
                return skip(f"too large ({size / 1e6:.1f} MB > rag.max_file_mb = {self.rag.max_file_mb:g})")
            if size == 0:
                return skip("empty file")
            data = path.read_bytes()
        except OSError as err:
            return skip(f"cannot read: {err.strerror or err}")
        digest = file_sha256(data)
        versions = self.store.versions(source)
        if len(versions) == 1 and versions[0].file_hash == digest and versions[0].complete:
            report.unchanged.append(source)
            return "unchanged", f"{versions[0].n_chunks} chunks"
        try:
            text = extract_text(path, data)
        except DocumentError as err:
            return skip(str(err))
        chunks = split_text(text, self.rag.chunk_size, self.rag.chunk_overlap)
        if not chunks:
            return skip("no text found")
        try:
            vectors = self.embedder.embed(chunks)
        except Exception as err:  # noqa: BLE001 - one bad document must not stop the ingest
            log.debug("embedding %s failed", source, exc_info=True)
            return skip(f"embedding failed: {err}")
        self.store.ensure(int(vectors.shape[1]))
        self.store.put_document(source, digest, chunks, vectors)
        report.chunks_written += len(chunks)
        if versions:
            report.updated.append(source)
            return "updated", f"{len(chunks)} chunks"
        report.added.append(source)
        return "added", f"{len(chunks)} chunks"

    # ------------------------------------------------------------------ queries
    def search(self, query: str, top_k: int | None = None, *,
               score_threshold: float | None = None) -> list[Passage]:
        """The ``top_k`` passages most similar to ``query`` that reach the score threshold."""
        if not query.strip() or not self.store.exists():
            return []
        k = top_k if top_k is not None else self.rag.top_k
        thr = score_threshold if score_threshold is not None else self.rag.score_threshold
        vec = self.embedder.embed_one(query)
        hits = self.store.search(vec, k, thr)
        return [Passage(str(pl.get("text", "")), str(pl.get("source", "")), score,
                        int(pl.get("chunk_index", 0))) for score, pl in hits]

    def list_documents(self) -> list[DocumentInfo]:
        """One entry per stored document version (an interrupted update shows as two)."""
        out = []
        for d in self.store.documents():
            out.append(_info(d))
        return out

    def remove(self, path: str | Path) -> list[str]:
        """Remove a document, or every document under a folder. Returns the sources removed.

        Works for files that no longer exist. Raises InputError when nothing matches.
        """
        target = str(Path(path).expanduser().resolve())
        sources = sorted({d.source for d in self.store.documents()})
        hits = [s for s in sources if s == target or s.startswith(target.rstrip(os.sep) + os.sep)]
        if not hits:
            raise InputError(f"{path} is not in the knowledge base {self.location}")
        for s in hits:
            self.store.delete_source(s)
        return hits

    def clear(self) -> None:
        """Remove every document (the collection is dropped)."""
        self.store.drop()

    @property
    def location(self) -> str:
        """The server URL and collection, or the local folder."""
        if self.rag.qdrant_url:
            return f"{self.rag.qdrant_url} (collection {self.rag.collection})"
        return str(self.kb_dir)


def _info(d: StoredDoc) -> DocumentInfo:
    return DocumentInfo(d.source, d.file_hash, d.stored_chunks, d.complete, Path(d.source).exists())


def open_kb(cfg: Any, kb_arg: str | os.PathLike[str] | None) -> KnowledgeBase | None:
    """The knowledge base for ``--kb DIR`` (must exist) or the configured one; None when the
    configured local folder has not been created yet (nothing ingested)."""
    if kb_arg is not None:
        kb_dir = Path(kb_arg).expanduser()
        if not kb_dir.is_dir():
            raise InputError(f"--kb {kb_arg}: no such knowledge base folder (create it with voice ingest --kb)")
    else:
        kb_dir = cfg.kb_dir()
        if not cfg.rag.qdrant_url and not kb_dir.is_dir():
            return None
    return KnowledgeBase(cfg, kb_dir)
