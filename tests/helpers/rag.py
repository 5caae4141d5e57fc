"""Fixtures for the retrieval tests: one embedder per session, documents in every format."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Facts no model can know, one per format, with a question that should find each.
FACTS = {
    "reactor.txt": (
        "The Zorblax fusion reactor in Tromsø produces 42 megawatts of power.\n\n"
        "It was commissioned in 1987 by the Nordic Energy Cooperative and is cooled by fjord water.\n",
        "How much power does the Zorblax reactor produce?",
    ),
    "bakery.md": (
        "# The Quillon bakery\n\nThe Quillon bakery on Harbour Street bakes its sourdough bread at "
        "250 degrees every morning at five o'clock. See [the menu](http://example.invalid/menu).\n",
        "When does the Quillon bakery bake its sourdough?",
    ),
    "pets.html": (
        "<html><head><title>Pets</title><script>var hidden = 'purple elephant dancing';</script>"
        "<style>p { color: red }</style></head><body><h1>Our cat</h1>"
        "<p>The cat named Whiskerton sleeps on the blue velvet sofa every afternoon.</p></body></html>",
        "Where does the cat Whiskerton sleep?",
    ),
    "staff.csv": (
        "name,city,role\nAlvar Nyqvist,Reykjavik,lighthouse keeper\nBeatrix Olumide,Lagos,glassblower\n",
        "What is Alvar Nyqvist's job?",
    ),
    "volcano.pdf": (
        "Mount Ferrovel is a dormant volcano that last erupted in the year 1312.",
        "When did Mount Ferrovel last erupt?",
    ),
}


def make_pdf(text: str | list[list[str]]) -> bytes:
    """A small valid PDF (Helvetica, correct xref): one page showing ``text``, or one page per
    list of lines."""
    pages = [[text]] if isinstance(text, str) else text

    def esc(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    n = len(pages)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
                " ".join(f"{3 + 2 * i} 0 R" for i in range(n)).encode(), n)]
    font = 3 + 2 * n
    for i, lines in enumerate(pages):
        ops = " ".join(f"({esc(line)}) Tj 0 -15 Td" for line in lines)
        stream = f"BT /F1 11 Tf 40 750 Td {ops} ET".encode("latin-1")
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                    b" /Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def write_docs(folder: Path) -> dict[str, Path]:
    """Write every FACTS document into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (content, _question) in FACTS.items():
        p = folder / name
        if name.endswith(".pdf"):
            p.write_bytes(make_pdf(content))
        else:
            p.write_text(content, encoding="utf-8")
        out[name] = p
    return out


@pytest.fixture(scope="session")
def rag_embedder(tmp_path_factory: pytest.TempPathFactory):
    """The real MiniLM int8 embedder, loaded once per test session."""
    from voice.config import load_config
    from voice.rag.embedder import load_embedder

    c = load_config(environ={})
    c.general.cache_dir = str(tmp_path_factory.mktemp("rag-cache"))
    emb = load_embedder(c)
    emb.load()
    return emb


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    write_docs(d)
    return d


@pytest.fixture
def kb(cfg, tmp_path: Path, rag_embedder):
    """A fresh local-mode knowledge base in a temp folder, closed after the test."""
    from voice.rag import KnowledgeBase

    k = KnowledgeBase(cfg, tmp_path / "kb", embedder=rag_embedder)
    yield k
    k.close()


# ---------------------------------------------------------------- the evaluation set
EVAL_DIR = Path(__file__).resolve().parent.parent / "data" / "rag_eval"


def eval_set() -> dict:
    """tests/data/rag_eval/questions.json: questions (q, doc, fact, keywords) and unanswerable ones."""
    import json

    return json.loads((EVAL_DIR / "questions.json").read_text(encoding="utf-8"))


def write_distractors(folder: Path, limit: int | None = None) -> list[Path]:
    """Python's own reference topics (pydoc_data.topics, shipped with every Python) as .txt
    documents: real text about something else. ``limit`` takes the first N by name."""
    import pydoc_data.topics

    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(pydoc_data.topics.topics)[:limit]
    out = []
    for name in names:
        p = folder / f"python-{name}.txt"
        p.write_text(pydoc_data.topics.topics[name], encoding="utf-8")
        out.append(p)
    return out


def has_fact(text: str, fact: str) -> bool:
    return " ".join(fact.split()) in " ".join(text.split())


def answer_ok(answer: str, keywords: list[list[str]]) -> bool:
    """Each group needs one of its alternatives in the answer (case-insensitive)."""
    low = answer.lower()
    return all(any(alt.lower() in low for alt in group) for group in keywords)
