"""Key rotation's sweep: re-seal every sealed value under the active data key, a
batch at a time, yielding to the event loop between batches so reads and writes go
on; then the keys no value names any more are retired (crypto.KeyRing.retire)."""

from __future__ import annotations

import asyncio
import logging
import struct

from llmos.errors import Unavailable
from llmos.kernel.crypto import MAGIC, KeyRing, Sealed

log = logging.getLogger(__name__)

BATCH_ROWS = 64  # a rotation batch: at most this many rows ...
BATCH_BYTES = 4 << 20  # ... or about this many bytes, between two yields to the loop


async def sweep(ring: KeyRing, pause: float = 0.0) -> None:
    """Re-seal every row under the active key, a batch at a time, then retire the
    other keys. Goes round again if a rotation happened meanwhile. A value that
    fails its integrity check is skipped and named in `error`; while one is left,
    the key it names is kept."""
    try:
        while ring.pending:
            active, bad = ring.active, list[str]()
            for column in list(ring.columns):
                after: int | None = 0
                while after is not None:
                    after = _batch(ring, column, after, bad)
                    await asyncio.sleep(pause)
            left = rows_left(ring)
            if left == 0:
                ring.retire()
            elif active == ring.active:  # no new rotation: what is left is damaged
                ring.error = f"{left} value(s) could not be re-encrypted: {bad[0]}"
                log.error("key rotation stopped: %s", ring.error)
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        ring.error = getattr(exc, "message", None) or repr(exc)
        log.exception("key rotation stopped")
    finally:
        ring.sweeping = False


def _batch(ring: KeyRing, column: Sealed, after: int, bad: list[str]) -> int | None:
    """Re-seal up to a batch of `column`'s rows past rowid `after` that are not
    under the active key; the rowid to go on from, None at the end. Values that
    do not open are left as they are, their reason appended to `bad`."""
    keys = ", ".join(column.keys)
    active = struct.pack(">I", ring.active)
    rows = ring.db.execute(
        f"SELECT rowid, {keys}, {column.column} FROM {column.table} WHERE rowid > ?"
        f" AND {column.column} IS NOT NULL AND substr({column.column}, ?, 4) != ?"
        " ORDER BY rowid LIMIT ?",
        (after, len(MAGIC) + 1, active, BATCH_ROWS),
    ).fetchall()
    if not rows:
        return None
    size = 0
    with ring.atomic():
        for row in rows:
            after = int(row[0])
            try:
                data = ring.open(column, row[-1], *row[1:-1])
            except Unavailable as exc:
                bad.append(exc.message)
                continue
            ring.db.execute(
                f"UPDATE {column.table} SET {column.column} = ? WHERE rowid = ?",
                (ring.seal(column, data, *row[1:-1]), row[0]),
            )
            ring.resealed += 1
            size += len(data)
            if size >= BATCH_BYTES:
                break
    return after


def rows_left(ring: KeyRing) -> int:
    """Values not yet under the active key. With no other key held there are none
    (a key is retired only once no value names it); else every value is read."""
    if not ring.pending:
        return 0
    active = struct.pack(">I", ring.active)
    total = 0
    for c in ring.columns:
        total += ring.db.execute(
            f"SELECT COUNT(*) FROM {c.table} WHERE {c.column} IS NOT NULL"
            f" AND substr({c.column}, ?, 4) != ?",
            (len(MAGIC) + 1, active),
        ).fetchone()[0]
    return int(total)
