"""`voice ingest` and `voice kb` through voice.cli.main: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.rag import FACTS
from voice.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def env(monkeypatch, cfg, rag_embedder):
    """Point the CLI's cache at the session's assembled embedder, and its data at a temp dir."""
    monkeypatch.setenv("VOICE_GENERAL__CACHE_DIR", str(rag_embedder.model_dir.parent.parent))
    monkeypatch.setenv("VOICE_GENERAL__DATA_DIR", cfg.general.data_dir)
    return cfg


def test_ingest_list_search_remove_clear(env, docs_dir, tmp_path, capsys):
    kb = str(tmp_path / "mykb")
    assert main(["ingest", str(docs_dir), "--kb", kb]) == 0
    out = capsys.readouterr().out
    assert f"{len(FACTS)} added, 0 updated, 0 unchanged, 0 skipped" in out

    assert main(["ingest", str(docs_dir), "--kb", kb, "-q"]) == 0
    assert f"0 added, 0 updated, {len(FACTS)} unchanged" in capsys.readouterr().out

    assert main(["kb", "list", "--kb", kb, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(r["source"]).name for r in rows) == sorted(FACTS)
    assert all(r["complete"] and r["exists"] for r in rows)

    assert main(["kb", "search", "When did Mount Ferrovel last erupt?", "--kb", kb, "--json", "-k", "1"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert hit["source"].endswith("volcano.pdf") and "1312" in hit["text"]

    assert main(["kb", "search", "underwater hockey tournament rules", "--kb", kb]) == 0
    assert "no passage reaches the score threshold" in capsys.readouterr().out

    assert main(["kb", "remove", str(docs_dir / "staff.csv"), "--kb", kb]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["kb", "clear", "--kb", kb]) == 0
    assert f"cleared {len(FACTS) - 1} documents" in capsys.readouterr().out
    assert main(["kb", "list", "--kb", kb]) == 0
    assert "0 documents" in capsys.readouterr().out


def test_default_kb_is_in_the_data_dir(env, docs_dir, capsys):
    assert main(["ingest", str(docs_dir / "reactor.txt")]) == 0
    assert (Path(env.general.data_dir) / "kb" / "qdrant").is_dir()
    capsys.readouterr()


def test_skips_give_exit_1_with_reasons(env, docs_dir, tmp_path, capsys):
    (docs_dir / "photo.txt").write_bytes(os.urandom(3000))
    assert main(["ingest", str(docs_dir), "--kb", str(tmp_path / "kb")]) == 1
    captured = capsys.readouterr()
    assert f"{len(FACTS)} added" in captured.out and "1 skipped" in captured.out
    assert "skipped   " in captured.err and "photo.txt: binary data" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "/no/such/file.txt"], "no such file or folder: /no/such/file.txt"),
        (["kb", "remove", "/no/such/doc.txt"], "/no/such/doc.txt is not in the knowledge base"),
        (["--set", "rag.chunk_overlap=300", "ingest", "."],
         "rag.chunk_overlap = 300 (--set rag.chunk_overlap) must be under rag.chunk_size = 240"),
        (["kb", "search", "-k", "0", "wifi"], "-k/--top-k: rag.top_k = 0 is out of range (allowed: 1 to 100)"),
        (["kb", "search", "-k", "-1", "wifi"], "-k/--top-k: rag.top_k = -1 is out of range"),
        (["kb", "search", "--threshold", "7", "wifi"], "--threshold: rag.score_threshold = 7.0 is out of range"),
        (["--set", "rag.top_k=0", "kb", "search", "wifi"], "--set rag.top_k: rag.top_k = 0 is out of range"),
    ],
)
def test_user_mistakes_are_one_line_errors(env, tmp_path, capsys, argv, message):
    if "--kb" not in argv:
        argv = [*argv, "--kb", str(tmp_path / "kb")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voice: error: ")
    assert message in err


def test_kb_path_that_is_a_file(env, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["kb", "list", "--kb", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.fixture
def not_qdrant(tmp_path):
    """A real HTTP server on loopback that is not Qdrant (answers 404 to everything)."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep stderr for the CLI under test
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_or_wrong_qdrant_server_is_a_one_line_error(env, docs_dir, not_qdrant, monkeypatch, capsys):
    import time

    for url, expect in [(f"http://127.0.0.1:{_closed_port()}", "cannot be reached"),
                        (not_qdrant, "answered HTTP 404")]:
        monkeypatch.setenv("VOICE_RAG__QDRANT_URL", url)
        for argv in (["kb", "list"], ["ingest", str(docs_dir / "reactor.txt")]):
            t0 = time.monotonic()
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert time.monotonic() - t0 < 30
            assert err.startswith(f"voice: error: Qdrant server {url} {expect}"), err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _old_shape_kb(kb_dir: Path, source: Path) -> None:
    """A knowledge base as the previous version wrote it: one unnamed dense vector per chunk."""
    import warnings

    from qdrant_client import QdrantClient, models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(kb_dir / "qdrant"))
    client.create_collection("voice_kb", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE))
    client.upsert("voice_kb", points=[models.PointStruct(
        id=1, vector=[1.0] + [0.0] * 383,
        payload={"source": str(source.resolve()), "chunk_index": 0, "n_chunks": 1, "text": "old",
                 "file_hash": "0" * 64})])
    client.close()


def test_old_shape_kb_is_a_one_line_error_until_rebuilt(env, docs_dir, tmp_path, capsys):
    kb_dir = tmp_path / "oldkb"
    reactor = docs_dir / "reactor.txt"
    _old_shape_kb(kb_dir, reactor)
    for argv in (["kb", "search", "reactor power", "--kb", str(kb_dir)],
                 ["ingest", str(reactor), "--kb", str(kb_dir)],
                 ["ask", "How much power does the Zorblax reactor produce?", "--kb", str(kb_dir)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("voice: error: knowledge base") and "older voice" in err, err
        assert "voice ingest --rebuild" in err and len(err.strip().splitlines()) == 1
    assert main(["kb", "list", "--kb", str(kb_dir)]) == 0  # listing still works
    assert "reactor.txt" in capsys.readouterr().out
    assert main(["ingest", "--rebuild", "--kb", str(kb_dir)]) == 0  # from the stored documents
    out = capsys.readouterr().out
    assert "rebuilding" in out and "1 added" in out
    assert main(["kb", "search", "How much power does the Zorblax reactor produce?", "--kb", str(kb_dir)]) == 0
    out = capsys.readouterr().out
    assert "dense   bm25" in out and "42 megawatts" in out


def test_ingest_needs_paths_unless_rebuilding(env, capsys):
    assert main(["ingest"]) == 2
    assert "give the files or folders" in capsys.readouterr().err
