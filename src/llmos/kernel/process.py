"""The process table: one row per agent run. Every LLM request belongs to a process."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from llmos.errors import InvalidRequest, NotFound


class ProcState(enum.IntEnum):
    """Ordered: `state >= EXITED` means the process is over."""

    READY = 0  # alive, nothing queued or running
    WAITING = 1  # has requests on the run queue, none running
    RUNNING = 2  # at least one request holds a slot
    SUSPENDED = 3  # alive but parked: its requests wait, none is dispatched
    EXITED = 4
    KILLED = 5

    @property
    def alive(self) -> bool:
        return self < ProcState.EXITED


# Legal transitions, in one place.
# An alive process may end (EXITED: its program ended; KILLED) or be suspended from
# any alive state; READY/WAITING/RUNNING follow its request counters (`settle`).
_ALIVE = frozenset({ProcState.READY, ProcState.WAITING, ProcState.RUNNING})
_END = frozenset({ProcState.EXITED, ProcState.KILLED})
TRANSITIONS: dict[ProcState, frozenset[ProcState]] = {
    ProcState.READY: (_ALIVE | _END | {ProcState.SUSPENDED}) - {ProcState.READY},
    ProcState.WAITING: (_ALIVE | _END | {ProcState.SUSPENDED}) - {ProcState.WAITING},
    ProcState.RUNNING: (_ALIVE | _END | {ProcState.SUSPENDED}) - {ProcState.RUNNING},
    ProcState.SUSPENDED: _ALIVE | _END,
    ProcState.EXITED: frozenset(),
    ProcState.KILLED: frozenset(),
}


@dataclass
class Process:
    pid: int
    name: str
    owner: str
    priority: int
    state: ProcState = ProcState.READY
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0
    implicit: bool = False  # created for a token that named no process
    waiting: int = 0  # requests on the run queue (new or preempted)
    running: int = 0  # requests holding a slot
    preemptions: int = 0  # times one of its requests lost a slot to another
    max_concurrent: int | None = None  # quota: requests waiting + running at once
    token_budget: int | None = None  # quota: tokens in + out over its life
    memory_shared: bool = False  # may read and write its owner's shared memories
    # An agent: the OS process the kernel launched for it (agents.py).
    command: str | None = None  # the program and its arguments, as launched
    os_pid: int | None = None
    exit_code: int | None = None  # the program's exit status; -N: ended by signal N
    cpu_s: float | None = None  # CPU time, user + system, its children included
    wall_s: float | None = None  # from launch to exit (so far, while it runs)

    def move(self, new: ProcState) -> None:
        if new == self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise InvalidRequest(
                f"process {self.pid} cannot go from {self.state.name} to {new.name}",
                param="pid",
            )
        self.state = new
        if not new.alive:
            self.finished_at = time.time()

    def resume(self) -> None:
        """SUSPENDED -> what its request counters say."""
        if self.state == ProcState.SUSPENDED:
            self.move(ProcState.READY)
            self.settle()

    def settle(self) -> None:
        """Derive READY/WAITING/RUNNING from the request counters (if alive and
        not suspended: a suspended process stays so until `resume`)."""
        if not self.state.alive or self.state == ProcState.SUSPENDED:
            return
        if self.running:
            self.move(ProcState.RUNNING)
        elif self.waiting:
            self.move(ProcState.WAITING)
        else:
            self.move(ProcState.READY)

    def to_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "name": self.name,
            "owner": self.owner,
            "priority": self.priority,
            "state": self.state.name.lower(),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "requests": self.requests,
            "waiting": self.waiting,
            "running": self.running,
            "preemptions": self.preemptions,
            "max_concurrent": self.max_concurrent,
            "token_budget": self.token_budget,
            "memory_shared": self.memory_shared,
            "implicit": self.implicit,
            "command": self.command,
            "os_pid": self.os_pid,
            "exit_code": self.exit_code,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
        }


class ProcessTable:
    """pid -> Process. Finished processes stay listed (like zombies, with accounting)."""

    def __init__(self, next_pid: int = 1) -> None:
        self._procs: dict[int, Process] = {}
        self._next_pid = next_pid

    def add(
        self,
        name: str,
        owner: str,
        priority: int,
        *,
        implicit: bool = False,
        max_concurrent: int | None = None,
        token_budget: int | None = None,
        memory_shared: bool = False,
    ) -> Process:
        proc = Process(
            pid=self._next_pid,
            name=name,
            owner=owner,
            priority=priority,
            implicit=implicit,
            max_concurrent=max_concurrent,
            token_budget=token_budget,
            memory_shared=memory_shared,
        )
        self._procs[proc.pid] = proc
        self._next_pid += 1
        return proc

    def restore(self, proc: Process) -> None:
        self._procs[proc.pid] = proc
        self._next_pid = max(self._next_pid, proc.pid + 1)

    def get(self, pid: int) -> Process:
        proc = self._procs.get(pid)
        if proc is None:
            raise NotFound(f"no process with pid {pid}", param="pid")
        return proc

    def find(self, pid: int) -> Process | None:
        return self._procs.get(pid)

    def list(self) -> list[Process]:
        return sorted(self._procs.values(), key=lambda p: p.pid)
