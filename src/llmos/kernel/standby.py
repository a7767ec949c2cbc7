"""A warm standby: a second home that follows a primary kernel by pulling a fresh
snapshot (GET /v1/backups/stream, admins, fetched by the caller's `fetch`: the
kernel speaks no HTTP) every `interval_s`, and becomes a
normal kernel's home when promoted.

Recovery point: what the primary committed before the start of the last snapshot
that arrived complete (snapshot shipping only: the RPO is at most one interval
plus one snapshot's time). While following, nothing listens: the standby serves
no writes. Layout under the standby's home:

    standby/current/     the newest complete, verified snapshot (a backup dir)
    standby/incoming/    the one arriving (replaces current only once verified)
    standby/status.json  state (following, promoting, promoted), last sync, error
    standby/promote      a request to promote (`llmos standby promote` writes it)

Invariant: standby/current is always a complete backup whose checksums held and
whose data keys unwrap with the standby's master key (when one was given)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.errors import InvalidRequest, Unavailable
from llmos.kernel import backup
from llmos.kernel.masterkey import parse_key

log = logging.getLogger(__name__)

DIR = "standby"
POLL_S = 0.1  # how often the follower looks for a promotion request


@dataclass
class Standby:
    fetch: Callable[[Path], None]  # writes a fresh snapshot of the primary as a tar there
    home: Path
    interval_s: float = 30.0
    key_text: str | None = None  # the master key (LLMOS_KEY or a key file's text)
    key_source: str = "LLMOS_KEY"
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.home / DIR

    def check(self) -> None:
        """Refuse a home that holds a kernel's state: a standby's home is its own."""
        reason = backup.live_reason(self.home)
        if reason:
            raise InvalidRequest(f"a standby needs its own home: {reason}", param="home")
        if self.key_text is not None:
            parse_key(self.key_text, self.key_source, "key")
        if not 0.1 <= self.interval_s <= 86400:
            raise InvalidRequest("interval must be between 0.1 and 86400 seconds", param="interval")

    def status(self, state: str, **extra: Any) -> None:
        self.last = {**self.last, "state": state, "pid": os.getpid(), **extra}
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(json.dumps(self.last))
        os.replace(tmp, self.dir / "status.json")

    def sync_once(self) -> dict[str, Any]:
        """Pull one snapshot; make it current once it verifies. Returns its manifest."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        incoming, tar = self.dir / "incoming", self.dir / "incoming.tar"
        shutil.rmtree(incoming, ignore_errors=True)
        started = time.time()
        self.fetch(tar)  # the SDK's backup_download: GET /v1/backups/stream
        manifest = backup.unpack(tar, incoming)
        tar.unlink()
        if self.key_text is not None:
            backup.check_key(incoming / backup.DB, parse_key(self.key_text, "key", "key"))
        current, old = self.dir / "current", self.dir / "old"
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            os.replace(current, old)
        os.replace(incoming, current)
        shutil.rmtree(old, ignore_errors=True)
        self.status(
            "following",
            snapshot_at=manifest["created_at"],
            synced_at=time.time(),
            sync_s=round(time.time() - started, 3),
            error=None,
        )
        return manifest

    def promote_requested(self) -> bool:
        return (self.dir / "promote").exists()

    def follow(self, stop: Callable[[], bool] | None = None) -> None:
        """Sync now and every interval until a promotion is requested (or `stop()`).
        A failed sync (the primary is down) keeps the last good snapshot."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.status("following")
        next_sync = 0.0
        while not self.promote_requested() and not (stop and stop()):
            if time.monotonic() >= next_sync:
                try:
                    self.sync_once()
                except Exception as exc:  # recorded, retried at the next interval
                    log.warning("standby sync failed: %s", exc)
                    self.status("following", error=str(exc)[:500])
                next_sync = time.monotonic() + self.interval_s
            time.sleep(POLL_S)

    def promote(self) -> backup.Restored:
        """Restore the current snapshot into the home: it is then a kernel's home."""
        current = self.dir / "current"
        if not (current / backup.MANIFEST).is_file():
            raise Unavailable("no snapshot has arrived from the primary yet: nothing to promote")
        self.status("promoting", promote_at=time.time())
        restored = backup.restore(current, self.home, self.key_text, self.key_source)
        (self.dir / "promote").unlink(missing_ok=True)
        data_age = time.time() - restored.manifest["created_at"]
        self.status("promoted", promoted_at=time.time(), data_age_s=round(data_age, 3))
        return restored


def request_promotion(home: Path) -> None:
    """What `llmos standby promote` does: ask the standby following in `home` to promote."""
    d = home / DIR
    if not (d / "status.json").is_file():
        raise InvalidRequest(f"no standby follows a primary in {home}", param="home")
    (d / "promote").write_text(f"{time.time()}\n")


def read_status(home: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((home / DIR / "status.json").read_text()))
    except (OSError, ValueError):
        return {}
