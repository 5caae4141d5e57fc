"""Turn a stream of LLM text deltas into pieces worth speaking (sans-I/O, no models).

- The first piece goes out as soon as a clause or sentence boundary follows at least
  ``min_first_chars`` characters, so the speaker starts early; failing that, at a word boundary
  once it has ``first_words`` words (0 = off).
- Later pieces are whole sentences of at least ``min_chars`` characters (short sentences are
  joined); a piece that grows past ``max_chars`` is cut at a clause boundary or between words.
- What should not be read aloud is dropped or rewritten: markdown emphasis, headers, links
  (-> their text), images, code fences and long inline code, URLs, emoji, list markers,
  table pipes, HTML tags (:func:`clean_for_speech` does the same for a whole text: ``voice say``,
  ``voice synth``).
- :func:`utterances` is what every engine synthesizes: sentences, none longer than
  ``tts.max_sentence_chars`` (split at a clause, else a word boundary, else hard).
- ``max_response_chars`` caps what one reply speaks: later pieces are dropped with a warning.

A boundary counts only once the whitespace after it has arrived, so "3." + "14" or "Dr." +
" Smith" never split early. Unfinished markdown (an open ``**``, ``[``, backtick) is held
back until it closes or the line ends.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from voice.config import ChunkerConfig

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- cleaning

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}\s+|[-*+•]\s+|\d{1,3}[.)]\s+|>\s?|\|\s*)+")
# A line beginning that may still turn into a marker or a fence when more text arrives.
_MARKER_PREFIX = re.compile(r"^\s*(?:#{1,6}|[-*+•]|\d{1,3}[.)]?|>|\||`{1,2}|~{1,2})?$")
_RULE_LINE = re.compile(r"^\s*(?:[-*_=]\s*){3,}$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")

_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\n]*\)")
_REF_LINK = re.compile(r"\[([^\]\n]+)\]\[[^\]\n]*\]")
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto):[^>\s]*>", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]", re.IGNORECASE)
_INLINE_CODE = re.compile(r"`+([^`\n]*)`+")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_ITALIC_UNDER = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]*>")
_FOOTNOTE = re.compile(r"\[\^[^\]\n]*\]")
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, symbols, flags
    "\U00002600-\U000027bf"  # misc symbols, dingbats
    "\U00002b00-\U00002bff"  # arrows, stars
    "\U0000fe00-\U0000fe0f"  # variation selectors
    "\U0000200d"  # zero-width joiner
    "\U000020e3"  # keycap
    "\U000e0020-\U000e007f"  # tag characters
    "]+"
)
_STRAY = re.compile(r"[*#|~^]+|(?<!\w)_+|_+(?!\w)|`+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DUP_PUNCT = re.compile(r"([,;:])(?:\s*[,;:])+")
_CODE_WORDY = re.compile(r"^[\w .+\-/]{1,30}$")

_TERMINAL = ".!?…"
_ENDS_CLAUSE = _TERMINAL + ",;:"


def _inline_code(m: re.Match[str]) -> str:
    """Short word-like code (`ls`, `pip install`) is read; anything else is dropped."""
    body = m.group(1).strip()
    return f" {body} " if body and _CODE_WORDY.match(body) else " "


def clean_inline(text: str) -> str:
    """Drop or rewrite inline markdown, URLs and emoji in one line of text."""
    text = _INLINE_CODE.sub(_inline_code, text)
    text = _IMAGE.sub(lambda m: f" {m.group(1)} " if m.group(1).strip() else " ", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _FOOTNOTE.sub(" ", text)
    text = _AUTOLINK.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    for _ in range(2):  # nested emphasis: ***both*** or **bold _italic_**
        text = _BOLD.sub(r"\2", text)
        text = _STRIKE.sub(r"\1", text)
        text = _ITALIC_STAR.sub(r"\1", text)
        text = _ITALIC_UNDER.sub(r"\1", text)
    text = _EMOJI.sub(" ", text)
    text = text.replace("|", ", ")
    text = _STRAY.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _DUP_PUNCT.sub(r"\1", text)
    return _SPACES.sub(" ", text)


def _strip_marker(line: str) -> tuple[str, bool]:
    """Remove list/header/quote markers; True when the line was a header or list item."""
    m = _LINE_MARKER.match(line)
    if not m:
        return line, False
    return line[m.end() :], True


def _line_end(text: str) -> str:
    """A finished line ends a sentence: add a period unless it already has punctuation."""
    t = text.rstrip(" ,")  # a table row's last pipe became a comma
    if not any(ch.isalnum() for ch in t):
        return ""
    return t + (" " if t[-1] in _ENDS_CLAUSE else ". ")


def clean_for_speech(text: str) -> str:
    """The whole text as it should be read aloud, on one line."""
    out: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or _RULE_LINE.match(line) or _TABLE_SEP.match(line):
            continue
        body, _ = _strip_marker(line)
        out.append(_line_end(clean_inline(body)))
    return _DUP_PUNCT.sub(r"\1", "".join(out)).strip()


# ----------------------------------------------------------------------------- boundaries

# "No." and "etc." often end a sentence, so they are not here.
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "eg", "ie", "fig",
     "approx", "dept", "inc", "ltd", "mt", "cf", "al"]
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-–—]|[–—])[\"'”’)\]]*(?=\s)")


def _is_abbreviation(text: str, dot: int) -> bool:
    """``text[dot]`` is a period right after an abbreviation or a single initial."""
    if text[dot] != ".":
        return False
    start = dot
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:dot].lower()
    if not word:
        return False
    return word in _ABBREVIATIONS or (len(word) == 1 and text[start].isupper())


def sentence_ends(text: str) -> list[int]:
    """Positions just after each sentence end that is followed by whitespace."""
    return [m.end() for m in _SENTENCE_END.finditer(text) if not _is_abbreviation(text, m.start())]


def clause_ends(text: str) -> list[int]:
    return [m.end() for m in _CLAUSE_END.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """Plain text split into sentences (for engines that synthesize one sentence at a time)."""
    text = _SPACES.sub(" ", text).strip()
    out: list[str] = []
    start = 0
    for end in sentence_ends(text + " "):
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def cut_point(text: str, limit: int, floor: int = 1) -> int:
    """Where to cut ``text`` (longer than ``limit``) so the head fits: the last sentence end,
    else the last clause end, in ``[floor, limit]``; else the last space; else ``limit``."""
    text = text[: limit + 1]  # a boundary at ``limit`` needs the whitespace after it
    for ends in (sentence_ends(text), clause_ends(text)):
        fits = [e for e in ends if floor <= e <= limit]
        if fits:
            return fits[-1]
    space = text.rfind(" ", 0, limit + 1)
    return space if space > 0 else limit


def cap_length(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut where :func:`cut_point` says
    (a clause boundary in the second half or third of the window is preferred to a word boundary)."""
    out: list[str] = []
    text = text.strip()
    while len(text) > limit:
        cut = cut_point(text, limit, floor=max(1, limit // 3))
        head = text[:cut].strip()
        if head:
            out.append(head)
        text = text[cut:].lstrip()
    if text:
        out.append(text)
    return out


def utterances(text: str, max_chars: int) -> list[str]:
    """What an engine synthesizes, one call each: sentences, none longer than ``max_chars``.

    Every engine goes through this (``tts.max_sentence_chars``): the memory of one synthesis
    call grows with the audio it makes, so an unpunctuated text must not become one call.
    """
    return [piece for sentence in split_sentences(text) for piece in cap_length(sentence, max_chars)]


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: "x" * len(m.group(0)), text)


_OPENERS = re.compile(r"\*\*|__|~~|`|!?\[|\]\(|\]$|(?<![\w*])\*(?=\S)|(?<![\w_])_(?=\S)|<[A-Za-z/]?")


def _unclosed_at(text: str) -> int:
    """Index of the first markdown construct in ``text`` that has not closed yet, else len."""
    masked = text
    for pat in (_INLINE_CODE, _IMAGE, _LINK, _REF_LINK, _FOOTNOTE, _AUTOLINK, _HTML_TAG,
                _BOLD, _STRIKE, _ITALIC_STAR, _ITALIC_UNDER):
        masked = _mask(masked, pat)
    m = _OPENERS.search(masked)
    return m.start() if m else len(text)


# ----------------------------------------------------------------------------- chunker


def _after_words(text: str, n: int, min_chars: int) -> int | None:
    """Position just after the ``n``-th whole word of ``text`` (one followed by whitespace),
    if those words make at least ``min_chars`` characters; else None."""
    for count, m in enumerate(re.finditer(r"\S+(?=\s)", text), start=1):
        if count >= n and len(text[: m.end()].strip()) >= min_chars:
            return m.end()
    return None


@dataclass
class _Line:
    raw: str = ""
    #: Characters of ``raw`` already moved into the cleaned text.
    consumed: int = 0
    #: The line's beginning is known (marker stripped or known to be plain text).
    started: bool = False
    #: Some speakable text of this line went into the cleaned text.
    has_content: bool = False


class SpeechChunker:
    """Feed LLM deltas, get speakable pieces. One instance per reply (or call ``reset``)."""

    def __init__(self, cfg: ChunkerConfig | None = None) -> None:
        self.cfg = cfg or ChunkerConfig()
        self.reset()

    def reset(self) -> None:
        self._text = ""  # cleaned text not yet emitted
        self._line = _Line()
        self._in_fence = False
        self._emitted = 0
        self._spoken = 0  # characters emitted, for max_response_chars
        #: The reply reached ``max_response_chars``: later text is dropped, not spoken.
        self.truncated = False

    # -------------------------------------------------------------- public
    def feed(self, delta: str) -> list[str]:
        """Add a text delta; return the pieces that are ready to speak (maybe none)."""
        if not delta or self.truncated:
            return []
        parts = delta.split("\n")
        for i, part in enumerate(parts):
            self._line.raw += part
            if i < len(parts) - 1:
                self._end_line()
        self._advance_line()
        return self._pieces(final=False)

    def flush(self) -> list[str]:
        """The reply is complete: everything left, as pieces. The chunker is reset."""
        pieces: list[str] = []
        if not self.truncated:
            self._end_line(final=True)
            pieces = self._pieces(final=True)
        self.reset()
        return pieces

    # -------------------------------------------------------------- lines
    def _end_line(self, *, final: bool = False) -> None:
        line = self._line
        self._line = _Line()
        if _FENCE.match(line.raw):
            self._in_fence = not self._in_fence
            return
        if self._in_fence:
            return
        if not line.started:
            if _RULE_LINE.match(line.raw) or _TABLE_SEP.match(line.raw):
                return
            body, _ = _strip_marker(line.raw)
            self._append(clean_inline(body), line_end=not final)
            return
        self._append(clean_inline(line.raw[line.consumed :]), line_end=not final, had_content=line.has_content)

    def _advance_line(self) -> None:
        """Move the safe, finished part of the current (incomplete) line into cleaned text."""
        line = self._line
        if self._in_fence:
            return
        if not line.started:
            if _MARKER_PREFIX.match(line.raw) or _FENCE.match(line.raw):
                return  # may still become a list marker, header or code fence
            if _RULE_LINE.match(line.raw) or _TABLE_SEP.match(line.raw):
                return
            m = _LINE_MARKER.match(line.raw)
            line.consumed = m.end() if m else 0
            line.started = True
        rest = line.raw[line.consumed :]
        cut = max(rest.rfind(" "), rest.rfind("\t")) + 1  # whole words only
        if cut <= 0:
            return
        safe = _unclosed_at(rest[:cut])
        if safe < cut:
            cut = max(rest.rfind(" ", 0, safe), rest.rfind("\t", 0, safe)) + 1
            if cut <= 0:
                return
        cleaned = clean_inline(rest[:cut])
        self._append(cleaned, line_end=False)
        line.consumed += cut
        line.has_content = line.has_content or any(c.isalnum() for c in cleaned)

    def _append(self, cleaned: str, *, line_end: bool, had_content: bool = False) -> None:
        text = self._text + cleaned
        if line_end:
            if had_content or any(c.isalnum() for c in cleaned):
                text = _line_end(text)
            elif text.strip():
                text = text.rstrip() + " "
        elif text and not text.endswith(" "):
            text += " "  # moved text always ends between words
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text))
        self._text = _DUP_PUNCT.sub(r"\1", text.lstrip())

    # -------------------------------------------------------------- pieces
    def _pieces(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                break
            out.append(piece)
        if final:
            rest = self._text.strip()
            self._text = ""
            if rest:
                out.append(rest)
        return self._within_budget([p for p in out if any(c.isalnum() for c in p)])

    def _within_budget(self, pieces: list[str]) -> list[str]:
        """The pieces that fit in ``max_response_chars``; the first that does not ends the reply."""
        limit = self.cfg.max_response_chars
        for n, piece in enumerate(pieces):
            if self._spoken + len(piece) > limit:
                self.truncated = True
                self._text = ""
                log.warning(
                    "the answer is longer than tts.chunker.max_response_chars = %d characters:"
                    " the rest is not spoken", limit,
                )
                return pieces[:n]
            self._spoken += len(piece) + 1
        return pieces

    def _next_piece(self) -> str | None:
        text = self._text
        first = self._emitted == 0
        minimum = self.cfg.min_first_chars if first else self.cfg.min_chars
        ends = sorted(set(sentence_ends(text)) | (set(clause_ends(text)) if first else set()))
        cut = next((e for e in ends if len(text[:e].strip()) >= minimum), None)
        if cut is None and first and self.cfg.first_words > 0:
            cut = _after_words(text, self.cfg.first_words, minimum)
        if cut is None and len(text) > self.cfg.max_chars:
            cut = self._overflow_cut(text)
        if cut is None:
            return None
        piece = text[:cut].strip()
        self._text = text[cut:].lstrip()
        if not any(c.isalnum() for c in piece):
            return self._next_piece()
        self._emitted += 1
        return piece

    def _overflow_cut(self, text: str) -> int:
        return cut_point(text, self.cfg.max_chars, floor=max(1, self.cfg.min_first_chars))
