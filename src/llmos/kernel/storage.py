"""Per-owner persistent files: versioned, bounded by quotas, searchable by text.

Paths are keys, not a tree: `notes/todo.md` is one key; there are no directories,
links or modes. Every write adds a version, a delete adds a tombstone version, and
a rollback writes an old version's content as a new one, so nothing is lost until
it falls out of the last `max_versions`.

Invariants:
- every query filters by owner: owners never see each other's files;
- `files` has one row per (owner, path) ever written; its `version` is the newest
  `file_versions` row of that path and `deleted` mirrors that row's flag;
- `files_fts` holds the passages of every live file whose content is UTF-8 and
  nothing else: passage i of file f has rowid (f << PASSAGE_BITS) + i. It is
  contentless and holds each passage as a bag of words (ftstext.py): contents are
  sealed (crypto.py) and no plaintext copy of them is kept anywhere;
- the quota counts live files only; history is bounded by `max_versions` instead.

The connection is the kernel Store's, used from the event loop thread only; each
operation runs in one SAVEPOINT, so it applies whole or not at all."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from llmos.errors import InvalidRequest, NotFound, PayloadTooLarge, QuotaExceeded, Unavailable
from llmos.kernel.crypto import KeyRing, Sealed
from llmos.kernel.fspaths import (
    bad_char,
    check_path,
    check_search,
    file_info,
    fts_query,
    owner_key,
    passages,
    text_of,
    version_info,
)
from llmos.kernel.ftstext import bag, query_words, snippet
from llmos.params import (
    FS_QUOTA_BYTES,
    MAX_FILE_BYTES,
    MAX_FILE_VERSIONS,
    MAX_FILES,
    MAX_PATH_BYTES,
)

Info = dict[str, Any]
Infos = list[Info]  # (`FileStore.list` hides the builtin inside the class)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (owner, path)
);
CREATE TABLE IF NOT EXISTS file_versions (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    content BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, path, version)
);
"""
FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS files_fts USING fts5(
    okey, path, body, content='', tokenize='unicode61'
)"""
CONTENT = Sealed("file_versions", "content", ("owner", "path", "version"))

# Search indexes text in passages of about FS_PASSAGE_CHARS: FTS5's snippet() costs
# the square of the text it looks at, so a whole 8 MiB file would stall the loop for
# minutes. A file's passages share its rowid's high bits.
PASSAGE_BITS = 20


class FileStore:
    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        keys: KeyRing,
        max_file_bytes: int = MAX_FILE_BYTES,
        quota_bytes: int = FS_QUOTA_BYTES,
        max_files: int = MAX_FILES,
        max_versions: int = MAX_FILE_VERSIONS,
    ) -> None:
        if min(max_file_bytes, quota_bytes, max_files, max_versions) < 1:
            raise InvalidRequest("file storage limits must be positive", param="files")
        self.db = db
        self.keys = keys
        self.max_file_bytes = max_file_bytes
        self.quota_bytes = quota_bytes
        self.max_files = max_files
        self.max_versions = max_versions
        self.db.executescript(SCHEMA)
        self.db.execute(FTS)
        keys.adopt([CONTENT], self._reindex)

    # -- reading -------------------------------------------------------------------
    def read(self, owner: str, path: str, version: int | None = None) -> bytes:
        return self.fetch(owner, path, version)[1]

    def fetch(self, owner: str, path: str, version: int | None = None) -> tuple[Info, bytes]:
        """A version's metadata and content; the current one if `version` is None."""
        path = check_path(path)
        if version is None:
            version = int(self._live(owner, path)["version"])
        row = self._version(owner, path, version)
        if row["deleted"]:
            raise NotFound(f"version {version} of {path!r} is a deletion", param="version")
        return version_info(row), self._content(row)

    def stat(self, owner: str, path: str) -> Info:
        return file_info(self._live(owner, check_path(path)))

    def list(self, owner: str, prefix: str = "") -> Infos:
        """Live files whose path starts with `prefix` (a string prefix, as S3's)."""
        if not isinstance(prefix, str) or len(prefix) > MAX_PATH_BYTES:
            raise InvalidRequest(
                f"prefix must be a string of at most {MAX_PATH_BYTES} characters", param="prefix"
            )
        if bad_char(prefix) is not None:
            raise InvalidRequest("prefix must not contain control characters", param="prefix")
        rows = self.db.execute(
            "SELECT * FROM files WHERE owner = ? AND deleted = 0"
            " AND substr(path, 1, length(?)) = ? ORDER BY path",
            (owner, prefix, prefix),
        ).fetchall()
        return [file_info(r) for r in rows]

    def versions(self, owner: str, path: str) -> Infos:
        """Every kept version of a path, deletions included, oldest first."""
        path = check_path(path)
        rows = self.db.execute(
            "SELECT owner, path, version, sha256, size, created_at, deleted FROM file_versions"
            " WHERE owner = ? AND path = ? ORDER BY version",
            (owner, path),
        ).fetchall()
        if not rows:
            raise NotFound(f"no file {path!r}", param="path")
        return [version_info(r) for r in rows]

    def usage(self, owner: str) -> Info:
        """What an owner's live files take, against its limits."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE owner = ? AND deleted = 0",
            (owner,),
        ).fetchone()
        return {
            "files": int(row[0]),
            "bytes": int(row[1]),
            "max_files": self.max_files,
            "quota_bytes": self.quota_bytes,
        }

    def search(self, owner: str, query: str, limit: int = 10) -> Infos:
        """Live text files with a passage (about FS_PASSAGE_CHARS long, path
        included) that holds every word of `query`, best first by the BM25 of their
        best passage, each with a snippet of it. No score is returned: BM25 counts
        every owner's passages, so scores would tell of other owners' words."""
        check_search(query, limit)
        terms = fts_query(query)
        if not terms:
            return []
        match = f'okey : "{owner_key(owner)}" AND {{path body}} : ({terms})'
        best: dict[int, tuple[float, int]] = {}  # file id -> (score, passage rowid)
        for rowid, score in self.db.execute(
            "SELECT rowid, bm25(files_fts, 0.0, 1.0, 1.0) FROM files_fts WHERE files_fts MATCH ?",
            (match,),
        ):
            file_id = rowid >> PASSAGE_BITS
            if file_id not in best or score < best[file_id][0]:
                best[file_id] = (score, rowid)
        out = []
        for file_id, (_, rowid) in sorted(best.items(), key=lambda kv: (kv[1][0], kv[0])):
            row = self.db.execute(
                "SELECT * FROM files WHERE id = ? AND owner = ? AND deleted = 0", (file_id, owner)
            ).fetchone()
            if row is None:
                continue
            text = text_of(self._content(self._version(owner, row["path"], row["version"])))
            piece = next(islice(passages(text or ""), rowid - (file_id << PASSAGE_BITS), None), "")
            out.append({**file_info(row), "snippet": snippet(piece, query_words(query))})
            if len(out) == limit:
                break
        return out

    # -- writing -------------------------------------------------------------------
    def write(self, owner: str, path: str, data: bytes) -> Info:
        return self._put(owner, check_path(path), bytes(data))

    def delete(self, owner: str, path: str) -> Info:
        """Add a tombstone version: the file is gone from reads, lists and search,
        and its history stays for `rollback`."""
        path = check_path(path)
        now = time.time()
        with self._atomic():
            row = self._live(owner, path)
            self._unindex(row)
            version = int(row["version"]) + 1
            self._add_version(owner, path, version, b"", "", now, deleted=True)
            self.db.execute(
                "UPDATE files SET version = ?, size = 0, sha256 = '', deleted = 1,"
                " updated_at = ? WHERE id = ?",
                (version, now, row["id"]),
            )
        return {"path": path, "version": version, "deleted": True, "updated_at": now}

    def rollback(self, owner: str, path: str, version: int) -> Info:
        """Write version `version`'s content as a new version (also after a delete)."""
        path = check_path(path)
        old = self._version(owner, path, version)
        if old["deleted"]:
            raise InvalidRequest(
                f"version {version} of {path!r} is a deletion; delete the file instead",
                param="version",
            )
        return {**self._put(owner, path, self._content(old)), "restored_from": version}

    # -- mechanism -----------------------------------------------------------------
    def _put(self, owner: str, path: str, data: bytes) -> Info:
        size = len(data)
        if size > self.max_file_bytes:
            raise PayloadTooLarge(
                f"{path!r} would be {size} bytes; files may be at most {self.max_file_bytes}",
                param="content",
            )
        digest = hashlib.sha256(data).hexdigest()
        now = time.time()
        with self._atomic():
            row = self._row(owner, path)
            live = row if row is not None and not row["deleted"] else None
            used = self.usage(owner)
            if live is None and used["files"] >= self.max_files:
                raise QuotaExceeded(
                    f"{owner!r} already has {used['files']} files, the most allowed",
                    param="quota",
                )
            total = used["bytes"] - (int(live["size"]) if live is not None else 0) + size
            if total > self.quota_bytes:
                raise QuotaExceeded(
                    f"writing {path!r} would bring {owner!r}'s files to {total} bytes,"
                    f" over the quota of {self.quota_bytes}",
                    param="quota",
                )
            version = 1 if row is None else int(row["version"]) + 1
            created = float(live["created_at"]) if live is not None else now
            if live is not None:  # before _add_version, which may prune its version
                self._unindex(live)
            self._add_version(owner, path, version, data, digest, now, deleted=False)
            self.db.execute(
                "INSERT INTO files (owner, path, version, size, sha256, deleted, created_at,"
                " updated_at) VALUES (?,?,?,?,?,0,?,?) ON CONFLICT (owner, path) DO UPDATE SET"
                " version = excluded.version, size = excluded.size, sha256 = excluded.sha256,"
                " deleted = 0, created_at = excluded.created_at, updated_at = excluded.updated_at",
                (owner, path, version, size, digest, created, now),
            )
            file_id = self.db.execute(
                "SELECT id FROM files WHERE owner = ? AND path = ?", (owner, path)
            ).fetchone()[0]
            self._index(file_id, owner, path, data)
        return {
            "path": path,
            "version": version,
            "size": size,
            "sha256": digest,
            "created_at": created,
            "updated_at": now,
        }

    def _add_version(
        self,
        owner: str,
        path: str,
        version: int,
        data: bytes,
        digest: str,
        now: float,
        *,
        deleted: bool,
    ) -> None:
        self.db.execute(
            "INSERT INTO file_versions (owner, path, version, content, sha256, size,"
            " created_at, deleted) VALUES (?,?,?,?,?,?,?,?)",
            (
                owner,
                path,
                version,
                self.keys.seal(CONTENT, data, owner, path, version),
                digest,
                len(data),
                now,
                int(deleted),
            ),
        )
        self.db.execute(
            "DELETE FROM file_versions WHERE owner = ? AND path = ? AND version <= ?",
            (owner, path, version - self.max_versions),
        )

    def _index(
        self, file_id: int, owner: str, path: str, data: bytes, *, drop: bool = False
    ) -> None:
        """Add (or, with `drop`, remove) a text file's passages, as bags of words. The
        table keeps no content, so removing repeats exactly what was added."""
        text = text_of(data)
        if text is None:
            return
        key, base = owner_key(owner), file_id << PASSAGE_BITS
        pieces = islice(passages(text or " "), 1 << PASSAGE_BITS)  # " ": paths of empty files
        sql = (
            "INSERT INTO files_fts (files_fts, rowid, okey, path, body) VALUES ('delete',?,?,?,?)"
            if drop
            else "INSERT INTO files_fts (rowid, okey, path, body) VALUES (?,?,?,?)"
        )
        self.db.executemany(
            sql, ((base + i, key, path, bag(piece)) for i, piece in enumerate(pieces))
        )

    def _unindex(self, live: sqlite3.Row) -> None:
        """Remove a live file's current content from the index."""
        owner, path = live["owner"], live["path"]
        data = self._content(self._version(owner, path, int(live["version"])))
        self._index(int(live["id"]), owner, path, data, drop=True)

    def _reindex(self) -> None:
        """The index anew from the sealed contents (first start with encryption: the
        old table may hold plaintext)."""
        self.db.execute("DROP TABLE IF EXISTS files_fts")  # (executescript would COMMIT)
        self.db.execute(FTS)
        for live in self.db.execute("SELECT * FROM files WHERE deleted = 0").fetchall():
            data = self._content(self._version(live["owner"], live["path"], int(live["version"])))
            self._index(int(live["id"]), live["owner"], live["path"], data)

    def _content(self, version: sqlite3.Row) -> bytes:
        return self.keys.open(
            CONTENT, version["content"], version["owner"], version["path"], version["version"]
        )

    def _row(self, owner: str, path: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM files WHERE owner = ? AND path = ?", (owner, path)
        ).fetchone()
        return row

    def _live(self, owner: str, path: str) -> sqlite3.Row:
        row = self._row(owner, path)
        if row is None or row["deleted"]:
            raise NotFound(f"no file {path!r}", param="path")
        return row

    def _version(self, owner: str, path: str, version: int) -> sqlite3.Row:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM file_versions WHERE owner = ? AND path = ? AND version = ?",
            (owner, path, version),
        ).fetchone()
        if row is not None:
            return row
        if self._row(owner, path) is None:
            raise NotFound(f"no file {path!r}", param="path")
        raise NotFound(
            f"{path!r} has no version {version} (the last {self.max_versions} are kept)",
            param="version",
        )

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One SAVEPOINT: the block applies whole or not at all. A full disk is the
        one storage failure a user can cause, so it alone becomes an LlmosError."""
        self.db.execute("SAVEPOINT fs")
        try:
            yield
        except BaseException as exc:
            self.db.execute("ROLLBACK TO fs")
            self.db.execute("RELEASE fs")
            if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorname == "SQLITE_FULL":
                raise Unavailable("file storage is full") from exc
            raise
        self.db.execute("RELEASE fs")
