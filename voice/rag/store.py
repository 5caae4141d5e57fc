"""Qdrant storage for retrieval units: embedded local mode on disk, or a Qdrant server.

Each point is one unit with two named vectors, ``dense`` (the embedding) and ``bm25`` (sparse
BM25 term weights, collection modifier IDF; see :mod:`voice.rag.lexical`), so the dense and
the lexical index are one set of points and every write, update or delete keeps them in step.
Payload: ``source`` (absolute path), ``chunk_index``, ``n_chunks``, ``text``, ``title``,
``record``, ``file_hash`` (sha256 of the file's bytes) and ``schema``. A document version is
complete when all ``n_chunks`` points with its hash are present; writes go new-points-first,
then old-version delete, so a crash in between leaves both versions and never none.

Qdrant's local mode holds an exclusive file lock on its folder, so one process may open a folder
only once: :class:`ClientPool` hands every :class:`ChunkStore` on the same folder one shared
client (reference counted). Another process that finds the folder locked reads a snapshot
instead: a consistent SQLite backup of each collection, taken read-only and without the lock,
opened in a temporary folder (local mode loads every point into memory anyway); reads work on
what was stored when it opened, and writes fail with a one-line :class:`KnowledgeBaseBusy`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.errors import ConfigError, VoiceError
from voice.rag.lexical import LocalIndex, Sparse

log = logging.getLogger(__name__)

_ID_NAMESPACE = uuid.UUID("6f1c3a52-7d0e-4a8e-9b63-2f1f8f0b9c11")


#: Named vectors of a collection: the dense embedding and the BM25 sparse vector.
DENSE = "dense"
LEXICAL = "bm25"
#: Payload ``schema`` of the units written now; 1 was one unnamed dense vector per 800-character chunk.
SCHEMA = 2


class KnowledgeBaseBusy(VoiceError):
    """The local knowledge-base folder is locked by another process."""


class KnowledgeBaseOutdated(ConfigError):
    """The collection was built by an older voice (one dense vector per long chunk)."""


@dataclass(frozen=True)
class StoredDoc:
    """One document version in the store."""

    source: str
    file_hash: str
    n_chunks: int
    stored_chunks: int

    @property
    def complete(self) -> bool:
        return self.stored_chunks == self.n_chunks


@dataclass
class _Shared:
    client: Any
    lock: threading.RLock
    refs: int = 0
    #: Local mode: the in-memory copy of each collection's indexes (dropped on every write).
    indexes: dict[str, LocalIndex] = field(default_factory=dict)


class ClientPool:
    """Shares one QdrantClient per local folder (or server URL) within a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, _Shared] = {}

    def acquire(self, *, path: Path | None = None, url: str | None = None) -> tuple[str, _Shared]:
        key = f"url:{url}" if url else f"path:{Path(path or '.').resolve()}"
        with self._lock:
            shared = self._clients.get(key)
            if shared is None:
                shared = _Shared(_open_client(path=path, url=url), threading.RLock())
                self._clients[key] = shared
            shared.refs += 1
            return key, shared

    def close_all(self) -> None:
        """Close every client (at interpreter exit, for objects nobody closed)."""
        with self._lock:
            shared = list(self._clients.values())
            self._clients.clear()
        for s in shared:
            with s.lock:
                s.client.close()

    def release(self, key: str) -> None:
        with self._lock:
            shared = self._clients.get(key)
            if shared is None:
                return
            shared.refs -= 1
            if shared.refs <= 0:
                del self._clients[key]
                with shared.lock:
                    shared.client.close()


def _open_client(*, path: Path | None, url: str | None) -> Any:
    from qdrant_client import QdrantClient

    if url:
        import os
        import warnings

        key = os.environ.get("QDRANT_API_KEY")
        with warnings.catch_warnings():
            # An unreachable server warns here first; the first request gives our one-line error.
            warnings.filterwarnings("ignore", message="Failed to obtain server version")
            return _ServerClient(QdrantClient(url=url, api_key=key, timeout=30), url)
    assert path is not None
    path.mkdir(parents=True, exist_ok=True)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return QdrantClient(path=str(path))
    except RuntimeError as err:
        if "already accessed" in str(err):
            log.info("knowledge base %s is in use by another process: reading a snapshot", path)
            return _Snapshot(path)
        raise


