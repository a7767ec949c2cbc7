"""The pieces of memory search that do not touch the database: the scope a caller
sees, each owner's in-memory vector index, and turning a question into query terms."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MIN_SIMILARITY = 0.05  # dense hits below this cosine are noise, not meaning
RELATIVE_CUT = 0.5  # ... and so are hits below half the best hit's cosine
_WORD = re.compile(r"[^\W_]+")  # words as the FTS index cuts them (ftstext.py)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "did",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


@dataclass(frozen=True)
class Scope:
    """Which memories a caller sees: an owner's, narrowed to one process if set."""

    owner: str
    pid: int | None = None  # a process caller
    shared: bool = True  # the process may also see its owner's shared memories

    def allows(self, pid: int | None) -> bool:
        if self.pid is None:
            return True
        return pid == self.pid or (pid is None and self.shared)


class VectorIndex:
    """One owner's vectors as a growable matrix (rows appended in place)."""

    def __init__(self, dim: int = 0) -> None:
        self.ids: list[int] = []
        self.pids: list[int] = []  # -1 for shared
        self.matrix = np.zeros((0, dim), dtype=np.float32)

    def add(self, mid: int, pid: int | None, vec: np.ndarray) -> None:
        n = len(self.ids)
        if self.matrix.shape[1] != vec.shape[0]:
            self.matrix = np.zeros((max(16, n), vec.shape[0]), dtype=np.float32)
        if n == self.matrix.shape[0]:  # grow by doubling: amortised O(1) per add
            grown = np.zeros((max(16, 2 * n), self.matrix.shape[1]), dtype=np.float32)
            grown[:n] = self.matrix[:n]
            self.matrix = grown
        self.matrix[n] = vec
        self.ids.append(mid)
        self.pids.append(-1 if pid is None else pid)

    def drop(self, mid: int) -> None:
        if mid in self.ids:
            i = self.ids.index(mid)
            n = len(self.ids)
            self.matrix[i : n - 1] = self.matrix[i + 1 : n]
            del self.ids[i], self.pids[i]

    def top(self, query: np.ndarray, scope: Scope, k: int) -> list[int]:
        n = len(self.ids)
        if not n:
            return []
        sims = self.matrix[:n] @ query
        if scope.pid is not None:
            pids = np.asarray(self.pids)
            allowed = pids == scope.pid
            if scope.shared:
                allowed |= pids == -1
            sims = np.where(allowed, sims, -np.inf)
        k = min(k, n)
        best = np.argpartition(-sims, k - 1)[:k]
        best = best[np.argsort(-sims[best])]
        # Keep hits near the best one: absolute cosines of static embeddings are low
        # even for true paraphrases, so the cut is relative.
        floor = max(MIN_SIMILARITY, RELATIVE_CUT * float(sims[best[0]]))
        return [self.ids[i] for i in best if sims[i] >= floor]


def query_terms(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS and len(w) > 1))[:32]


def fts_query(terms: list[str]) -> str | None:
    """Terms as an FTS5 OR-query of quoted strings (no query syntax can leak in)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms) if terms else None
