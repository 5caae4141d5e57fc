"""Text normalisation for scoring speech recognition: case, punctuation, numbers.

``normalize("Go forward 10 meters.") == "go forward ten meters"``. Used by the WER tests
and ``scripts/bench_asr.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$")


def number_words(n: int) -> str:
    """A non-negative integer in English words: 2934 -> two thousand nine hundred thirty four."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _spell(token: str) -> str:
    if token.isdigit():
        if len(token) > 1 and token.startswith("0"):  # "007": digit by digit
            return " ".join(_ONES[int(d)] for d in token)
        return number_words(int(token))
    m = _ORDINAL.match(token)
    if m:
        return number_words(int(m.group(1)))  # close enough for scoring: 1st -> one
    return _ABBREVIATIONS.get(token, token)


def normalize(text: str) -> str:
    """Lowercase, numbers spelled out, punctuation removed, single spaces."""
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 10,000 -> 10000
    text = re.sub(r"(\d)\.(\d)", r"\1 point \2", text)
    text = text.replace("%", " percent ")
    text = re.sub(r"[-‐–—/]", " ", text)
    text = re.sub(r"['’]", "", text)
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"(?<=\d)(?=[a-z])(?!(?:st|nd|rd|th)\b)|(?<=[a-z])(?=\d)", " ", text)
    return " ".join(_spell(tok) for tok in text.split()).strip()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Word error rate over (reference, hypothesis) pairs: total edits / total reference words."""
    edits = words = 0
    for ref, hyp in pairs:
        r, h = normalize(ref).split(), normalize(hyp).split()
        edits += edit_distance(r, h)
        words += len(r)
    return edits / words if words else 0.0
