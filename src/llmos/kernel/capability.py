"""Capabilities: what a process token may do, fixed when the process is spawned.

A capability names the syscalls it may make (exact names or `prefix.*`), the file
path prefixes it may read and write in its owner's namespace, how it may touch its
memories (`none` < `read` < `write`), and when it expires. It is derived from
its parent's rights — the owner's role, or the spawning process's capability — and
never wider: `derive` refuses any dimension that would widen (cf. Capsicum's
cap_rights_limit: rights only ever shrink)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmos.errors import Forbidden, InvalidRequest

MEMORY_LEVELS = ("none", "read", "write")
MAX_PREFIXES = 32


@dataclass(frozen=True)
class Capability:
    syscalls: frozenset[str]  # concrete syscall names
    file_read: tuple[str, ...] = ("",)  # path prefixes; "" is every path
    file_write: tuple[str, ...] = ("",)
    memory: str = "write"
    expires_at: float | None = None

    # -- checks --------------------------------------------------------------------
    def allows(self, syscall: str) -> bool:
        return syscall in self.syscalls

    def allows_path(self, path: str, write: bool) -> bool:
        prefixes = self.file_write if write else self.file_read + self.file_write
        return any(_under(path, p) for p in prefixes)

    def allows_memory(self, write: bool) -> bool:
        need = "write" if write else "read"
        return MEMORY_LEVELS.index(self.memory) >= MEMORY_LEVELS.index(need)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    # -- narrowing -----------------------------------------------------------------
    def derive(self, spec: dict[str, Any] | None, known: Iterable[str]) -> Capability:
        """A capability from `spec` (the `capabilities` argument of proc.spawn), no
        wider than this one. Dimensions the spec leaves out are inherited."""
        spec = spec or {}
        if not isinstance(spec, dict):
            raise InvalidRequest("capabilities must be an object", param="capabilities")
        unknown = set(spec) - {"syscalls", "files", "memory", "expires_in"}
        if unknown:
            raise InvalidRequest(
                f"capabilities has unknown fields: {', '.join(sorted(unknown))}",
                param="capabilities",
            )
        syscalls = self.syscalls
        if "syscalls" in spec:
            syscalls = _expand(spec["syscalls"], known)
            wider = syscalls - self.syscalls
            if wider:
                raise Forbidden(
                    f"capabilities may not widen rights: {', '.join(sorted(wider))}",
                    param="capabilities.syscalls",
                )
        file_read, file_write = self.file_read, self.file_write
        if "files" in spec:
            files = spec["files"]
            if not isinstance(files, dict) or set(files) - {"read", "write"}:
                raise InvalidRequest(
                    "capabilities.files must be {read: [prefix…], write: [prefix…]}",
                    param="capabilities.files",
                )
            file_read = _prefixes(files.get("read", []), "capabilities.files.read")
            file_write = _prefixes(files.get("write", []), "capabilities.files.write")
            for p in file_read:
                if not self._covers(p, write=False):
                    raise Forbidden(
                        f"capabilities may not widen file reads to {p!r}",
                        param="capabilities.files.read",
                    )
            for p in file_write:
                if not self._covers(p, write=True):
                    raise Forbidden(
                        f"capabilities may not widen file writes to {p!r}",
                        param="capabilities.files.write",
                    )
        memory = self.memory
        if "memory" in spec:
            memory = spec["memory"]
            if memory not in MEMORY_LEVELS:
                raise InvalidRequest(
                    f"capabilities.memory must be one of {', '.join(MEMORY_LEVELS)}",
                    param="capabilities.memory",
                )
            if MEMORY_LEVELS.index(memory) > MEMORY_LEVELS.index(self.memory):
                raise Forbidden(
                    f"capabilities may not widen memory access to {memory!r}",
                    param="capabilities.memory",
                )
        expires_at = self.expires_at
        if "expires_in" in spec:
            ttl = spec["expires_in"]
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
                raise InvalidRequest(
                    "capabilities.expires_in must be a positive number of seconds",
                    param="capabilities.expires_in",
                )
            asked = time.time() + float(ttl)
            expires_at = asked if expires_at is None else min(asked, expires_at)
        return Capability(syscalls, file_read, file_write, memory, expires_at)

    def _covers(self, prefix: str, write: bool) -> bool:
        """Every path under `prefix` is allowed: `prefix` lies under an allowed prefix."""
        allowed = self.file_write if write else self.file_read + self.file_write
        return any(_under(prefix, p) for p in allowed)

    # -- storage -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "syscalls": sorted(self.syscalls),
            "files": {"read": list(self.file_read), "write": list(self.file_write)},
            "memory": self.memory,
            "expires_at": self.expires_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Capability:
        d = json.loads(text)
        return cls(
            frozenset(d["syscalls"]),
            tuple(d["files"]["read"]),
            tuple(d["files"]["write"]),
            d["memory"],
            d["expires_at"],
        )


def _under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or inside it ("" covers everything; "docs" covers
    "docs/a" and "docs" but not "docs2")."""
    if not prefix:
        return True
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def _prefixes(value: Any, param: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_PREFIXES
        or not all(isinstance(p, str) and len(p) <= 512 for p in value)
    ):
        raise InvalidRequest(
            f"{param} must be a list of at most {MAX_PREFIXES} path prefixes", param=param
        )
    for p in value:
        if p.startswith("/") or ".." in p.split("/") or "\x00" in p:
            raise InvalidRequest(f"{param}: {p!r} is not a relative path prefix", param=param)
    return tuple(value)


def _expand(value: Any, known: Iterable[str]) -> frozenset[str]:
    """Syscall names and `prefix.*` patterns -> the concrete names they match."""
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest(
            "capabilities.syscalls must be a list of syscall names or 'prefix.*' patterns",
            param="capabilities.syscalls",
        )
    names = frozenset(known)
    out: set[str] = set()
    for pattern in value:
        if pattern.endswith(".*"):
            match = {n for n in names if n.startswith(pattern[:-1])}
        else:
            match = {pattern} & names
        if not match:
            raise InvalidRequest(
                f"capabilities.syscalls: {pattern!r} matches no syscall",
                param="capabilities.syscalls",
            )
        out |= match
    return frozenset(out)
