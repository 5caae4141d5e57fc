"""Splitter and loaders: pure functions, no model."""

from __future__ import annotations

import pytest

from tests.helpers.rag import make_pdf
from voice.errors import ConfigError
from voice.rag.loaders import DocumentError, decode_text, load_csv, load_html, load_markdown, load_pdf
from voice.rag.splitter import split_text


def _sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i % 5} in a few words." for i in range(n))


def test_split_respects_size_and_sentence_boundaries():
    text = _sentences(60)
    chunks = split_text(text, chunk_size=300, overlap=80)
    assert len(chunks) > 5
    assert all(len(c) <= 300 for c in chunks)
    for c in chunks:
        assert c.startswith("Sentence number") and c.endswith("words.")
    # Every sentence appears somewhere, in order.
    joined = " ".join(chunks)
    positions = [joined.find(f"Sentence number {i} ") for i in range(60)]
    assert all(p >= 0 for p in positions)


def test_split_overlap_repeats_trailing_sentences():
    chunks = split_text(_sentences(40), chunk_size=300, overlap=120)
    for a, b in zip(chunks, chunks[1:], strict=False):
        last = a.split(". ")[-1]
        assert last in b, "the next chunk should start with the previous chunk's last sentence"
    no_overlap = split_text(_sentences(40), chunk_size=300, overlap=0)
    assert sum(map(len, no_overlap)) < sum(map(len, chunks))


def test_split_keeps_paragraphs_and_cuts_giant_words():
    text = "Short first paragraph.\n\nSecond paragraph here.\n\n" + "x" * 1000
    chunks = split_text(text, chunk_size=200, overlap=20)
    assert chunks[0] == "Short first paragraph.\n\nSecond paragraph here."
    assert all(len(c) <= 200 for c in chunks)
    assert "".join(c for c in chunks[1:]).count("x") >= 1000


def test_split_empty_and_bad_config():
    assert split_text("  \n\n  ", 200, 20) == []
    with pytest.raises(ConfigError):
        split_text("abc", 200, 200)
    with pytest.raises(ConfigError):
        split_text("abc", 10, 0)


def test_html_drops_scripts_styles_and_tags():
    html = (b"<html><head><title>T</title><script>var x = 'SECRET';</script><style>.a{}</style></head>"
            b"<body><p>Hello &amp; welcome.</p><div>Second block</div></body></html>")
    text = load_html(html)
    assert "SECRET" not in text and ".a{}" not in text and "<" not in text
    assert "Hello & welcome." in text and "Second block" in text
    assert text.startswith("T")


def test_csv_rows_become_sentences():
    text = load_csv(b"name;city\nAda;Oslo\nBo;Rome\n")
    assert text.splitlines()[0] == "name: Ada; city: Oslo."
    assert "name: Bo; city: Rome." in text


def test_markdown_keeps_link_text():
    assert load_markdown(b"See [the docs](http://x/y) and ![logo](a.png).") == "See the docs and logo."


def test_binary_and_legacy_text():
    with pytest.raises(DocumentError, match="binary"):
        decode_text(b"abc\x00def" * 100)
    with pytest.raises(DocumentError, match="binary"):
        decode_text(bytes(range(1, 32)) * 50)
    assert decode_text("café".encode("cp1252")) == "café"
    assert decode_text("\ufeffhello".encode()) == "hello"


def test_pdf_text_and_malformed_pdf():
    assert load_pdf(make_pdf("Mount Ferrovel erupted in 1312.")) == "Mount Ferrovel erupted in 1312."
    with pytest.raises(DocumentError, match="malformed PDF"):
        load_pdf(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage")
    with pytest.raises(DocumentError, match="not a PDF"):
        load_pdf(b"hello")
