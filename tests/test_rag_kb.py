"""KnowledgeBase on real Qdrant local mode with the real MiniLM ONNX embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.rag import FACTS, make_pdf, write_docs
from voice.errors import InputError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _consistent(kb) -> None:
    """One complete version per document, and no stray points."""
    docs = kb.list_documents()
    assert len({d.source for d in docs}) == len(docs), "a document has two versions"
    assert all(d.complete for d in docs), docs
    assert kb.store.count() == sum(d.chunks for d in docs)


def test_embedder_ranks_paraphrases_above_unrelated(rag_embedder):
    v = rag_embedder.embed([
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
        "Shares dropped steeply on Wall Street this morning.",
    ])
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > 0.6 and sim[2, 3] > 0.5
    assert max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]) < 0.2
    # Batching and order do not change a vector.
    single = rag_embedder.embed_one("Shares dropped steeply on Wall Street this morning.")
    assert float(single @ v[3]) > 0.9999


def test_ingest_every_format_and_search_finds_the_passage(kb, docs_dir):
    report = kb.ingest([docs_dir])
    assert sorted(Path(p).name for p in report.added) == sorted(FACTS)
    assert report.ok and not report.updated and not report.unchanged
    for name, (_content, question) in FACTS.items():
        hits = kb.search(question, top_k=1)
        assert hits, f"nothing found for {question!r}"
        assert Path(hits[0].source).name == name, (question, hits)
    pet = kb.search("Where does the cat Whiskerton sleep?", top_k=1)[0]
    assert "velvet sofa" in pet.text and "purple elephant" not in pet.text  # script stripped
    staff = kb.search("What is Alvar Nyqvist's job?", top_k=1)[0]
    assert "role: lighthouse keeper" in staff.text
    _consistent(kb)


def test_score_threshold_keeps_unrelated_passages_out(kb, docs_dir):
    kb.ingest([docs_dir])
    unrelated = "Explain the rules of competitive underwater hockey tournaments"
    assert kb.search(unrelated) == []
    everything = kb.search(unrelated, top_k=10, score_threshold=-1.0)
    assert len(everything) == kb.store.count() >= len(FACTS)  # the threshold, not an empty store, kept them out
    assert all(p.score < kb.rag.score_threshold for p in everything)
    good = kb.search("How much power does the Zorblax reactor produce?")
    assert len(good) >= 1 and all(p.score >= kb.rag.score_threshold for p in good)
    assert len(good) <= kb.rag.top_k


def test_second_ingest_changes_nothing(kb, docs_dir):
    kb.ingest([docs_dir])
    before = kb.list_documents()
    ids_before = {p.id for p in kb.store._client.scroll(kb.rag.collection, limit=1000)[0]}
    report = kb.ingest([docs_dir])
    assert len(report.unchanged) == len(FACTS)
    assert not report.added and not report.updated and report.chunks_written == 0
    assert kb.list_documents() == before
    assert {p.id for p in kb.store._client.scroll(kb.rag.collection, limit=1000)[0]} == ids_before


def test_changed_file_replaces_its_chunks(kb, docs_dir):
    kb.ingest([docs_dir])
    reactor = docs_dir / "reactor.txt"
    reactor.write_text("The Zorblax fusion reactor was shut down in 2019 and now produces no power.\n")
    report = kb.ingest([docs_dir])
    assert report.updated == [str(reactor.resolve())]
    assert len(report.unchanged) == len(FACTS) - 1
    hits = kb.search("How much power does the Zorblax reactor produce?", top_k=5)
    texts = [h.text for h in hits if h.source == str(reactor.resolve())]
    assert texts and all("shut down in 2019" in t for t in texts)
    assert not any("42 megawatts" in h.text for h in kb.search("42 megawatts", top_k=10, score_threshold=-1))
    _consistent(kb)


def test_deleted_file_removed_by_prune_and_by_remove(kb, docs_dir):
    kb.ingest([docs_dir])
    bakery = (docs_dir / "bakery.md").resolve()
    bakery.unlink()
    gone = [d for d in kb.list_documents() if not d.exists]
    assert [d.source for d in gone] == [str(bakery)]
    report = kb.ingest([docs_dir], prune=True)
    assert report.removed == [str(bakery)]
    assert str(bakery) not in {d.source for d in kb.list_documents()}
    # remove() by file, then by folder.
    assert kb.remove(docs_dir / "pets.html") == [str((docs_dir / "pets.html").resolve())]
    with pytest.raises(InputError, match="not in the knowledge base"):
        kb.remove(docs_dir / "pets.html")
    removed = kb.remove(docs_dir)
    assert len(removed) == len(FACTS) - 2
    assert kb.list_documents() == [] and kb.store.count() == 0
    kb.ingest([docs_dir])
    kb.clear()
    assert kb.list_documents() == [] and kb.search("Zorblax reactor") == []


def test_bad_documents_are_skipped_and_the_rest_ingested(kb, docs_dir):
    kb.rag.max_file_mb = 0.05
    (docs_dir / "broken.pdf").write_bytes(make_pdf("fine text")[:150])
    (docs_dir / "photo.txt").write_bytes(os.urandom(4000))
    (docs_dir / "huge.txt").write_text("A very long line of repeated text. " * 3000)
    (docs_dir / "empty.md").write_bytes(b"")
    (docs_dir / "notes.docx").write_bytes(b"ignored in folders")
    report = kb.ingest([docs_dir])
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == {"broken.pdf", "photo.txt", "huge.txt", "empty.md"}
    assert "PDF" in reasons["broken.pdf"]
    assert "binary" in reasons["photo.txt"]
    assert "too large" in reasons["huge.txt"]
    assert "empty" in reasons["empty.md"]
    assert sorted(Path(p).name for p in report.added) == sorted(FACTS)
    assert not report.ok
    _consistent(kb)
    # A named unsupported file is reported, not silently ignored.
    report = kb.ingest([docs_dir / "notes.docx"])
    assert "unsupported file type .docx" in report.skipped[0][1]


def test_failed_update_keeps_the_old_version(kb, docs_dir):
    kb.ingest([docs_dir])
    reactor = docs_dir / "reactor.txt"
    reactor.write_bytes(b"\x00\x01garbage" * 500)
    report = kb.ingest([reactor])
    assert report.skipped and "binary" in report.skipped[0][1]
    hit = kb.search("How much power does the Zorblax reactor produce?", top_k=1)[0]
    assert "42 megawatts" in hit.text
    _consistent(kb)


def test_interrupted_update_is_repaired_by_the_next_ingest(kb, docs_dir):
    """A crash after writing part of a new version leaves old + partial; re-ingest heals it."""
    from voice.rag.lexical import doc_vector
    from voice.rag.store import point_id

    kb.ingest([docs_dir])
    src = str((docs_dir / "reactor.txt").resolve())
    vec = kb.embedder.embed_one("partial")
    kb.store.upsert_points([kb.store.make_point(
        point_id(src, "f" * 64, 0), vec, doc_vector("partial"),
        {"source": src, "chunk_index": 0, "n_chunks": 3, "text": "partial", "file_hash": "f" * 64},
    )])
    versions = [d for d in kb.list_documents() if d.source == src]
    assert len(versions) == 2 and not all(d.complete for d in versions)
    report = kb.ingest([docs_dir])
    assert report.updated == [src]
    _consistent(kb)


def test_two_objects_in_one_process_share_the_local_store(cfg, tmp_path, rag_embedder, docs_dir):
    from voice.rag import KnowledgeBase

    a = KnowledgeBase(cfg, tmp_path / "kb", embedder=rag_embedder)
    b = KnowledgeBase(cfg, tmp_path / "kb", embedder=rag_embedder)
    try:
        a.ingest([docs_dir / "reactor.txt"])
        assert [Path(d.source).name for d in b.list_documents()] == ["reactor.txt"]
        a.close()
        assert b.search("Zorblax reactor power", top_k=1)[0].source.endswith("reactor.txt")
    finally:
        a.close()
        b.close()
    c = KnowledgeBase(cfg, tmp_path / "kb", embedder=rag_embedder)  # reopens after both closed
    assert len(c.list_documents()) == 1
    c.close()


def test_another_process_reads_while_the_store_is_open_and_cannot_write(kb, docs_dir):
    """Local mode locks its folder; another process reads a snapshot (kb list, kb search, ask)
    and gets a one-line error for writes."""
    import glob
    import tempfile

    kb.ingest([docs_dir / "reactor.txt"])
    before = sorted(str(p.relative_to(kb.kb_dir)) for p in kb.kb_dir.rglob("*"))
    snapshots = os.path.join(tempfile.gettempdir(), "voice-kb-snapshot-*")
    snapshots_before = set(glob.glob(snapshots))

    def voice(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voice", *argv, "--kb", str(kb.kb_dir)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={**os.environ, "VOICE_GENERAL__CACHE_DIR": kb.cfg.general.cache_dir},
        )

    listed = voice("kb", "list", "--json")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert [Path(json.loads(line)["source"]).name for line in listed.stdout.splitlines()] == ["reactor.txt"]
    found = voice("kb", "search", "How much power does the Zorblax reactor produce?", "--json", "-k", "1")
    assert found.returncode == 0 and "42 megawatts" in json.loads(found.stdout)["text"], found.stderr
    asked = voice("--set", "llm.chain=tests.helpers.llm:echo_chain", "ask", "How much power does the Zorblax make?")
    assert asked.returncode == 0 and asked.stderr == "", asked.stderr
    assert "you said How much power" in asked.stdout and "reactor.txt" in asked.stdout.split("Sources:")[1]
    for argv in (["ingest", str(docs_dir / "bakery.md")], ["kb", "clear"],
                 ["kb", "remove", str(docs_dir / "reactor.txt")]):
        proc = voice(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, (argv, proc.stderr)
        assert lines[0].startswith("voice: error: knowledge base") and "in use by another voice process" in lines[0]
    # the owner's store is untouched and still writable; no snapshot files were left in it
    assert sorted(str(p.relative_to(kb.kb_dir)) for p in kb.kb_dir.rglob("*")) == before
    kb.ingest([docs_dir / "bakery.md"])
    assert sorted(Path(d.source).name for d in kb.list_documents()) == ["bakery.md", "reactor.txt"]
    again = voice("kb", "list", "--json")
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 2  # a new snapshot sees the write
    assert set(glob.glob(snapshots)) <= snapshots_before  # each process removed its snapshot


@pytest.mark.qdrant_server
def test_qdrant_server_mode(cfg, rag_embedder, tmp_path):
    """Against a real Qdrant server: collected only when VOICE_TEST_QDRANT_URL points at one
    (no Qdrant server installs from PyPI, Debian or npm, so CI here deselects it)."""
    url = os.environ["VOICE_TEST_QDRANT_URL"]
    from voice.rag import KnowledgeBase

    cfg.rag.qdrant_url = url
    cfg.rag.collection = f"voice_test_{os.getpid()}"
    docs = tmp_path / "docs"
    write_docs(docs)
    kb = KnowledgeBase(cfg, embedder=rag_embedder)
    try:
        assert len(kb.ingest([docs]).added) == len(FACTS)
        assert len(kb.ingest([docs]).unchanged) == len(FACTS)
        hit = kb.search("When did Mount Ferrovel last erupt?", top_k=1)[0]
        assert hit.source.endswith("volcano.pdf")
    finally:
        kb.clear()
        kb.close()


def test_synthetic_store_for_benchmarks(kb):
    from voice.rag.synthetic import build_synthetic_kb

    needle = "The Zorblax fusion reactor in Tromsø produces 42 megawatts of power."
    info = build_synthetic_kb(kb, 300, needles={needle: "q"}, batch=128, base_texts=16)
    assert info["chunks"] == 301 and kb.store.count() == 301
    hit = kb.search("How much power does the Zorblax reactor produce?", top_k=1)[0]
    assert hit.text == needle
    filler = kb.search("What did the finance team approve?", top_k=3, score_threshold=-1)
    assert len(filler) == 3 and all(p.source.startswith("/synthetic/doc") for p in filler)
