"""Backups from the syscall table (backup.create, backup.list) and the scheduled
backups with retention (settings.backup_every_s / backup_keep).

A snapshot runs in a worker thread on its own read-only connection (backup.py),
so the event loop keeps serving while it copies. One snapshot at a time: the
lock below guards the backups directory."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest
from llmos.kernel import backup
from llmos.kernel.bgtask import cancel
from llmos.kernel.sysdefs import ADMINS, Syscall

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.tokens import Caller

log = logging.getLogger(__name__)


def backups_dir(k: Kernel) -> Path:
    return k.settings.home / "backups"


def _stamp() -> str:
    t = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Backups:
    """The kernel's backups: one at a time, and the scheduled loop."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def create(self, dest: Path | None = None, include_key: bool = False) -> dict[str, Any]:
        """A snapshot of the kernel's home into `dest` (default: backups/<UTC stamp>)."""
        async with self.lock:
            target = dest or backups_dir(self.kernel) / _stamp()
            manifest = await asyncio.to_thread(
                backup.snapshot,
                self.kernel.settings.home,
                target,
                include_key,
                self.kernel.settings.data_key,
            )
        return {"path": str(target), **manifest}

    def start(self) -> None:
        if self.kernel.settings.backup_every_s > 0 and self.task is None:
            self.task = asyncio.create_task(self._loop(), name="llmos-backups")

    async def stop(self) -> None:
        await cancel(self.task)
        self.task = None

    async def run_once(self) -> dict[str, Any]:
        """One scheduled backup, audited, then the oldest beyond `backup_keep` pruned."""
        k = self.kernel
        manifest = await self.create()
        pruned = await asyncio.to_thread(backup.prune, backups_dir(k), k.settings.backup_keep)
        k.audit.append(
            "kernel",
            "admin",
            "-",
            None,
            "backup.scheduled",
            {"path": manifest["path"], "pruned": len(pruned)},
            "ok",
        )
        log.info("scheduled backup %s (pruned %d)", manifest["path"], len(pruned))
        return {**manifest, "pruned": pruned}

    async def _loop(self) -> None:
        every = self.kernel.settings.backup_every_s
        while True:
            await asyncio.sleep(every)
            try:
                await self.run_once()
                self.last_error = None
            except Exception as exc:  # a full disk must not end the loop; it is logged
                self.last_error = str(exc)
                log.exception("scheduled backup failed")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


async def _create(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    """`to` names the backup under LLMOS_HOME/backups; the kernel writes nowhere else
    on a caller's say (`llmos backup --to PATH` downloads a snapshot instead)."""
    to = a.get("to")
    if to is not None and (not isinstance(to, str) or not NAME.fullmatch(to)):
        raise InvalidRequest(
            "to must be a backup name (letters, digits, '.', '_', '-'; up to 100) under "
            "LLMOS_HOME/backups; to keep a backup elsewhere, download it "
            "(`llmos backup --to PATH`, GET /v1/backups/stream)",
            param="to",
        )
    include_key = a.get("include_key", False)
    if not isinstance(include_key, bool):
        raise InvalidRequest("include_key must be true or false", param="include_key")
    dest = backups_dir(k) / to if to else None
    return await k.backups.create(dest, include_key)


async def _list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await asyncio.to_thread(backup.list_backups, backups_dir(k))


BACKUP_SYSCALLS = (
    Syscall(
        "backup.create",
        _create,
        ADMINS,
        "consistent snapshot of the kernel's state (to, include_key)",
        True,
    ),
    Syscall("backup.list", _list, ADMINS, "backups under LLMOS_HOME/backups, newest first"),
)
