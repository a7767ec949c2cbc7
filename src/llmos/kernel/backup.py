"""Backups of LLMOS_HOME: a consistent snapshot while the kernel serves, its
manifest and checksums, verification, and restore into an empty home.

What a backup carries, file by file:
- `llmos.db`: copied with SQLite's online backup API from a second, read-only
  connection, in one step in a worker thread. In WAL mode that step is one read
  transaction: writers go on meanwhile, and the copy is the database as of one
  commit (a paged copy would restart at every write of the kernel's connection).
- `audit-key` (the audit chain's HMAC key): carried, so the restored chain verifies.
- `mcp.json` (the attached MCP servers): carried when present.
- `audit-head`: written from the copy's last audit row, not copied, so it matches
  the copy and not the live log that kept growing.
- `data-key` (the master key) and `admin-token`: secrets, carried only when asked
  (`include_key`). Without the master key the sealed contents of the copy (files,
  memories, conversations) cannot be read: restore needs LLMOS_KEY or a key file.
Anything else in LLMOS_HOME is not state: backups/, agents/ (programs' work dirs
and logs; their process records are in the DB), mcp/ (server logs), kernel.lock.

Invariant: a backup directory is complete iff its manifest.json exists; the
manifest is written last, after every file it names is fsynced."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmos.errors import InvalidRequest, NotFound
from llmos.kernel.crypto import NONCE, _wrap_aad
from llmos.kernel.masterkey import ENV, KEY_FILE, parse_key

log = logging.getLogger(__name__)

FORMAT = 1  # manifest version
DB = "llmos.db"
MANIFEST = "manifest.json"
SECRETS = (KEY_FILE, "admin-token")  # carried only with include_key
STATE_FILES = ("audit-key", "mcp.json")  # carried always (with the DB, audit head)
LOCK = "kernel.lock"  # held (flock) by a serving kernel: see HomeLock


def _version() -> str:
    try:
        return metadata.version("llmos")
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


def copy_db(source: Path, dest: Path) -> None:
    """The database at `source` as of one commit, into `dest` (a new file). Runs in
    a worker thread on its own read-only connection: never the kernel's."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(str(dest))
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction (see module doc)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


def describe_db(path: Path) -> dict[str, Any]:
    """Row counts per table, a digest of the schema, the data key ids, the audit head."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            ).fetchall()
        ]
        counts = {t: int(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in tables}
        keys: list[int] = []
        if "data_keys" in counts:
            keys = [
                int(r[0])
                for r in db.execute(
                    "SELECT id FROM data_keys WHERE wrapped IS NOT NULL ORDER BY id"
                )
            ]
        head = None
        if "audit" in counts:
            head = db.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return {
        "tables": counts,
        "schema_sha256": hashlib.sha256(json.dumps(schema).encode()).hexdigest(),
        "data_keys": keys,
        "audit_head": f"{head[0]} {head[1]}\n" if head else None,
    }


def snapshot(
    home: Path, dest: Path, include_key: bool = False, key_text: str | None = None
) -> dict[str, Any]:
    """Back up `home` into the new directory `dest`; return the manifest. Blocking:
    call it from a worker thread while the kernel serves. `key_text`: the master key
    when it comes from LLMOS_KEY, carried (as data-key) only with `include_key`."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidRequest(f"{dest} is not empty: a backup goes into a new directory", param="to")
    db_path = home / DB
    if not db_path.is_file():
        raise NotFound(f"no database at {db_path}: nothing to back up")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.time()
    copy_db(db_path, dest / DB)
    info = describe_db(dest / DB)
    if info["audit_head"] is not None:
        _fsync_write(dest / "audit-head", info["audit_head"].encode())
    carried = list(STATE_FILES) + (list(SECRETS) if include_key else [])
    for name in carried:
        if (home / name).is_file():
            _fsync_write(dest / name, (home / name).read_bytes())
    if include_key and key_text:  # LLMOS_KEY wins over the file, as at start
        _fsync_write(dest / KEY_FILE, master_text(parse_key(key_text, ENV, "include_key")))
    with (dest / DB).open("rb") as f:
        os.fsync(f.fileno())
    files = sorted(p.name for p in dest.iterdir() if p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "created_at": started,
        "seconds": round(time.time() - started, 3),
        "kernel_version": _version(),
        "source_home": str(home),
        "files": {
            n: {"size": (dest / n).stat().st_size, "sha256": sha256(dest / n)} for n in files
        },
        "tables": info["tables"],
        "schema_sha256": info["schema_sha256"],
        "data_keys": info["data_keys"],
        "key_included": include_key and (dest / KEY_FILE).is_file(),
    }
    _fsync_write(dest / MANIFEST, json.dumps(manifest, indent=2).encode(), 0o600)
    if manifest["key_included"]:
        log.warning("backup %s INCLUDES the master key: whoever has it can read all data", dest)
    return manifest


def unpack(tar: Path, dest: Path) -> dict[str, Any]:
    """A streamed snapshot (GET /v1/backups/stream) unpacked into the new directory
    `dest` and verified against its manifest; returns the manifest."""
    import tarfile

    if dest.exists() and any(dest.iterdir()):
        raise InvalidRequest(f"{dest} is not empty", param="to")
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return verify(dest)


