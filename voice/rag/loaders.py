"""Turn a document file into its natural records: .txt, .md, .html, .csv, .pdf.

Loaders take the file's bytes (already read and size-checked by the caller) and return
:class:`Record` s (a CSV row with its header names, a markdown or HTML paragraph with its
heading path, a plain-text paragraph, a PDF page's paragraphs);
a file that cannot be used raises :class:`DocumentError` with a short reason, so the ingest
can skip it and go on.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".csv", ".pdf")


class DocumentError(Exception):
    """This document cannot be ingested; ``str(err)`` says why in a few words."""


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else cp1252/latin-1 for legacy files; refuses binary data."""
    head = data[:8192]
    if b"\x00" in head:
        raise DocumentError("binary data (NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    sample = text[:8192]
    if sample:
        controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
        if controls / len(sample) > 0.05:
            raise DocumentError("binary data (control characters), not text")
    return text


@dataclass(frozen=True)
class Record:
    """One natural record of a document: a paragraph, a CSV row, a page paragraph.

    ``title`` is where it sits: the heading path of a markdown or HTML section ("Clinic >
    Opening hours"), the heading line above a plain-text paragraph, "page 3" of a PDF.
    """

    text: str
    title: str = ""


_HEADING_LINE = re.compile(r"^(?:\d+(?:\.\d+)*\.?\s+)?[A-Z][^.!?:;]{0,70}$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+")


def _is_heading(line: str) -> bool:
    """A short line on its own, capitalised, without closing punctuation: a plain-text heading."""
    line = line.strip()
    return 0 < len(line) <= 72 and len(line.split()) <= 9 and bool(_HEADING_LINE.match(line))


def _blocks(text: str) -> list[str]:
    """Paragraphs (blank-line separated); list items inside one become blocks of their own."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if not lines:
            continue
        cur: list[str] = []
        for ln in lines:
            if _LIST_ITEM.match(ln) and cur:
                out.append(" ".join(cur))
                cur = []
            cur.append(ln.strip())
        out.append(" ".join(cur))
    return [" ".join(_LIST_ITEM.sub("", b, count=1).split()) for b in out if b.strip()]


def text_records(text: str, title: str = "") -> list[Record]:
    """Paragraphs of plain text; a heading line becomes the title of the paragraphs below it."""
    records: list[Record] = []
    heading = ""
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if ln.strip()]
        if lines and _is_heading(lines[0]) and (len(lines) > 1 or len(lines[0]) < 60):
            heading = lines[0].strip()
            lines = lines[1:]
        full = " > ".join(t for t in (title, heading) if t)
        records += [Record(b, full) for b in _blocks("\n".join(lines))]
    return records


def load_txt(data: bytes) -> list[Record]:
    return text_records(decode_text(data))


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|`)(?=\S)(.+?)(?<=\S)\1")


def _md_inline(text: str) -> str:
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    return _MD_EMPHASIS.sub(r"\2", text)


def load_markdown(data: bytes) -> list[Record]:
    """One record per paragraph or list item, titled with its heading path ("A > B")."""
    path: list[tuple[int, str]] = []
    records: list[Record] = []
    body: list[str] = []
    fence = False

    def flush() -> None:
        title = " > ".join(t for _, t in path)
        for block in _blocks("\n".join(body)):
            if block.strip("|-: "):
                records.append(Record(_md_inline(block), title))
        body.clear()

    for line in decode_text(data).splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            body.append("")
            continue
        m = None if fence else _MD_HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path[:] = [(lv, t) for lv, t in path if lv < level]
            path.append((level, _md_inline(m.group(2))))
        else:
            body.append(line)
    flush()
    return records


class _HtmlText(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav"})
    BLOCK = frozenset({
        "p", "div", "li", "ul", "ol", "tr", "table", "section", "article", "header",
        "footer", "pre", "blockquote", "title", "dt", "dd",
    })
    HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.records: list[Record] = []
        self.title: list[str] = []
        self.path: list[tuple[int, str]] = []
        self._buf: list[str] = []
        self._heading: list[str] | None = None
        self._cells: list[str] | None = None
        self._header: list[str] = []
        self._all_th = True
        self._skip = 0
        self._in_title = False

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if text:
            self.records.append(Record(text, " > ".join(t for _, t in self.path)))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag in self.HEADINGS:
            self._flush()
            self._heading = []
        elif tag in ("td", "th") and self._cells is not None:
            self._buf = []
            self._all_th = self._all_th and tag == "th"
        elif tag == "tr":
            self._flush()
            self._cells = []
            self._all_th = True
        elif tag == "table":
            self._flush()
            self._header = []
        elif tag == "br":
            self._buf.append(" ")
        elif tag in self.BLOCK:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._buf.append(" ")
        elif tag in self.BLOCK and self._cells is None:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag in self.HEADINGS and self._heading is not None:
            level = int(tag[1])
            text = " ".join("".join(self._heading).split())
            self._heading = None
            self.path = [(lv, t) for lv, t in self.path if lv < level]
            if text:
                self.path.append((level, text))
        elif tag in ("td", "th") and self._cells is not None:
            self._cells.append(" ".join("".join(self._buf).split()))
            self._buf = []
        elif tag == "tr" and self._cells is not None:
            cells = self._cells
            self._cells = None
            if self._all_th and any(cells):
                self._header = cells  # a header row names the cells of the rows below
            elif any(cells):
                named = [f"{self._header[i]}: {c}" if i < len(self._header) and self._header[i] else c
                         for i, c in enumerate(cells) if c]
                self._buf = ["; ".join(named) + "."]
                self._flush()
        elif tag in self.BLOCK and self._cells is None:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading.append(data)
        else:
            self._buf.append(data)


def load_html(data: bytes) -> list[Record]:
    """Visible text of an HTML page, one record per block, titled with its heading path.

    Scripts, styles and navigation are dropped; a table row becomes one record.
    """
    parser = _HtmlText()
    parser.feed(decode_text(data))
    parser.close()
    parser._flush()
    records = parser.records
    title = " ".join("".join(parser.title).split())
    if title and not any(r.title for r in records):
        records = [Record(r.text, title) for r in records]
    return records


def load_csv(data: bytes) -> list[Record]:
    """One record per row: "column: value; column: value." (the first row is the header)."""
    text = decode_text(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    except csv.Error as err:
        raise DocumentError(f"malformed CSV: {err}") from None
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        return [Record(", ".join(header))]
    records = []
    for row in rows[1:]:
        cells = []
        for i, cell in enumerate(row):
            cell = cell.strip()
            if not cell:
                continue
            name = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            cells.append(f"{name}: {cell}")
        records.append(Record("; ".join(cells) + "."))
    return records


def load_pdf(data: bytes) -> list[Record]:
    """Paragraphs of every page (pypdf), titled "page N"; a damaged, encrypted or image-only
    PDF raises DocumentError."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentError("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("encrypted PDF")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, Exception) as err:  # noqa: BLE001 - pypdf raises many kinds on bad files
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DocumentError(f"malformed PDF: {msg[:120]}") from None
    records: list[Record] = []
    for n, page in enumerate(pages, 1):
        records += text_records(_pdf_paragraphs(page), f"page {n}")
    return records


def _pdf_paragraphs(page: str) -> str:
    """pypdf gives one line per text line: a line ending a sentence, or a heading line, ends a
    paragraph; other lines run on."""
    out: list[str] = []
    for line in page.splitlines():
        line = line.strip()
        if not line:
            out.append("")
            continue
        out.append(line)
        if line.endswith((".", "!", "?", ":")) or _is_heading(line):
            out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


LOADERS: dict[str, Callable[[bytes], list[Record]]] = {
    ".txt": load_txt,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
    ".csv": load_csv,
    ".pdf": load_pdf,
}


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load_records(path: Path, data: bytes) -> list[Record]:
    """The records of ``data`` read from ``path``, by the loader its suffix chooses."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DocumentError(f"unsupported file type {path.suffix or '(none)'}")
    return loader(data)
