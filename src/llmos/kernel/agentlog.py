"""An agent's captured output: one `LogSink` per stream (stdout, stderr).

A stream is kept on disk as `<name>.log` and, once that passed the size limit, the
part before it as `<name>.log.1` (older output is dropped), so an agent that
prints forever costs at most two parts of disk. Positions count every byte the
stream ever carried: `end` is the total, `start` the first one still kept; a
reader that follows the stream passes the `next_offset` of its last read and
learns from `dropped` whether it fell behind a rotation. After a kernel restart
positions start over from what the files hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class LogChunk:
    text: str
    offset: int  # position of the chunk's first byte
    next_offset: int  # where the next read should start
    end: int  # bytes the stream carried in all
    dropped: int  # bytes between the position asked for and `offset` no longer kept

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "end": self.end,
            "dropped": self.dropped,
        }


class LogSink:
    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.old = path.with_name(path.name + ".1")
        self.limit = limit
        self.end = _size(self.old) + _size(path)
        self._file: IO[bytes] | None = None

    @property
    def start(self) -> int:
        return self.end - _size(self.old) - _size(self.path)

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(data)
        self._file.flush()
        self.end += len(data)
        if self._file.tell() >= self.limit:  # rotate: the current part becomes the old one
            self._file.close()
            self._file = None
            self.path.replace(self.old)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, offset: int | None, tail: int | None, max_bytes: int, growing: bool) -> LogChunk:
        """From `offset` (a position) onwards, or the last `tail` lines, or (neither)
        the last `max_bytes`; at most `max_bytes`. `growing`: more may be written,
        so a UTF-8 character cut at the end is left for the next read."""
        kept = _read(self.old) + _read(self.path)
        start = self.end - len(kept)
        if offset is not None:
            first = min(max(offset, start), self.end)
            data = kept[first - start : first - start + max_bytes]
        else:
            data = kept[-max_bytes:] if max_bytes else b""
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            first = self.end - len(data)
        whole = data if not growing or first + len(data) < self.end else _whole_utf8(data)
        dropped = max(0, start - offset) if offset is not None else 0
        return LogChunk(
            text=whole.decode("utf-8", errors="replace"),
            offset=first,
            next_offset=first + len(whole),
            end=self.end,
            dropped=dropped,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _whole_utf8(data: bytes) -> bytes:
    """`data` without a trailing, incomplete UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: its lead is further back
            continue
        need = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return data if back >= need else data[:-back]
    return data