def verify(path: Path) -> dict[str, Any]:
    """The manifest of the backup at `path` once every file it names matches its size
    and SHA-256 and no file was added; InvalidRequest naming the first that does not."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise InvalidRequest(f"{path} is not a backup (no {MANIFEST})", param="path")
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest(f"{mpath} is not a valid manifest", param="path") from None
    if manifest.get("format") != FORMAT:
        raise InvalidRequest(f"unknown backup format {manifest.get('format')!r}", param="path")
    present = {p.name for p in path.iterdir() if p.name != MANIFEST}
    if present != set(files):
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        raise InvalidRequest(f"backup {path}: missing {missing}, unexpected {extra}", param="path")
    for name, want in sorted(files.items()):
        f = path / name
        if f.stat().st_size != want["size"] or sha256(f) != want["sha256"]:
            raise InvalidRequest(f"backup {path}: {name} fails its checksum", param="path")
    return manifest


def check_key(db_path: Path, master: bytes) -> None:
    """Unwrap every data key of the database at `db_path` with `master`; a wrong key
    is refused naming the first data key that does not unwrap."""
    aes = AESGCM(master)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, wrapped FROM data_keys WHERE wrapped IS NOT NULL ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        db.close()
    for key_id, wrapped in rows:
        try:
            aes.decrypt(bytes(wrapped[:NONCE]), bytes(wrapped[NONCE:]), _wrap_aad(key_id))
        except InvalidTag:
            raise InvalidRequest(
                f"wrong master key: data key {key_id} of this backup does not unwrap with it",
                param="key",
            ) from None


def live_reason(home: Path) -> str | None:
    """Why `home` may not be restored into (a kernel serves it, or it holds state)."""
    if HomeLock.held(home):
        return f"a kernel is serving {home} (it holds {home / LOCK})"
    if (home / DB).exists():
        return f"{home} already holds a database ({home / DB})"
    for name in (KEY_FILE, "audit-key", "audit-head", "admin-token", "mcp.json"):
        if (home / name).exists():
            return f"{home} already holds state ({home / name})"
    return None


@dataclass(frozen=True)
class Restored:
    home: Path
    manifest: dict[str, Any]
    key_source: str  # "backup", "key file", LLMOS_KEY, or "none needed"


def restore(path: Path, home: Path, key_text: str | None = None, key_source: str = ENV) -> Restored:
    """Restore the backup at `path` into `home` (missing or empty of state). The
    master key: `key_text` (from a key file or LLMOS_KEY), else the backup's own.
    A key given from a file is written to home/data-key so `llmos up` finds it."""
    reason = live_reason(home)
    if reason:
        raise InvalidRequest(f"refusing to restore: {reason}", param="home")
    manifest = verify(path)
    if key_text is not None:
        master, source = parse_key(key_text, key_source, "key"), key_source
    elif manifest.get("key_included"):
        master, source = parse_key((path / KEY_FILE).read_text(), "the backup", "key"), "backup"
    elif manifest.get("data_keys"):
        raise InvalidRequest(
            f"this backup is encrypted and does not carry its master key: give --key-file"
            f" or set {ENV}",
            param="key",
        )
    else:
        master, source = b"", "none needed"
    if master:
        check_key(path / DB, master)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = home / ".restoring"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    for name in manifest["files"]:
        _fsync_write(staging / name, (path / name).read_bytes())
    if key_text is not None and source != ENV:
        _fsync_write(staging / KEY_FILE, master_text(master))
    # the database last: its presence is what marks the home as holding state
    for name in sorted(os.listdir(staging), key=lambda n: n == DB):
        os.replace(staging / name, home / name)
    staging.rmdir()
    return Restored(home, manifest, source)


def master_text(master: bytes) -> bytes:
    return base64.b64encode(master) + b"\n"


def list_backups(root: Path) -> list[dict[str, Any]]:
    """Complete backups under `root` (newest first) with their manifest summaries."""
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir(), reverse=True):
        m = d / MANIFEST
        if not m.is_file():
            continue
        try:
            man = json.loads(m.read_text())
        except ValueError:
            continue
        out.append(
            {
                "name": d.name,
                "path": str(d),
                "created_at": man.get("created_at"),
                "bytes": sum(f["size"] for f in man.get("files", {}).values()),
                "tables": man.get("tables", {}),
                "key_included": man.get("key_included", False),
            }
        )
    return out


def prune(root: Path, keep: int) -> list[str]:
    """Remove the oldest complete backups under `root` beyond the newest `keep`."""
    gone = [b["path"] for b in list_backups(root)[keep:]]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


class HomeLock:
    """An advisory lock on LLMOS_HOME/kernel.lock, held while a kernel serves it, so
    restore can tell a live home from a stopped one (a crashed kernel's lock is
    released with its process)."""

    def __init__(self, home: Path) -> None:
        import fcntl

        home.mkdir(parents=True, exist_ok=True)
        self.path = home / LOCK
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise InvalidRequest(
                f"another kernel is serving {home} (it holds {self.path})", param="home"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        os.close(self._fd)  # closing drops the flock

    @staticmethod
    def held(home: Path) -> bool:
        import fcntl

        path = home / LOCK
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