def _busy(path: Path) -> KnowledgeBaseBusy:
    return KnowledgeBaseBusy(
        f"knowledge base {path} is in use by another voice process (it can be read, not changed)",
        hint="close it, use another --kb folder, or set rag.qdrant_url to a Qdrant server",
    )


class _Snapshot:
    """A read-only QdrantClient over a copy of a local store that another process holds locked."""

    #: QdrantClient methods that only read (everything else raises KnowledgeBaseBusy).
    READS = frozenset({"collection_exists", "get_collection", "get_collections", "scroll", "count",
                       "query_points", "retrieve"})

    def __init__(self, path: Path) -> None:
        import shutil
        import tempfile

        from qdrant_client import QdrantClient

        self._path = path
        self._tmp = Path(tempfile.mkdtemp(prefix="voice-kb-snapshot-"))
        try:
            _copy_local_store(path, self._tmp)
            self._client = QdrantClient(path=str(self._tmp))
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def __getattr__(self, name: str) -> Any:
        if name not in self.READS:
            raise _busy(self._path)
        return getattr(self._client, name)

    def close(self) -> None:
        import shutil

        try:
            self._client.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _copy_local_store(src: Path, dest: Path) -> None:
    """Copy Qdrant local mode's ``meta.json`` and each ``collection/*/storage.sqlite`` into
    ``dest`` without taking its lock: SQLite's online backup from a read-only connection gives a
    consistent copy while the owner keeps writing."""
    import json
    import sqlite3
    import time
    from urllib.parse import quote

    for attempt in range(20):  # local mode rewrites meta.json in place: retry a torn read
        try:
            meta = (src / "meta.json").read_text(encoding="utf-8")
            json.loads(meta)
            break
        except FileNotFoundError:
            meta = '{"collections": {}, "aliases": {}}'
            break
        except (ValueError, OSError):
            if attempt == 19:
                raise _busy(src) from None
            time.sleep(0.05)
    (dest / "meta.json").write_text(meta, encoding="utf-8")
    for db in sorted(src.glob("collection/*/storage.sqlite")):
        target = dest / db.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        reader = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=10)
        writer = sqlite3.connect(str(target))
        try:
            reader.backup(writer)
        except sqlite3.Error:
            raise _busy(src) from None
        finally:
            reader.close()
            writer.close()


class QdrantUnavailable(VoiceError):
    """The configured Qdrant server cannot be reached or refused a request."""


