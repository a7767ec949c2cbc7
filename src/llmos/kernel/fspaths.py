"""File-store helpers that need no database: path rules (one function decides what a
path may be), FTS5 query quoting, owner keys, the splitting of text into passages and
the public form of a file's rows."""

from __future__ import annotations

import hashlib
import sqlite3
import unicodedata
from collections.abc import Iterator
from typing import Any

from llmos.errors import InvalidRequest
from llmos.kernel.ftstext import query_words
from llmos.params import (
    FS_PASSAGE_CHARS,
    MAX_PATH_BYTES,
    MAX_QUERY_CHARS,
    MAX_SEARCH_LIMIT,
    MAX_SEGMENT_BYTES,
)

Info = dict[str, Any]
Infos = list[Info]  # (`FileStore.list` hides the builtin inside the class)

# Characters no path may hold: controls (NUL included), lone surrogates, line and
# paragraph separators, and the bidi overrides that make a listing lie.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def bad_char(text: str) -> str | None:
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in _BAD_CATEGORIES:
            return ch
    return None


def check_path(path: object) -> str:
    """The one place path rules live: a relative POSIX key of non-empty segments,
    none `.` or `..`, no backslashes or control characters, bounded in length."""
    if not isinstance(path, str):
        raise InvalidRequest("path must be a string", param="path")
    if not path:
        raise InvalidRequest("path must not be empty", param="path")
    if len(path) > MAX_PATH_BYTES:  # cheap bound before looking at every character
        raise InvalidRequest(f"path is longer than {MAX_PATH_BYTES} bytes", param="path")
    bad = bad_char(path)
    if bad is not None:
        raise InvalidRequest(
            f"path must not contain control character U+{ord(bad):04X}", param="path"
        )
    if "\\" in path:
        raise InvalidRequest("path must separate parts with '/', not '\\'", param="path")
    if path.startswith("/"):
        raise InvalidRequest(f"path must be relative, not {path!r}", param="path")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidRequest(f"path is longer than {MAX_PATH_BYTES} bytes", param="path")
    for part in path.split("/"):
        if not part:
            raise InvalidRequest(
                f"path must not have empty parts ('//' or a trailing '/'): {path!r}", param="path"
            )
        if part in (".", ".."):
            raise InvalidRequest(f"path must not contain {part!r} parts: {path!r}", param="path")
        if len(part.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidRequest(
                f"each part of a path must be at most {MAX_SEGMENT_BYTES} bytes", param="path"
            )
    return path


def check_search(query: object, limit: object) -> None:
    """A search's query and limit, or InvalidRequest naming the bad one."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("query must be a non-empty string", param="query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"query must be at most {MAX_QUERY_CHARS} characters", param="query")
    if any(unicodedata.category(ch) == "Cs" for ch in query):
        raise InvalidRequest("query must be valid Unicode text", param="query")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidRequest("limit must be an integer", param="limit")
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InvalidRequest(f"limit must be 1..{MAX_SEARCH_LIMIT}", param="limit")


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query that cannot be a syntax error: each word a
    quoted string (so AND, NEAR, column filters and quotes are plain text), all of
    them required; a trailing `*` keeps its meaning of a prefix search. The index
    holds bags of words (ftstext.py), so a word of several parts (`foo-bar`) asks
    for each part; marks with no letter or digit (which FTS5 would drop) go."""
    clean = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(f'"{w}"' + ("*" if prefix else "") for w, prefix in query_words(clean))


def owner_key(owner: str) -> str:
    """The one-token tag of an owner's passages: a search looks up only its
    caller's passages in the index (and checks the owner of each hit besides)."""
    return "o" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def passages(text: str, size: int = FS_PASSAGE_CHARS) -> Iterator[str]:
    """`text` in pieces of at most `size` characters, cut at whitespace where there
    is some in the second half of a piece, so words stay whole."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(
                text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end)
            )
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def text_of(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def file_info(row: sqlite3.Row) -> Info:
    """A `files` row as the API shows it."""
    return {
        "path": row["path"],
        "version": row["version"],
        "size": row["size"],
        "sha256": row["sha256"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def version_info(row: sqlite3.Row) -> Info:
    """A `file_versions` row as the API shows it (a deletion has no hash)."""
    deleted = bool(row["deleted"])
    return {
        "path": row["path"],
        "version": row["version"],
        "size": row["size"],
        "sha256": None if deleted else row["sha256"],
        "created_at": row["created_at"],
        "deleted": deleted,
    }
