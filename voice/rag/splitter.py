"""Split text into chunks of about ``chunk_size`` characters on paragraph and sentence boundaries.

Paragraphs (blank-line separated) are kept whole when they fit; longer ones are cut into
sentences, and sentences longer than a chunk at word boundaries. Units are packed greedily; the
next chunk starts with the last units of the previous one that fit in ``overlap`` characters.

:func:`split_records` makes the retrieval units from a loader's records. This stays
hand-written rather than langchain-text-splitters: its RecursiveCharacterTextSplitter cuts on
paragraph, line and space separators without knowing sentences, its MarkdownHeaderTextSplitter duplicates what the markdown loader already does
with the heading path, and the package pulls in langchain-core with a dozen dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from voice.errors import ConfigError
from voice.rag.loaders import Record

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=\S)")
_ABBREV = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|St|No|Nr|Prof|approx|ca|e\.g|i\.e|vs|etc)|\b[A-Z])\.$")


def _sentences(para: str) -> list[str]:
    """Sentences of a paragraph; no cut after an abbreviation ("Dr.") or an initial ("J.")."""
    out: list[str] = []
    for sent in _SENTENCE.split(para):
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {sent}"
        else:
            out.append(sent)
    return out


def _check(chunk_size: int, overlap: int) -> None:
    if chunk_size < 50:
        raise ConfigError(f"rag.chunk_size = {chunk_size} is too small (at least 50 characters)")
    if overlap < 0 or overlap >= chunk_size:
        raise ConfigError(
            f"rag.chunk_overlap = {overlap} must be at least 0 and smaller than rag.chunk_size ({chunk_size})"
        )


def _words(text: str, size: int) -> list[str]:
    """Cut an over-long sentence at word boundaries (hard cut for a word longer than ``size``)."""
    out: list[str] = []
    cur = ""
    for word in text.split():
        while len(word) > size:
            if cur:
                out.append(cur)
                cur = ""
            out.append(word[:size])
            word = word[size:]
        if cur and len(cur) + 1 + len(word) > size:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(cur)
    return out


def _units(text: str, size: int) -> list[tuple[str, bool]]:
    """(unit, starts_paragraph) pairs, each unit at most ``size`` characters."""
    units: list[tuple[str, bool]] = []
    for para in _PARAGRAPH.split(text):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para) <= size:
            units.append((para, True))
            continue
        first = True
        for sent in _sentences(para):
            for piece in [sent] if len(sent) <= size else _words(sent, size):
                units.append((piece, first))
                first = False
    return units


def _join(units: list[tuple[str, bool]]) -> str:
    out = ""
    for i, (text, new_para) in enumerate(units):
        if i == 0:
            out = text
        else:
            out += ("\n\n" if new_para else " ") + text
    return out


def split_text(text: str, chunk_size: int = 800, overlap: int = 120) -> list[str]:
    """Chunks of at most ``chunk_size`` characters (overlap included)."""
    _check(chunk_size, overlap)
    units = _units(text, chunk_size)
    chunks: list[str] = []
    cur: list[tuple[str, bool]] = []
    cur_len = 0
    fresh = 0  # units in ``cur`` that are not overlap carried from the previous chunk
    for unit in units:
        add = len(unit[0]) + (2 if cur else 0)
        if cur and cur_len + add > chunk_size:
            if fresh:
                chunks.append(_join(cur))
            # Carry trailing units that fit in the overlap and leave room for this unit.
            carry: list[tuple[str, bool]] = []
            carry_len = 0
            for prev in reversed(cur):
                n = len(prev[0]) + (2 if carry else 0)
                if carry_len + n > overlap or carry_len + n + len(unit[0]) + 2 > chunk_size:
                    break
                carry.insert(0, prev)
                carry_len += n
            cur, cur_len, fresh = carry, carry_len, 0
            add = len(unit[0]) + (2 if cur else 0)
        cur.append(unit)
        cur_len += add
        fresh += 1
    if cur and fresh:
        chunks.append(_join(cur))
    return chunks


@dataclass(frozen=True)
class Unit:
    """A retrieval unit: a sentence or a few, from one record (``record`` is its index) or from
    several short records of one titled section."""

    text: str
    title: str
    record: int

    @property
    def indexed_text(self) -> str:
        """What is embedded: the heading path gives a short unit its context."""
        return f"{self.title}: {self.text}" if self.title else self.text

    @property
    def lexical_text(self) -> str:
        """What BM25 indexes: the unit and its own heading only. The whole path would give
        every unit of a document its title words ("Lindqvist Dental Practice"), and a question
        naming the document would match them all alike."""
        heading = self.title.rsplit(" > ", 1)[-1]
        return f"{heading}: {self.text}" if heading else self.text


def split_records(records: Sequence[Record], unit_size: int) -> list[Unit]:
    """Units of at most ``unit_size`` characters, in document order.

    A long record is cut at sentence boundaries (:func:`split_text`, no overlap: neighbours are
    added at query time instead). Consecutive short records with the same non-empty title (the
    items of a markdown list, the lines of one section) are packed together up to the size;
    untitled records (CSV rows, plain paragraphs) stay one per unit.
    """
    _check(unit_size, 0)
    units: list[Unit] = []
    for n, rec in enumerate(records):
        pieces = split_text(rec.text, unit_size, 0)
        for k, piece in enumerate(pieces):
            prev = units[-1] if units else None
            if (k == 0 and len(pieces) == 1 and prev is not None and rec.title and prev.title == rec.title
                    and prev.record == n - 1 and len(prev.text) + 1 + len(piece) <= unit_size):
                units[-1] = Unit(f"{prev.text}\n{piece}", rec.title, n)
            else:
                units.append(Unit(piece, rec.title, n))
    return units
