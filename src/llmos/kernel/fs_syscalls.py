"""The `fs.*` syscalls: thin handlers that check argument types and call the
FileStore (storage.py) in the caller's owner namespace. Arguments and results are
plain JSON: bytes travel as base64 (`content_b64`).

syscalls.py gathers FS_SYSCALLS into the syscall table."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from llmos.errors import Hidden, InvalidRequest, Killed
from llmos.kernel import access
from llmos.kernel.sysdefs import ALL, READERS, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import MAX_INT

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def _ns(k: Kernel, c: Caller, a: dict[str, Any], path: str, write: bool) -> str:
    """The namespace a call works in — the caller's own, or `owner`'s when shared —
    after the access checks."""
    _alive(k, c)
    owner = access.target_owner(c, a)
    access.file_access(k, c, owner, path, write)
    return owner


def _alive(k: Kernel, c: Caller) -> None:
    """A killed or exited process's token touches nothing."""
    if c.pid is not None:
        proc = k.procs.find(c.pid)
        if proc is None or not proc.state.alive:
            raise Killed(f"process {c.pid} has ended", param="pid")


def _readable(k: Kernel, c: Caller, owner: str, infos: list[dict[str, Any]]) -> Any:
    """Only the entries the caller may read (a share or capability may cover some)."""
    if owner == c.owner and c.caps is None:
        return infos
    return [i for i in infos if access.may_read_file(k, c, owner, i["path"])]


def _str(a: dict[str, Any], key: str, default: str | None = None) -> str:
    value = a.get(key)
    value = default if value is None else value
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string", param=key)
    return value


def _int(a: dict[str, Any], key: str, default: int | None = None) -> int:
    value = a.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise InvalidRequest(f"{key} must be an integer of at most 64 bits", param=key)
    return value


def _version(a: dict[str, Any]) -> int:
    version = _int(a, "version")
    if version < 1:
        raise InvalidRequest("version must be 1 or more", param="version")
    return version


def _opt_version(a: dict[str, Any]) -> int | None:
    return None if a.get("version") is None else _version(a)


def _content(a: dict[str, Any]) -> bytes:
    """Exactly one of `content` (text, stored as UTF-8) or `content_b64` (bytes)."""
    text, b64 = a.get("content"), a.get("content_b64")
    if (text is None) == (b64 is None):
        raise InvalidRequest("give exactly one of content or content_b64", param="content")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidRequest("content must be a string", param="content")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("content must be valid Unicode text", param="content") from None
    if not isinstance(b64, str):
        raise InvalidRequest("content_b64 must be a base64 string", param="content_b64")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content_b64 is not valid base64", param="content_b64") from None


async def _fs_write(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    return k.files.write(_ns(k, c, a, path, True), path, _content(a))


async def _fs_read(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    info, data = k.files.fetch(_ns(k, c, a, path, False), path, _opt_version(a))
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "path": info["path"],
        "version": info["version"],
        "size": info["size"],
        "sha256": info["sha256"],
        "content": text,
        "content_b64": base64.b64encode(data).decode("ascii"),
    }


async def _fs_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    owner = _listable(k, c, a)
    return _readable(k, c, owner, k.files.list(owner, _str(a, "prefix", "")))


def _listable(k: Kernel, c: Caller, a: dict[str, Any]) -> str:
    """Listing or searching another owner's files needs some share from them."""
    _alive(k, c)
    owner = access.target_owner(c, a)
    if c.role == "process" and owner != c.owner:
        raise Hidden(f"{owner!r} shares no files with you", param="owner")
    if (
        owner != c.owner
        and not c.is_admin
        and owner not in k.shares.owners_sharing(c.principals, "file")
    ):
        raise Hidden(f"{owner!r} shares no files with you", param="owner")
    return owner


async def _fs_stat(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    return k.files.stat(_ns(k, c, a, path, False), path)


async def _fs_delete(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    return k.files.delete(_ns(k, c, a, path, True), path)


async def _fs_versions(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    return k.files.versions(_ns(k, c, a, path, False), path)


async def _fs_rollback(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    path = _str(a, "path")
    return k.files.rollback(_ns(k, c, a, path, True), path, _version(a))


async def _fs_search(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    owner = _listable(k, c, a)
    hits = k.files.search(owner, _str(a, "query"), _int(a, "limit", 10))
    return _readable(k, c, owner, hits)


FS_SYSCALLS = (
    Syscall(
        "fs.write", _fs_write, ALL, "store a file (content text or content_b64); a new version"
    ),
    Syscall("fs.read", _fs_read, READERS, "a file's content, current or an older version"),
    Syscall("fs.list", _fs_list, READERS, "the caller's files under a path prefix"),
    Syscall("fs.stat", _fs_stat, READERS, "a file's size, hash, version and times"),
    Syscall(
        "fs.delete", _fs_delete, ALL, "delete a file (a tombstone version: rollback undoes it)"
    ),
    Syscall("fs.versions", _fs_versions, READERS, "a file's kept versions, deletions included"),
    Syscall("fs.rollback", _fs_rollback, ALL, "write an older version's content as the newest"),
    Syscall(
        "fs.search", _fs_search, READERS, "full-text search of the caller's text files, best first"
    ),
)
