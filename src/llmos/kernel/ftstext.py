"""What a full-text index sees of a sealed text: a bag of its words, never the text.

File contents and memory texts are encrypted at rest (crypto.py), so their FTS5 tables
are contentless: they keep no copy of what they index. An inverted index with
positions would still let one rebuild the text word by word, so the index is fed each
text's words *sorted* (repeats kept): BM25 sees the same terms, counts and length as
before, and the positions tell the alphabet, not the order. Phrases cannot be matched
in a bag, so a query word made of several words (`foo-bar`) becomes one required term
each. Snippets are made here from the decrypted text, as FTS5's snippet() needs the
content the table no longer holds.

Words are runs of letters and digits (`_` separates, as in FTS5's unicode61); the
index and every query are cut by the same rule, so whatever a text's word is, the
query's same word finds it."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W_]+")
ELLIPSIS = "…"
MARK = "**"


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def bag(text: str) -> str:
    """`text`'s words in a fixed order (case-folded, then as written): deterministic,
    so deleting a row from a contentless table can repeat exactly what was indexed."""
    return " ".join(sorted(words(text), key=lambda w: (w.casefold(), w)))


def fold(word: str) -> str:
    """As the index compares words: case and diacritics dropped."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def query_words(query: str) -> list[tuple[str, bool]]:
    """The words of a search as (word, is_prefix): `sched*` is a prefix; a word with
    several parts (`foo-bar*`) gives each part, the prefix mark staying on the last."""
    out: list[tuple[str, bool]] = []
    for raw in query.split():
        stem = raw.rstrip("*")
        parts = words(stem)
        out += [(p, stem != raw and i == len(parts) - 1) for i, p in enumerate(parts)]
    return out


def snippet(text: str, terms: list[tuple[str, bool]], width: int = 16) -> str:
    """About `width` words of `text` around the most distinct matches of `terms`,
    matches marked **so**, with `…` where the text goes on (as FTS5's snippet())."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if not spans:
        return ""
    wanted = [(fold(w), prefix) for w, prefix in terms]
    which: list[int | None] = []  # the term each word matches, if any
    for start, end in spans:
        word = fold(text[start:end])
        which.append(
            next(
                (
                    i
                    for i, (t, prefix) in enumerate(wanted)
                    if word == t or (prefix and word.startswith(t))
                ),
                None,
            )
        )
    width = max(1, width)
    best, best_score = 0, (-1, -1)
    for first in range(max(1, len(spans) - width + 1)):
        window = [w for w in which[first : first + width] if w is not None]
        score = (len(set(window)), len(window))
        if score > best_score:
            best, best_score = first, score
    hits = [i for i in range(best, min(len(spans), best + width)) if which[i] is not None]
    if hits:  # centre the matches in the window, so they come with words around them
        room = width - (hits[-1] - hits[0] + 1)
        best = max(0, min(hits[0] - room // 2, len(spans) - width))
    last = min(len(spans), best + width) - 1
    out = [ELLIPSIS] if best > 0 else []
    pos = spans[best][0]
    for i in range(best, last + 1):
        start, end = spans[i]
        out.append(text[pos:start])
        word = text[start:end]
        out.append(f"{MARK}{word}{MARK}" if which[i] is not None else word)
        pos = end
    if last < len(spans) - 1:
        out.append(ELLIPSIS)
    return "".join(out)
