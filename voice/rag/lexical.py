"""The lexical side of retrieval: BM25 term weights as sparse vectors, and an in-memory index.

Every unit is stored with a sparse vector next to its dense one (same Qdrant point, so the two
indexes can never disagree). Document-side values are BM25's saturated term frequency
``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / AVG_LEN))``; the query side is 1 per term; the
collection's ``Modifier.IDF`` multiplies each term by ``ln(1 + (N - n + 0.5) / (n + 0.5))``, so
a query scores as BM25. Qdrant's local mode searches sparse vectors in Python (95 ms at 10k
units here), so local mode searches :class:`LocalIndex` instead: a numpy copy of both indexes,
built from the stored points on the first search and dropped on every write; same formula,
same scores (a test compares them with Qdrant's own).

Tokens are lower-cased words, numbers and codes: ``E7``, ``4.12``, ``555-0142`` stay whole and
their parts are added too, so "e-bike" also matches "bike". A light suffix rule folds plurals
("printers" -> "printer"); English stop words are left out.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

K1 = 1.2
B = 0.75
#: Typical unit length in tokens (units are 80-300 characters); BM25's length normalisation
#: needs a corpus average, which is not known when one unit is written.
AVG_LEN = 30.0

_TOKEN = re.compile(r"\w+(?:[.,:/'\-]\w+)*")
_PARTS = re.compile(r"[.,:/'\-]")
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves tell please much many also get got s t
"""
_STOP = frozenset(_STOP_WORDS.split())


def _fold(word: str) -> str:
    """A light English suffix fold: plurals and possessives to the singular."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lexical tokens of ``text`` (see the module docstring)."""
    out: list[str] = []
    for m in _TOKEN.finditer(text.lower()):
        tok = m.group(0)
        if tok.endswith("'s"):
            tok = tok[:-2]  # a possessive is the word itself
        parts = _PARTS.split(tok) if not tok.isalnum() else []
        for t in (tok, *(p for p in parts if len(p) > 1)):
            t = t.strip("_")
            if not t or t in _STOP:
                continue
            if not any(c.isdigit() for c in t):
                t = _fold(t)
            out.append(t)
    return out


def term_id(term: str) -> int:
    """A stable 32-bit index for a term (Qdrant sparse indices are uint32)."""
    return zlib.crc32(term.encode("utf-8"))


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


def doc_vector(text: str) -> Sparse:
    """BM25 document-side weights of ``text``."""
    counts = Counter(term_id(t) for t in tokenize(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVG_LEN)
    idx = sorted(counts)
    return Sparse(idx, [counts[i] * (K1 + 1) / (counts[i] + norm) for i in idx])


#: Distinct query terms used (the first ones): a pasted page as a question stays cheap.
MAX_QUERY_TERMS = 64


def query_vector(text: str) -> Sparse:
    """Query-side weights: 1 per distinct term, at most MAX_QUERY_TERMS of them."""
    terms = list(dict.fromkeys(term_id(t) for t in tokenize(text[:20_000])))[:MAX_QUERY_TERMS]
    idx = sorted(terms)
    return Sparse(idx, [1.0] * len(idx))


def idf(n_docs: int, df: int) -> float:
    """Qdrant's IDF modifier (the BM25 form)."""
    return math.log((n_docs - df + 0.5) / (df + 0.5) + 1)


class LocalIndex:
    """Both indexes of a local collection in memory: a dense matrix and an inverted index."""

    def __init__(self, ids: Sequence[str], dense: np.ndarray, sparse: Sequence[Sparse]) -> None:
        self.ids = list(ids)
        self.dense = dense.astype(np.float32, copy=False)
        self.n = len(self.ids)
        postings: dict[int, tuple[list[int], list[float]]] = {}
        for row, sv in enumerate(sparse):
            for i, v in zip(sv.indices, sv.values, strict=True):
                entry = postings.setdefault(i, ([], []))
                entry[0].append(row)
                entry[1].append(v)
        self._postings = {
            i: (np.asarray(rows, dtype=np.int64), np.asarray(vals, dtype=np.float32))
            for i, (rows, vals) in postings.items()
        }

    @staticmethod
    def _top(scores: np.ndarray, limit: int) -> list[int]:
        if limit >= len(scores):
            order = np.argsort(-scores, kind="stable")
        else:
            part = np.argpartition(-scores, limit)[:limit]
            order = part[np.argsort(-scores[part], kind="stable")]
        return [int(i) for i in order]

    def search_dense(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        if not self.n:
            return []
        scores = self.dense @ vector.astype(np.float32)
        return [(self.ids[i], float(scores[i])) for i in self._top(scores, limit)]

    def search_sparse(self, query: Sparse, limit: int) -> list[tuple[str, float]]:
        if not self.n or not query.indices:
            return []
        scores = np.zeros(self.n, dtype=np.float32)
        touched = False
        for i, qv in zip(query.indices, query.values, strict=True):
            post = self._postings.get(i)
            if post is None:
                continue
            rows, vals = post
            scores[rows] += vals * np.float32(qv * idf(self.n, len(rows)))
            touched = True
        if not touched:
            return []
        hits = self._top(scores, limit)
        return [(self.ids[i], float(scores[i])) for i in hits if scores[i] > 0]
