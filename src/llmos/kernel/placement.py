"""Placement: which of a route's free devices a request runs on.

The run queue decides *which* request goes next (the policy); placement decides
*where*. Two rules, in order:

- **resume**: a request that ran before (preempted, or moved by a fault) goes back to
  the device that holds its tokens in its prefix cache;
- **affinity**: a process's next request goes where its last one ran, since a
  conversation's next prompt starts with the last one's text;

each only while that device is free and not overloaded: its load (running ÷ slots)
must exceed the least-loaded free device's by less than `slack`. Otherwise, and for
everything else, the least-loaded free device wins (ties: fewest running, then the
order devices were declared). `least-loaded` turns both rules off (a baseline).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence, Sized
from typing import Protocol

from llmos.devices.base import Device
from llmos.errors import InvalidRequest
from llmos.params import PLACEMENTS

SLACK = 0.75  # a preferred device may be busier than the least-loaded by less than this
REMEMBERED = 10_000  # processes whose last device is kept (least recently used go)


class Placed(Protocol):
    pid: int
    device: str | None
    dispatches: int


class Placement:
    def __init__(self, mode: str = "affinity", slack: float = SLACK) -> None:
        self.mode = check(mode)
        self.slack = slack
        self.last: OrderedDict[int, str] = OrderedDict()  # pid -> its last request's device
        self.counts: Counter[str] = Counter()  # rule -> placements it decided

    def choose(self, req: Placed, free: Sequence[Device], running: Mapping[str, Sized]) -> Device:
        """One of `free` (devices of the request's route with a free slot)."""

        def load(d: Device) -> float:
            return len(running[d.name]) / d.slots

        least = min(free, key=lambda d: (load(d), len(running[d.name])))
        if self.mode == "affinity":
            preferred = (("resume", self._resumes(req)), ("affinity", self.last.get(req.pid)))
            for rule, name in preferred:
                dev = next((d for d in free if d.name == name), None)
                if dev is not None and load(dev) - load(least) < self.slack:
                    return self._placed(req, dev, rule)
        return self._placed(req, least, "least-loaded")

    @staticmethod
    def _resumes(req: Placed) -> str | None:
        return req.device if req.dispatches > 0 else None

    def _placed(self, req: Placed, dev: Device, rule: str) -> Device:
        self.counts[rule] += 1
        self.last[req.pid] = dev.name
        self.last.move_to_end(req.pid)
        while len(self.last) > REMEMBERED:
            self.last.popitem(last=False)
        return dev

    def forget_device(self, name: str) -> None:
        """A device left: nobody has an affinity for it any more."""
        for pid in [p for p, d in self.last.items() if d == name]:
            del self.last[pid]


def check(mode: str) -> str:
    if mode not in PLACEMENTS:
        raise InvalidRequest(
            f"unknown placement {mode!r}; choose one of {', '.join(PLACEMENTS)}",
            param="placement",
        )
    return mode