class _ServerClient:
    """A QdrantClient for a server whose network and HTTP failures become one-line errors."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

            try:
                return attr(*args, **kwargs)
            except ResponseHandlingException as err:
                raise QdrantUnavailable(
                    f"Qdrant server {self._url} cannot be reached ({err})",
                    hint="start it, or unset rag.qdrant_url to use the local knowledge base folder",
                ) from None
            except UnexpectedResponse as err:
                detail = " ".join((err.content or b"").decode("utf-8", "replace").split())[:160]
                if err.status_code in (401, 403):
                    hint = "check QDRANT_API_KEY"
                elif detail.startswith("{"):
                    hint = None
                else:
                    hint = "is rag.qdrant_url a Qdrant server?"
                raise QdrantUnavailable(
                    f"Qdrant server {self._url} answered HTTP {err.status_code} {err.reason_phrase}: {detail}",
                    hint=hint,
                ) from None

        return call


def point_id(source: str, file_hash: str, index: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{source}\0{file_hash}\0{index}"))


class ChunkStore:
    """The unit collection of one knowledge base. Thread-safe through the shared client's lock."""

    def __init__(self, pool: ClientPool, collection: str, *, path: Path | None = None,
                 url: str | None = None) -> None:
        self.collection = collection
        self.location = url or str(path)
        self._pool = pool
        self._key, self._shared = pool.acquire(path=path, url=url)
        self._closed = False

    @property
    def local(self) -> bool:
        return not self._key.startswith("url:")

    @property
    def _client(self) -> Any:
        if self._closed:
            raise VoiceError("the knowledge base is closed")
        return self._shared.client

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.release(self._key)

    def _changed(self) -> None:
        self._shared.indexes.pop(self.collection, None)

    # ------------------------------------------------------------------ schema
    def exists(self) -> bool:
        with self._shared.lock:
            return bool(self._client.collection_exists(self.collection))

    def _params(self) -> Any:
        with self._shared.lock:
            return self._client.get_collection(self.collection).config.params

    def dim(self) -> int | None:
        if not self.exists():
            return None
        vectors = self._params().vectors
        if isinstance(vectors, dict):
            vectors = vectors.get(DENSE)
        return int(vectors.size) if hasattr(vectors, "size") else None

    def outdated(self) -> bool:
        """True for a collection of the old shape (no named dense + BM25 vectors)."""
        if not self.exists():
            return False
        params = self._params()
        return not (isinstance(params.vectors, dict) and DENSE in params.vectors
                    and LEXICAL in (params.sparse_vectors or {}))

    def check(self) -> None:
        """Raise :class:`KnowledgeBaseOutdated` for an old-shape collection."""
        if self.outdated():
            raise KnowledgeBaseOutdated(
                f"knowledge base {self.location} was built by an older voice (long chunks, no"
                " lexical index)",
                hint="rebuild it: voice ingest --rebuild, optionally with the document folders",
            )

    def ensure(self, dim: int) -> None:
        from qdrant_client import models

        with self._shared.lock:
            have = self.dim()
            if not self.exists():
                self._client.create_collection(
                    self.collection,
                    vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
                    sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                )
                if not self.local:  # local mode has no payload indexes
                    for field_name, schema in (("source", models.PayloadSchemaType.KEYWORD),
                                               ("file_hash", models.PayloadSchemaType.KEYWORD)):
                        self._client.create_payload_index(self.collection, field_name, field_schema=schema)
                self._changed()
                return
            self.check()
            if have != dim:
                raise ConfigError(
                    f"knowledge base {self.location} holds {have}-dimensional vectors but the embedder"
                    f" makes {dim}-dimensional ones; clear it (voice kb clear) or use another --kb"
                )

    # ------------------------------------------------------------------ writes
    @staticmethod
    def make_point(pid: str, vector: np.ndarray, sparse: Sparse, payload: dict[str, Any]) -> Any:
        from qdrant_client import models

        return models.PointStruct(
            id=pid,
            vector={DENSE: vector.tolist(),
                    LEXICAL: models.SparseVector(indices=sparse.indices, values=sparse.values)},
            payload={**payload, "schema": SCHEMA},
        )

    def put_document(self, source: str, file_hash: str, units: Sequence[dict[str, Any]], vectors: np.ndarray,
                     sparse: Sequence[Sparse], *, batch: int = 256) -> None:
        """Write all units of one document version, then delete its other versions.

        ``units`` are payloads with at least ``text``; source, hash and positions are added.
        """
        from qdrant_client import models

        n = len(units)
        points = [
            self.make_point(point_id(source, file_hash, i), vectors[i], sparse[i],
                            {"source": source, "chunk_index": i, "n_chunks": n, "file_hash": file_hash,
                             **units[i]})
            for i in range(n)
        ]
        with self._shared.lock:
            self._changed()
            for start in range(0, n, batch):
                self._client.upsert(self.collection, points=points[start : start + batch], wait=True)
            self._client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=models.Filter(
                    must=[models.FieldCondition(key="source", match=models.MatchValue(value=source))],
                    must_not=[models.FieldCondition(key="file_hash", match=models.MatchValue(value=file_hash))],
                )),
                wait=True,
            )

    def upsert_points(self, points: Iterable[Any], *, batch: int = 1024) -> int:
        """Raw batched upsert (for synthetic stores in benchmarks). Returns the count written."""
        buf: list[Any] = []
        count = 0
        with self._shared.lock:
            self._changed()
            for p in points:
                buf.append(p)
                if len(buf) >= batch:
                    self._client.upsert(self.collection, points=buf, wait=True)
                    count += len(buf)
                    buf = []
            if buf:
                self._client.upsert(self.collection, points=buf, wait=True)
                count += len(buf)
        return count

    def delete_source(self, source: str) -> None:
        from qdrant_client import models

        if not self.exists():
            return
        with self._shared.lock:
            self._changed()
            self._client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=models.Filter(
                    must=[models.FieldCondition(key="source", match=models.MatchValue(value=source))]
                )),
                wait=True,
            )

    def drop(self) -> None:
        with self._shared.lock:
            self._changed()
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)

    # ------------------------------------------------------------------ reads
    def _scroll(self, flt: Any, fields: list[str] | bool, *, vectors: bool = False) -> Iterator[Any]:
        offset = None
        while True:
            with self._shared.lock:
                points, offset = self._client.scroll(
                    self.collection, scroll_filter=flt, limit=1024, offset=offset,
                    with_payload=fields, with_vectors=vectors,
                )
            yield from points
            if offset is None:
                return

    def documents(self) -> list[StoredDoc]:
        """Every document version stored, with how many of its units are present."""
        if not self.exists():
            return []
        counts: dict[tuple[str, str], list[int]] = {}
        for p in self._scroll(None, ["source", "file_hash", "n_chunks"]):
            pl = p.payload or {}
            key = (str(pl.get("source")), str(pl.get("file_hash")))
            entry = counts.setdefault(key, [int(pl.get("n_chunks", 0)), 0])
            entry[1] += 1
        return sorted(
            (StoredDoc(src, h, n, have) for (src, h), (n, have) in counts.items()),
            key=lambda d: d.source,
        )

    def versions(self, source: str) -> list[StoredDoc]:
        from qdrant_client import models

        if not self.exists():
            return []
        flt = models.Filter(must=[models.FieldCondition(key="source", match=models.MatchValue(value=source))])
        counts: dict[str, list[int]] = {}
        for p in self._scroll(flt, ["file_hash", "n_chunks"]):
            pl = p.payload or {}
            entry = counts.setdefault(str(pl.get("file_hash")), [int(pl.get("n_chunks", 0)), 0])
            entry[1] += 1
        return [StoredDoc(source, h, n, have) for h, (n, have) in counts.items()]

    def count(self) -> int:
        if not self.exists():
            return 0
        with self._shared.lock:
            return int(self._client.count(self.collection, exact=True).count)

    def local_index(self) -> LocalIndex:
        """The in-memory copy of both indexes (local mode), built on first use after a write."""
        with self._shared.lock:
            index = self._shared.indexes.get(self.collection)
            if index is None:
                ids: list[str] = []
                dense: list[list[float]] = []
                sparse: list[Sparse] = []
                for p in self._scroll(None, False, vectors=True):
                    vec = p.vector or {}
                    sv = vec.get(LEXICAL)
                    ids.append(str(p.id))
                    dense.append(vec[DENSE])
                    sparse.append(Sparse(list(sv.indices), list(sv.values)) if sv is not None else Sparse([], []))
                dim = self.dim() or 0
                matrix = np.asarray(dense, dtype=np.float32).reshape(len(ids), dim)
                index = LocalIndex(ids, matrix, sparse)
                self._shared.indexes[self.collection] = index
            return index

    def search_dense(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """(point id, cosine similarity), best first."""
        if not self.exists():
            return []
        if self.local:
            return self.local_index().search_dense(vector, limit)
        with self._shared.lock:
            res = self._client.query_points(self.collection, query=vector.tolist(), using=DENSE,
                                            limit=limit, with_payload=False)
        return [(str(p.id), float(p.score)) for p in res.points]

    def search_lexical(self, query: Sparse, limit: int) -> list[tuple[str, float]]:
        """(point id, BM25 score), best first; only units sharing a term with the query."""
        if not self.exists() or not query.indices:
            return []
        if self.local:
            return self.local_index().search_sparse(query, limit)
        return self.search_lexical_qdrant(query, limit)

    def search_lexical_qdrant(self, query: Sparse, limit: int) -> list[tuple[str, float]]:
        """The same search done by Qdrant itself (the server's way; local mode's reference)."""
        from qdrant_client import models

        with self._shared.lock:
            res = self._client.query_points(
                self.collection, query=models.SparseVector(indices=query.indices, values=query.values),
                using=LEXICAL, limit=limit, with_payload=False,
            )
        return [(str(p.id), float(p.score)) for p in res.points if p.score > 0]

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given points (those that exist)."""
        if not ids:
            return {}
        with self._shared.lock:
            points = self._client.retrieve(self.collection, ids=list(ids), with_payload=True,
                                           with_vectors=False)
        return {str(p.id): dict(p.payload or {}) for p in points}

    def dense_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Dense vectors of the given points (those that exist)."""
        if not ids:
            return {}
        with self._shared.lock:
            points = self._client.retrieve(self.collection, ids=list(ids), with_payload=False,
                                           with_vectors=[DENSE])
        return {str(p.id): np.asarray((p.vector or {})[DENSE], dtype=np.float32) for p in points}
