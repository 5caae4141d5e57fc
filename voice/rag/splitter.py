"""Split text into chunks of about ``chunk_size`` characters on paragraph and sentence boundaries.

Paragraphs (blank-line separated) are kept whole when they fit; longer ones are cut into
sentences, and sentences longer than a chunk at word boundaries. Units are packed greedily; the
next chunk starts with the last units of the previous one that fit in ``overlap`` characters.
"""

from __future__ import annotations

import re

from voice.errors import ConfigError

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=\S)")


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
        for sent in _SENTENCE.split(para):
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
