"""Units, hybrid (dense + BM25) search and the compact context, on real Qdrant local mode with
the real MiniLM embedder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.rag import EVAL_DIR, eval_set, has_fact, write_distractors
from voice.rag.lexical import query_vector

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

ROWS = "\n".join(f"Printer {i},Room {i}.0{i % 7},Toner model TN-{200 + i}" for i in range(1, 40))
CSV = f"name,where,toner\n{ROWS}\nColour printer,Room 2.14,Toner model CX-9\n"
MD = ("# Clinic\n\n## Opening hours\n\nMonday to Thursday from 7:30 to 18:00.\n\n"
      "## Emergencies\n\nOutside opening hours call the on-call dentist at 0471 55 23 99.\n")
TXT = ("Error codes\n\n" + "\n\n".join(
    f"E{i}: the {part} reports a fault; switch the system off and on." for i, part in
    enumerate(["display", "light", "sensor", "battery", "charger", "brake", "motor", "controller"], 1))
    + "\n\nSoftware\n\nThe current firmware version is 4.12 and fixes the display freezing.\n")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "office.csv").write_text(CSV)
    (d / "clinic.md").write_text(MD)
    (d / "manual.txt").write_text(TXT)
    for p in write_distractors(d / "python", limit=6):
        assert p.stat().st_size > 0
    return d


def _lexical_top(kb, query: str) -> dict:
    pid = kb.store.search_lexical(query_vector(query), 1)[0][0]
    return kb.store.payloads([pid])[pid]


def test_csv_row_markdown_section_code_and_number_found_through_the_lexical_side(kb, docs):
    kb.ingest([docs])
    cases = [
        ("Where is the colour printer?", "office.csv", "Colour printer", ""),
        ("Which toner does printer 17 use?", "office.csv", "TN-217", ""),
        ("What is the on-call dentist's number outside opening hours?", "clinic.md", "55 23 99",
         "Clinic > Emergencies"),
        ("What does E7 mean?", "manual.txt", "E7: the motor", "Error codes"),
        ("What does version 4.12 fix?", "manual.txt", "4.12", "Software"),
    ]
    for question, doc, needle, title in cases:
        assert needle in _lexical_top(kb, question)["text"], question  # the lexical side alone
        hit = kb.search(question, top_k=1)[0]
        assert hit.source.endswith(doc) and needle in hit.text and hit.title == title, (question, hit)
        assert hit.lexical > 0 and hit.score > 0 and hit.fused > 0
    # The code and the number are exact tokens: a near miss is not a lexical match.
    assert not any("TN-217" in kb.store.payloads([p])[p]["text"]
                   for p, _ in kb.store.search_lexical(query_vector("TN-218"), 1))


def test_local_index_scores_equal_qdrants_own_sparse_search(kb, docs):
    kb.ingest([docs])
    for q in ["colour printer toner", "E7 motor", "firmware 4.12", "lambda expression"]:
        mine = kb.store.search_lexical(query_vector(q), 5)
        theirs = dict(kb.store.search_lexical_qdrant(query_vector(q), 1000))
        assert len(mine) == min(5, len(theirs)) > 0, q
        assert [s for _, s in mine] == pytest.approx(sorted(theirs.values(), reverse=True)[:5], rel=1e-4)
        assert all(theirs[p] == pytest.approx(s, rel=1e-4) for p, s in mine), q  # ties may order differently


def _sides(kb, text: str) -> tuple[set[str], set[str]]:
    """Sources of the units both sides find for ``text`` (dense: cosine > 0.5)."""
    dense = {kb.store.payloads([p])[p]["source"] for p, s in kb.store.search_dense(kb.embedder.embed_one(text), 5)
             if s > 0.5}
    lexical = {kb.store.payloads([p])[p]["source"] for p, _ in kb.store.search_lexical(query_vector(text), 5)}
    return dense, lexical


def test_update_remove_and_prune_keep_dense_and_lexical_in_step(kb, docs):
    kb.ingest([docs])
    manual = docs / "manual.txt"
    src = str(manual.resolve())
    old = "The current firmware version is 4.12 and fixes the display freezing."
    dense, lexical = _sides(kb, old)
    assert src in dense and src in lexical
    manual.write_text(TXT.replace(old, "The current firmware version is 5.3 and adds a Quorvex mode."))
    assert kb.ingest([docs]).updated == [src]
    new_dense, new_lex = _sides(kb, "firmware 5.3 Quorvex mode")
    assert src in new_dense and src in new_lex
    assert src not in _sides(kb, "4.12")[1]  # the old version's terms are gone from the lexical side
    assert all("4.12" not in p.text for p in kb.search("firmware version 4.12", top_k=10))

    kb.remove(docs / "clinic.md")
    clinic = str((docs / "clinic.md").resolve())
    assert clinic not in set().union(*_sides(kb, "on-call dentist 0471 55 23 99"))
    (docs / "office.csv").unlink()
    assert kb.ingest([docs], prune=True).removed == [str((docs / "office.csv").resolve())]
    office = str((docs / "office.csv").resolve())
    assert office not in set().union(*_sides(kb, "Colour printer Room 2.14 toner CX-9"))
    n = kb.store.count()
    index = kb.store.local_index()
    assert index.n == n == len(index.ids) == index.dense.shape[0]  # the in-memory copy followed every write


def test_context_fits_the_budget_widens_to_neighbours_and_cuts_far_below_the_best(kb, tmp_path):
    doc = tmp_path / "garden.md"
    section = " ".join(f"Rule {i} of the garden says that plot {i} is watered on day {i}." for i in range(1, 13))
    doc.write_text(f"# Garden\n\n## Watering\n\n{section}\n\n## Bees\n\nThe beekeeper is Tomas Ek.\n")
    kb.ingest([doc])
    q = "Which day is plot 7 watered?"
    hits = kb.search(q, top_k=10, score_threshold=-1)
    assert len(hits) >= 3
    for budget in (20, 60, 150, 400):
        ctx = kb.context(q, budget=budget)
        assert ctx and "plot 7 is watered" in " ".join(p.text for p in ctx)
        used = sum(p.tokens for p in ctx) + 12 * len(ctx)
        assert used <= budget or len(ctx) == 1 and len(ctx[0].units) == 1, (budget, used)  # the best unit always goes in
    wide = kb.context(q, budget=400)
    assert len(wide[0].units) > 1 and wide[0].units == tuple(sorted(wide[0].units))  # neighbours, in order
    assert all(p.title == "Garden > Watering" for p in wide)
    # Relative cut: with 0.99 only units scoring like the best survive.
    kb.rag.relative_cut = 0.99
    assert len(kb.search(q, top_k=10, score_threshold=-1)) < len(hits)


def test_unanswerable_question_gets_no_context(kb, docs):
    kb.ingest([docs])
    assert kb.context("Explain the rules of competitive underwater hockey tournaments") == []


def test_eval_set_recall_at_3_among_distractors(kb, tmp_path):
    """The project's evaluation set with 12 distractor documents: the fact's unit in the top 3."""
    data = eval_set()
    docs = [p for p in EVAL_DIR.iterdir() if p.name != "questions.json"]
    report = kb.ingest([*docs, *write_distractors(tmp_path / "python", limit=12)])
    assert report.ok and len(report.added) == len(docs) + 12
    found = sum(any(has_fact(p.text, item["fact"]) for p in kb.search(item["q"], top_k=3))
                for item in data["questions"])
    assert found / len(data["questions"]) >= 0.95


def test_ingest_killed_midway_leaves_a_usable_kb_and_the_rerun_completes(cfg, tmp_path, rag_embedder):
    from voice.rag import KnowledgeBase

    folder = tmp_path / "docs"
    files = write_distractors(folder, limit=30)
    kb_dir = tmp_path / "kb"
    env = {**os.environ, "VOICE_GENERAL__CACHE_DIR": str(rag_embedder.model_dir.parent.parent),
           "VOICE_GENERAL__DATA_DIR": cfg.general.data_dir}
    proc = subprocess.Popen([sys.executable, "-m", "voice", "ingest", "--kb", str(kb_dir), str(folder)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    added = 0
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        added += line.startswith("added")
        if added >= 3 or time.monotonic() > deadline:
            break
    time.sleep(0.3)  # well into the next file's embedding or write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 3 <= added < len(files)

    kb = KnowledgeBase(cfg, kb_dir, embedder=rag_embedder)
    try:
        docs = kb.list_documents()
        assert len({d.source for d in docs if d.complete}) >= 3
        assert kb.search("lambda expressions") is not None  # searchable, no crash
        report = kb.ingest([folder])
        assert report.ok and len(report.unchanged) >= 3
        assert len(report.unchanged) + len(report.added) + len(report.updated) == len(files)
        docs = kb.list_documents()
        assert len(docs) == len(files) and all(d.complete for d in docs)
        assert kb.store.count() == sum(d.chunks for d in docs) == kb.store.local_index().n
    finally:
        kb.close()
