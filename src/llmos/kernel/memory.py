"""Long-term memory: per-owner, per-process memories with tags and metadata, found
by meaning and by words. Search fuses two rankings with reciprocal rank fusion:
BM25 over an FTS5 index (exact words, rare names) and cosine similarity over light
dense vectors (paraphrases). Everything lives in SQLite and survives restarts; the
vectors of each owner are also kept in memory as one matrix, built on first use.

Scope: a memory belongs to an owner and either to one process (pid) or to the owner
as a whole (pid NULL, "shared"). A process sees its own memories and, if granted,
its owner's shared ones; a user sees all of its own namespace.

Texts are sealed at rest (crypto.py; the row's id is bound into each). The FTS5 index
is contentless and holds each text as a bag of its words (ftstext.py): no plaintext
copy is kept, and removing a text from the index repeats the bag that was added."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import numpy as np

from llmos.devices.embeddings import Embedder
from llmos.errors import InvalidRequest, NotFound
from llmos.kernel.crypto import KeyRing, Sealed
from llmos.kernel.ftstext import bag
from llmos.kernel.memindex import Scope, VectorIndex, fts_query, query_terms

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    pid INTEGER,
    text TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS memories_scope ON memories(owner, pid);
"""
# Single statements: executescript would COMMIT the transaction `_reindex` runs in.
FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5("
    "text, content='', tokenize='unicode61')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_vocab USING fts5vocab(memories_fts, 'row')",
)
TEXT = Sealed("memories", "text", ("id",))

MAX_TEXT = 64 * 1024
RRF_K = 60
RARE_SHARE = 0.02  # BM25 uses only terms found in at most this share of memories


