"""The knowledge base: ingest files, search units, build the compact context, list/remove.

Ingest of one file: size check -> read + sha256 -> skip when the stored version has the same
hash and all its units -> load records -> split into units -> embed every unit and weigh its
terms (BM25) -> write all units (dense and sparse vector in one point) -> delete the file's
older versions. Any failure before the write skips the file with a reason and leaves the store
as it was; the ingest goes on with the next file.

Search is hybrid: the dense side (cosine) and the lexical side (BM25) each give
``rag.candidates`` units, fused by reciprocal rank fusion. A unit is used when its cosine
reaches ``rag.score_threshold`` or its BM25 score reaches ``rag.lexical_threshold``, and its
fused score is at least ``rag.relative_cut`` of the best. :meth:`KnowledgeBase.context` then
fills ``rag.context_tokens`` with the best units and, while there is room, their neighbours.
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
from voice.rag.lexical import doc_vector, query_vector
from voice.rag.loaders import SUPPORTED_SUFFIXES, DocumentError, is_supported, load_records
from voice.rag.splitter import _check, split_records
from voice.rag.store import ChunkStore, ClientPool, StoredDoc, point_id

#: Reciprocal rank fusion constant (the usual 60): a unit's fused score is the sum over the
#: two sides of 1 / (RRF_K + rank).
RRF_K = 60

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    """A retrieved unit (or a unit widened with its neighbours).

    ``score`` is the cosine similarity of the question and the unit, ``lexical`` its BM25
    score (0 when no term is shared), ``fused`` the reciprocal-rank-fusion score that orders
    the results; ``title`` is the unit's heading path.
    """

    text: str
    source: str
    score: float
    chunk_index: int = 0
    title: str = ""
    lexical: float = 0.0
    fused: float = 0.0
    #: Indexes of the units this passage is made of (several when widened).
    units: tuple[int, ...] = ()
    file_hash: str = ""

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text) + estimate_tokens(self.title)


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` for the context budget: characters / 4 (Qwen2.5 on English prose
    gives 4.1-4.6 characters per token, so this errs on the safe side)."""
    return (len(text) + 3) // 4


