"""Turn a document file into plain text: .txt, .md, .html, .csv, .pdf.

Loaders take the file's bytes (already read and size-checked by the caller) and return text;
a file that cannot be used raises :class:`DocumentError` with a short reason, so the ingest
can skip it and go on.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
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


def load_txt(data: bytes) -> str:
    return decode_text(data)


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def load_markdown(data: bytes) -> str:
    """Markdown stays mostly as written; links and images keep only their text."""
    text = decode_text(data)
    text = _MD_IMAGE.sub(r"\1", text)
    return _MD_LINK.sub(r"\1", text)


class _HtmlText(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BLOCK = frozenset({
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "title", "dt", "dd",
    })

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def load_html(data: bytes) -> str:
    """Visible text of an HTML page: scripts, styles and markup removed, blocks as paragraphs."""
    parser = _HtmlText()
    parser.feed(decode_text(data))
    parser.close()
    body = "".join(parser.parts)
    paragraphs = [re.sub(r"[ \t\r\f\v]+", " ", p).strip() for p in re.split(r"\n\s*\n", body)]
    title = " ".join("".join(parser.title).split())
    out = [p for p in paragraphs if p]
    if title:
        out.insert(0, title)
    return "\n\n".join(out)


def load_csv(data: bytes) -> str:
    """Each row becomes one line "column: value; column: value" (the first row is the header)."""
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
        return ""
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        return ", ".join(header)
    lines = []
    for row in rows[1:]:
        cells = []
        for i, cell in enumerate(row):
            cell = cell.strip()
            if not cell:
                continue
            name = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            cells.append(f"{name}: {cell}")
        lines.append("; ".join(cells) + ".")
    # Blank lines between rows so the splitter may cut between any two rows.
    return "\n\n".join(lines)


def load_pdf(data: bytes) -> str:
    """Text of every page (pypdf); a damaged, encrypted or image-only PDF raises DocumentError."""
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
    return "\n\n".join(p for p in pages if p)


LOADERS: dict[str, Callable[[bytes], str]] = {
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


def extract_text(path: Path, data: bytes) -> str:
    """Plain text of ``data`` read from ``path``, chosen by suffix."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DocumentError(f"unsupported file type {path.suffix or '(none)'}")
    return loader(data)