class MemoryStore:
    def __init__(self, db: sqlite3.Connection, embedder: Embedder | None, keys: KeyRing) -> None:
        self.db = db
        self.embedder = embedder
        self.keys = keys
        db.executescript(SCHEMA)
        for sql in FTS:
            db.execute(sql)
        self._vectors: dict[str, VectorIndex] = {}
        keys.adopt([TEXT], self._reindex)

    def _reindex(self) -> None:
        """The index anew from the sealed texts (the old one may hold plaintext)."""
        self.db.execute("DROP TABLE IF EXISTS memories_vocab")
        self.db.execute("DROP TABLE IF EXISTS memories_fts")
        for sql in FTS:
            self.db.execute(sql)
        for row in self.db.execute("SELECT id, text FROM memories").fetchall():
            self._index(row["id"], self._text(row))

    def _index(self, mid: int, text: str, *, drop: bool = False) -> None:
        if drop:  # a contentless table forgets a row given exactly what it was given
            self.db.execute(
                "INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', ?, ?)",
                (mid, bag(text)),
            )
        else:
            self.db.execute(
                "INSERT INTO memories_fts (rowid, text) VALUES (?, ?)", (mid, bag(text))
            )

    def _text(self, row: sqlite3.Row) -> str:
        return self.keys.open_text(TEXT, row["text"], row["id"])

    def _insert(
        self, owner: str, pid: int | None, text: str, tags: str, meta: str, blob: bytes | None
    ) -> int:
        """One memory row and its index entry. Its id is bound into the sealed text, so
        the text is written once the id is known (callers hold a transaction)."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO memories (owner, pid, text, tags, meta, created_at, updated_at, embedding)"
            " VALUES (?,?,x'',?,?,?,?,?)",
            (owner, pid, tags, meta, now, now, blob),
        )
        mid = int(cur.lastrowid or 0)
        self.db.execute(
            "UPDATE memories SET text = ? WHERE id = ?", (self.keys.seal_text(TEXT, text, mid), mid)
        )
        self._index(mid, text)
        return mid

    # -- vectors -------------------------------------------------------------------
    def _embed(self, text: str) -> np.ndarray | None:
        if self.embedder is None:
            return None
        vec: np.ndarray = self.embedder.embed([text])[0]
        return vec

    def _owner_vectors(self, owner: str) -> VectorIndex:
        vecs = self._vectors.get(owner)
        if vecs is None:
            vecs = VectorIndex()
            rows = self.db.execute(
                "SELECT id, pid, embedding FROM memories WHERE owner = ? AND embedding IS NOT NULL"
                " ORDER BY id",
                (owner,),
            )
            for r in rows:
                vecs.add(r["id"], r["pid"], np.frombuffer(r["embedding"], dtype=np.float32))
            self._vectors[owner] = vecs
        return vecs

    # -- CRUD ----------------------------------------------------------------------
    def add(
        self,
        owner: str,
        pid: int | None,
        text: str,
        tags: list[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        _check_text(text)
        vec = self._embed(text)
        with self.keys.atomic():
            mid = self._insert(
                owner,
                pid,
                text,
                json.dumps(tags or []),
                json.dumps(meta or {}),
                vec.tobytes() if vec is not None else None,
            )
        if vec is not None and owner in self._vectors:
            self._vectors[owner].add(mid, pid, vec)
        return self.get(Scope(owner), mid)

    def add_many(
        self, owner: str, pid: int | None, texts: list[str], tags: list[str] | None = None
    ) -> list[int]:
        """Bulk insert (one embedding batch, one transaction)."""
        for text in texts:
            _check_text(text)
        vecs = self.embedder.embed(texts) if self.embedder is not None else None
        ids = []
        self.db.execute("BEGIN")
        try:
            for i, text in enumerate(texts):
                blob = vecs[i].tobytes() if vecs is not None else None
                mid = self._insert(owner, pid, text, json.dumps(tags or []), "{}", blob)
                ids.append(mid)
                if vecs is not None and owner in self._vectors:
                    self._vectors[owner].add(mid, pid, vecs[i])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return ids

    def _row(self, scope: Scope, mid: int) -> sqlite3.Row:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM memories WHERE id = ? AND owner = ?", (mid, scope.owner)
        ).fetchone()
        if row is None or not scope.allows(row["pid"]):
            raise NotFound(f"no memory with id {mid}", param="id")
        return row

    def get(self, scope: Scope, mid: int) -> dict[str, Any]:
        return self._public(self._row(scope, mid))

    def _public(self, row: sqlite3.Row) -> dict[str, Any]:
        return {**_public(row), "text": self._text(row)}

    def update(
        self,
        scope: Scope,
        mid: int,
        text: str | None = None,
        tags: list[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        row = self._row(scope, mid)
        if text is not None:
            _check_text(text)
            vec = self._embed(text)
            with self.keys.atomic():
                self._index(mid, self._text(row), drop=True)
                self._index(mid, text)
                self.db.execute(
                    "UPDATE memories SET text = ?, embedding = ? WHERE id = ?",
                    (
                        self.keys.seal_text(TEXT, text, mid),
                        vec.tobytes() if vec is not None else None,
                        mid,
                    ),
                )
            vecs = self._vectors.get(scope.owner)
            if vecs is not None:
                vecs.drop(mid)
                if vec is not None:
                    vecs.add(mid, row["pid"], vec)
        if tags is not None:
            self.db.execute("UPDATE memories SET tags = ? WHERE id = ?", (json.dumps(tags), mid))
        if meta is not None:
            self.db.execute("UPDATE memories SET meta = ? WHERE id = ?", (json.dumps(meta), mid))
        self.db.execute("UPDATE memories SET updated_at = ? WHERE id = ?", (time.time(), mid))
        return self.get(scope, mid)

    def delete(self, scope: Scope, mid: int) -> dict[str, Any]:
        row = self._row(scope, mid)
        gone = {**self._public(row), "deleted": True}
        with self.keys.atomic():
            self._index(mid, gone["text"], drop=True)
            self.db.execute("DELETE FROM memories WHERE id = ?", (mid,))
        vecs = self._vectors.get(scope.owner)
        if vecs is not None:
            vecs.drop(mid)
        return gone

    def listing(
        self, scope: Scope, tag: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM memories WHERE owner = ?"
        args: list[Any] = [scope.owner]
        if scope.pid is not None:
            sql += " AND (pid = ?" + (" OR pid IS NULL)" if scope.shared else ")")
            args.append(scope.pid)
        sql += " ORDER BY id DESC"
        rows = self.db.execute(sql, args).fetchall()
        if tag is not None:
            rows = [r for r in rows if tag in json.loads(r["tags"])]
        return [self._public(r) for r in rows[offset : offset + limit]]  # opens only these

    # -- search --------------------------------------------------------------------
    def search(
        self, scope: Scope, query: str, k: int = 5, tag: str | None = None
    ) -> list[dict[str, Any]]:
        """Top `k` by reciprocal rank fusion of BM25 and dense similarity."""
        pool = max(4 * k, 20)
        ranked: dict[int, float] = {}
        for rank, mid in enumerate(self._bm25(scope, query, pool)):
            ranked[mid] = ranked.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
        vec = self._embed(" ".join(query_terms(query)) or query)  # content words only
        if vec is not None:
            for rank, mid in enumerate(self._owner_vectors(scope.owner).top(vec, scope, pool)):
                ranked[mid] = ranked.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
        out = []
        for mid, score in sorted(ranked.items(), key=lambda kv: -kv[1]):
            try:
                item = self.get(scope, mid)
            except NotFound:
                continue
            if tag is not None and tag not in item["tags"]:
                continue
            out.append({**item, "score": round(score, 6)})
            if len(out) == k:
                break
        return out

    def _selective(self, terms: list[str]) -> list[str]:
        """Drop terms that occur in so many memories that ranking them costs more than
        it tells (BM25 gives them almost no weight), as long as rarer ones remain."""
        if len(terms) <= 1:
            return terms
        marks = ",".join("?" for _ in terms)
        df = {
            r[0]: r[1]
            for r in self.db.execute(
                f"SELECT term, doc FROM memories_vocab WHERE term IN ({marks})", terms
            )
        }
        total = self.db.execute("SELECT max(id) FROM memories").fetchone()[0] or 0
        limit = max(1, int(total * RARE_SHARE))
        rare = [t for t in terms if df.get(t, 0) <= limit]
        return rare or sorted(terms, key=lambda t: df.get(t, 0))[:1]

    def _bm25(self, scope: Scope, query: str, k: int) -> list[int]:
        match = fts_query(self._selective(query_terms(query)))
        if match is None:
            return []
        sql = (
            "SELECT m.id FROM memories_fts f JOIN memories m ON m.id = f.rowid"
            " WHERE memories_fts MATCH ? AND m.owner = ?"
        )
        args: list[Any] = [match, scope.owner]
        if scope.pid is not None:
            sql += " AND (m.pid = ?" + (" OR m.pid IS NULL)" if scope.shared else ")")
            args.append(scope.pid)
        sql += " ORDER BY bm25(memories_fts) LIMIT ?"
        args.append(k)
        return [int(r[0]) for r in self.db.execute(sql, args)]


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("text must be a non-empty string", param="text")
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"text is longer than {MAX_TEXT} characters", param="text")


def _public(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "owner": row["owner"],
        "pid": row["pid"],
        "scope": "process" if row["pid"] is not None else "shared",
        "text": None,  # sealed: MemoryStore._public opens it
        "tags": json.loads(row["tags"]),
        "meta": json.loads(row["meta"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
