"""Parked requests: the run-queue side of suspending a process.

A suspended process's requests leave their policy's queue and wait here, in
arrival order, until it is resumed; new ones join them. Invariant: a waiting
request is either in its policy's queue or here, never both, and nothing here is
dispatched. The scheduler owns one `ParkingLot` and asks it before queueing."""

from __future__ import annotations

from llmos.kernel.request import Request


class ParkingLot:
    def __init__(self) -> None:
        self.suspended: set[int] = set()  # pids whose requests must not run
        self._held: dict[int, list[Request]] = {}

    def hold(self, req: Request) -> bool:
        """Keep `req` if its process is suspended; False: queue it as usual."""
        if req.pid not in self.suspended:
            return False
        self._held.setdefault(req.pid, []).append(req)
        return True

    def take(self, req: Request) -> bool:
        """Remove a held request (cancelled, killed); False if it was not here."""
        held = self._held.get(req.pid)
        if not held or req not in held:
            return False
        held.remove(req)
        return True

    def suspend(self, pid: int) -> None:
        self.suspended.add(pid)

    def release(self, pid: int) -> list[Request]:
        """End the suspension: its held requests, oldest first, to queue again."""
        self.suspended.discard(pid)
        return self._held.pop(pid, [])

    def held(self) -> list[Request]:
        return [r for reqs in self._held.values() for r in reqs]

    def __len__(self) -> int:
        return sum(len(reqs) for reqs in self._held.values())
