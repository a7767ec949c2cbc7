"""Small, deterministic text ranking for the apps: terms (case-folded, stop words
dropped, lightly stemmed), BM25 for retrieval, TF-IDF cosine for similarity.

The corpora are a knowledge base or a catalogue (tens to thousands of entries), so
plain dicts beat a vector library; the same input always gives the same ranking."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
_STOP = """a about above after again all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our ours out over own
    please same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours hi hello hey thanks thank much many
    also get want need like know tell ok yes"""
STOP_WORDS = frozenset(_STOP.split())
BM25_K1 = 1.2
BM25_B = 0.75


def stem(word: str) -> str:
    """A light suffix stripper: `returns`/`returned`/`returning` -> `return`,
    `shipping` -> `ship`, `deliveries` -> `delivery`. Used on both sides of every
    comparison, so it needs to be consistent, not linguistically right."""
    if len(word) <= 3 or word.isdigit() or word.endswith("ss"):
        return word
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + repl
            if word[-1] == word[-2] and word[-1] not in "aeiousz":
                word = word[:-1]  # shipp -> ship, cancell -> cancel
            break
    return word.removesuffix("e") if len(word) > 4 else word


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.casefold()) if len(w) > 1 and w not in STOP_WORDS]


class BM25:
    """Okapi BM25 over documents given as term lists."""

    def __init__(self, docs: Sequence[Sequence[str]]) -> None:
        self.docs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.avg = (sum(self.lengths) / len(docs)) if docs else 0.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.unseen_idf = math.log(1 + (n + 0.5) / 0.5)  # a term no document has

    def score(self, query: Sequence[str], i: int) -> float:
        doc, length = self.docs[i], self.lengths[i]
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / (self.avg or 1.0))
        total = 0.0
        for t in set(query):
            tf = doc.get(t, 0)
            if tf:
                total += self.idf[t] * tf * (BM25_K1 + 1) / (tf + norm)
        return total

    def coverage(self, query: Sequence[str], i: int) -> float:
        """The share of the query's information (IDF mass) document `i` contains:
        1.0 when it has every query term, 0.0 when none."""
        wanted = set(query)
        mass = sum(self.idf.get(t, self.unseen_idf) for t in wanted)
        have = sum(self.idf[t] for t in wanted if t in self.docs[i])
        return have / mass if mass else 0.0


def tfidf_vectors(docs: Sequence[Sequence[str]]) -> list[dict[str, float]]:
    """Unit-length TF-IDF vectors (sublinear tf, smoothed idf)."""
    n = len(docs)
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    vectors = []
    for d in docs:
        weights = {
            t: (1 + math.log(c)) * (math.log((1 + n) / (1 + df[t])) + 1)
            for t, c in Counter(d).items()
        }
        vectors.append(normalize(weights))
    return vectors


def normalize(weights: dict[str, float]) -> dict[str, float]:
    size = math.sqrt(sum(w * w for w in weights.values()))
    return {t: w / size for t, w in weights.items()} if size else {}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    """Of unit vectors: their dot product."""
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(t, 0.0) for t, w in a.items())