#: Tokens budgeted for one passage's header ("[x.md > title]", the title counted with the unit;
#: kept at 12, the figure the context budget was measured with).
PASSAGE_OVERHEAD = 12


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
                f" {len(self.skipped)} skipped, {len(self.removed)} removed ({self.chunks_written} units written)")


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
        self.store.check()
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
            return "unchanged", f"{versions[0].n_chunks} units"
        try:
            records = load_records(path, data)
        except DocumentError as err:
            return skip(str(err))
        units = split_records(records, self.rag.chunk_size)
        if not units:
            return skip("no text found")
        texts = [u.indexed_text for u in units]
        try:
            vectors = self.embedder.embed(texts)
        except Exception as err:  # noqa: BLE001 - one bad document must not stop the ingest
            log.debug("embedding %s failed", source, exc_info=True)
            return skip(f"embedding failed: {err}")
        sparse = [doc_vector(u.lexical_text) for u in units]
        self.store.ensure(int(vectors.shape[1]))
        payloads = [{"text": u.text, "title": u.title, "record": u.record} for u in units]
        self.store.put_document(source, digest, payloads, vectors, sparse)
        chunks = units
        report.chunks_written += len(chunks)
        if versions:
            report.updated.append(source)
            return "updated", f"{len(chunks)} units"
        report.added.append(source)
        return "added", f"{len(chunks)} units"

    # ------------------------------------------------------------------ queries
    def search(self, query: str, top_k: int | None = None, *,
               score_threshold: float | None = None, rag: Any = None) -> list[Passage]:
        """The ``top_k`` units for ``query`` in fused order that pass the thresholds and the
        relative cut (see the module docstring). ``rag``: settings to use instead of the
        knowledge base's own (a session's config)."""
        if not query.strip() or not self.store.exists():
            return []
        self.store.check()
        rag = rag or self.rag
        k = top_k if top_k is not None else rag.top_k
        thr = score_threshold if score_threshold is not None else rag.score_threshold
        n = max(rag.candidates, k)
        qvec = self.embedder.embed_one(query)
        dense = self.store.search_dense(qvec, n)
        lexical = self.store.search_lexical(query_vector(query), n)
        fused: dict[str, float] = {}
        for hits in (dense, lexical):
            for rank, (pid, _score) in enumerate(hits):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)
        cos = dict(dense)
        bm25 = dict(lexical)
        # Lexical-only candidates: their cosine too, so both thresholds apply to every unit.
        for pid, vec in self.store.dense_vectors([p for p in bm25 if p not in cos]).items():
            cos[pid] = float(vec @ qvec)
        keep = [pid for pid in fused
                if cos.get(pid, -1.0) >= thr or (rag.lexical_threshold > 0
                                                 and bm25.get(pid, 0.0) >= rag.lexical_threshold)]
        keep.sort(key=lambda pid: (-fused[pid], -cos.get(pid, -1.0)))
        if keep:
            best = fused[keep[0]]
            keep = [pid for pid in keep if fused[pid] >= rag.relative_cut * best][:k]
        payloads = self.store.payloads(keep)
        return [_passage(payloads[pid], cos.get(pid, 0.0), bm25.get(pid, 0.0), fused[pid])
                for pid in keep if pid in payloads]

    def context(self, query: str, *, budget: int | None = None, rag: Any = None) -> list[Passage]:
        """The passages for the prompt: the best units while they fit ``budget`` tokens
        (default ``rag.context_tokens``; the first always goes in), then neighbours in the same
        section while they fit; adjacent units of one section are joined into one passage."""
        rag = rag or self.rag
        budget = budget if budget is not None else rag.context_tokens
        hits = self.search(query, rag=rag)
        chosen: list[Passage] = []
        used = 0
        for p in hits:
            cost = p.tokens + PASSAGE_OVERHEAD
            if chosen and used + cost > budget:
                continue
            chosen.append(p)
            used += cost
        if not chosen:
            return []
        groups = [[p] for p in chosen]
        # Widen: alternately the unit after and the unit before each hit, best hit first.
        taken = {(p.source, p.chunk_index) for p in chosen}
        progress = True
        while progress:
            progress = False
            for group in groups:
                for side in (1, -1):
                    edge = group[-1] if side == 1 else group[0]
                    nb = self._neighbour(edge, side, taken)
                    if nb is None or used + nb.tokens > budget:
                        continue
                    used += nb.tokens
                    taken.add((nb.source, nb.chunk_index))
                    if side == 1:
                        group.append(nb)
                    else:
                        group.insert(0, nb)
                    progress = True
        # Hits next to each other in one document become one passage, ordered by their best hit.
        runs: list[list[Passage]] = []
        for p in sorted((p for g in groups for p in g), key=lambda p: (p.source, p.chunk_index)):
            last = runs[-1][-1] if runs else None
            if (last is not None and last.source == p.source and last.title == p.title
                    and p.chunk_index == last.chunk_index + 1):
                runs[-1].append(p)
            else:
                runs.append([p])
        joined = [_join(r) for r in runs]
        return sorted(joined, key=lambda p: -p.fused)

    def _neighbour(self, p: Passage, side: int, taken: set[tuple[str, int]]) -> Passage | None:
        """The unit next to ``p`` in its document if it belongs to the same titled section."""
        index = p.chunk_index + side
        if index < 0 or (p.source, index) in taken or not p.title:
            return None
        payload = self.store.payloads([point_id(p.source, p.file_hash, index)])
        if not payload:
            return None
        nb = next(iter(payload.values()))
        if nb.get("title", "") != p.title:
            return None
        return _passage(nb, 0.0, 0.0, 0.0)

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

    def rebuild(self, paths: Iterable[str | Path]) -> list[str]:
        """Drop the collection before a fresh ingest; returns what to ingest: ``paths``, or
        (none given) the stored documents whose files still exist.

        Works on a knowledge base of the old shape. Raises InputError when there is nothing
        to ingest, before anything is dropped.
        """
        chosen = [str(p) for p in paths]
        if not chosen:
            chosen = sorted({d.source for d in self.store.documents() if Path(d.source).exists()})
            if not chosen:
                raise InputError(f"knowledge base {self.location} lists no existing files to rebuild from;"
                                 " give the folders to ingest")
        missing = [p for p in chosen if not Path(p).expanduser().exists()]
        if missing:
            raise InputError(f"no such file or folder: {', '.join(missing)}")
        self.store.drop()
        return chosen

    def clear(self) -> None:
        """Remove every document (the collection is dropped)."""
        self.store.drop()

    @property
    def location(self) -> str:
        """The server URL and collection, or the local folder."""
        if self.rag.qdrant_url:
            return f"{self.rag.qdrant_url} (collection {self.rag.collection})"
        return str(self.kb_dir)


def _passage(pl: dict[str, Any], score: float, lexical: float, fused: float) -> Passage:
    index = int(pl.get("chunk_index", 0))
    return Passage(str(pl.get("text", "")), str(pl.get("source", "")), score, index,
                   str(pl.get("title", "")), lexical, fused, (index,), str(pl.get("file_hash", "")))


def _join(group: list[Passage]) -> Passage:
    """Adjacent units of one document as one passage, scored as its best unit."""
    if len(group) == 1:
        return group[0]
    best = max(group, key=lambda p: p.fused)
    text = "\n".join(p.text for p in group)
    return Passage(text, best.source, best.score, best.chunk_index, best.title, best.lexical,
                   best.fused, tuple(p.chunk_index for p in group), best.file_hash)


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
    kb = KnowledgeBase(cfg, kb_dir)
    try:
        kb.store.check()
    except BaseException:
        kb.close()
        raise
    return kb
