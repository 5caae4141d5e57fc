"""Splitter and loaders: pure functions, no model."""

from __future__ import annotations

import pytest

from tests.helpers.rag import make_pdf
from voice.errors import ConfigError
from voice.rag.lexical import tokenize
from voice.rag.loaders import (
    DocumentError,
    Record,
    decode_text,
    load_csv,
    load_html,
    load_markdown,
    load_pdf,
    load_txt,
)
from voice.rag.splitter import split_records, split_text


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
            b"<body><p>Hello &amp; welcome.</p><div>Second<br>block</div></body></html>")
    records = load_html(html)
    text = " ".join(r.text for r in records)
    assert "SECRET" not in text and ".a{}" not in text and "<" not in text
    assert records == [Record("Hello & welcome.", "T"), Record("Second block", "T")]


def test_html_sections_and_table_rows_are_records():
    html = (b"<html><body><h1>Office</h1><p>Welcome.</p><h2>Printers</h2><table>"
            b"<tr><th>Name</th><th>Room</th></tr><tr><td>Colour printer</td><td>2.14</td></tr></table>"
            b"<h2>Kitchen</h2><p>Coffee is free.</p></body></html>")
    assert load_html(html) == [
        Record("Welcome.", "Office"),
        Record("Name: Colour printer; Room: 2.14.", "Office > Printers"),
        Record("Coffee is free.", "Office > Kitchen"),
    ]


def test_csv_rows_become_records_with_their_header():
    assert load_csv(b"name;city\nAda;Oslo\n\nBo;Rome\n") == [
        Record("name: Ada; city: Oslo."), Record("name: Bo; city: Rome.")]


def test_markdown_sections_have_their_heading_path():
    md = (b"# Clinic\n\nSee [the docs](http://x/y) and ![logo](a.png), **now**.\n\n## Hours\n\n"
          b"- Monday: 8 to 17\n- Tuesday: closed\n\n```\n# not a heading\n```\n\n## Fees\n\n"
          b"### Check-up\nA check-up costs 85 euros.\n\n# Other\nText.")
    assert load_markdown(md) == [
        Record("See the docs and logo, now.", "Clinic"),
        Record("Monday: 8 to 17", "Clinic > Hours"),
        Record("Tuesday: closed", "Clinic > Hours"),
        Record("# not a heading", "Clinic > Hours"),
        Record("A check-up costs 85 euros.", "Clinic > Fees > Check-up"),
        Record("Text.", "Other"),
    ]


def test_plain_text_paragraphs_under_heading_lines():
    txt = b"3. Charging\nCharge the battery\nfor 4 hours.\n\nError codes\n\nE7 means the motor is hot.\n\n- one\n- two"
    assert load_txt(txt) == [
        Record("Charge the battery for 4 hours.", "3. Charging"),
        Record("E7 means the motor is hot.", "Error codes"),
        Record("one", "Error codes"), Record("two", "Error codes"),
    ]


def test_units_pack_short_records_of_one_section_and_cut_long_ones():
    long = " ".join(f"Sentence {i} is about Dr. Lindqvist and the clinic." for i in range(12))
    records = [Record("Monday: 8 to 17", "Hours"), Record("Tuesday: closed", "Hours"),
               Record("name: Ada.", ""), Record("name: Bo.", ""), Record(long, "Fees")]
    units = split_records(records, 200)
    assert units[0].text == "Monday: 8 to 17\nTuesday: closed" and units[0].indexed_text.startswith("Hours: ")
    assert [u.text for u in units[1:3]] == ["name: Ada.", "name: Bo."]  # rows are never packed
    rest = units[3:]
    assert len(rest) >= 3 and all(len(u.text) <= 200 and u.title == "Fees" for u in rest)
    assert all(u.text.endswith("clinic.") for u in rest)  # cut at sentences, not after "Dr."
    assert " ".join(u.text for u in rest) == long


def test_lexical_tokens_keep_codes_and_numbers():
    toks = tokenize("Error E7 on firmware 4.12: call 555-0142, Dr. Lindqvist's printers.")
    assert {"e7", "4.12", "555-0142", "0142", "lindqvist", "printer"} <= set(toks)
    assert "on" not in toks and "s" not in toks


def test_binary_and_legacy_text():
    with pytest.raises(DocumentError, match="binary"):
        decode_text(b"abc\x00def" * 100)
    with pytest.raises(DocumentError, match="binary"):
        decode_text(bytes(range(1, 32)) * 50)
    assert decode_text("café".encode("cp1252")) == "café"
    assert decode_text("\ufeffhello".encode()) == "hello"


def test_pdf_text_and_malformed_pdf():
    assert load_pdf(make_pdf("Mount Ferrovel erupted in 1312.")) == [Record("Mount Ferrovel erupted in 1312.", "page 1")]
    with pytest.raises(DocumentError, match="malformed PDF"):
        load_pdf(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage")
    with pytest.raises(DocumentError, match="not a PDF"):
        load_pdf(b"hello")


def test_lexical_query_is_bounded():
    from voice.rag.lexical import MAX_QUERY_TERMS, query_vector

    q = query_vector(" ".join(f"word{i}" for i in range(5000)))
    assert len(q.indices) == MAX_QUERY_TERMS == 64
    assert query_vector("E7 E7 e7").indices == query_vector("E7").indices  # distinct terms, weight 1
