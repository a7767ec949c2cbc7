"""An LLM request: the unit the scheduler dispatches to a slot."""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from llmos.errors import LlmosError
from llmos.kernel.stops import StopMatcher
from llmos.types import Snapshot, Token


class ReqState(enum.IntEnum):
    """Ordered: `state > PREEMPTED` means finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6

    @property
    def finished(self) -> bool:
        return self > ReqState.PREEMPTED


FINISH_REASON = {
    ReqState.FINISHED_STOPPED: "stop",
    ReqState.FINISHED_LENGTH: "length",
    ReqState.FINISHED_ABORTED: "abort",
    ReqState.FINISHED_ERROR: "error",
}


@dataclass(frozen=True)
class Delta:
    """Text released to the client, with the tokens that produced it."""

    text: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class Done:
    """Last event of a stream: why it ended, or the error that ended it."""

    reason: str
    error: LlmosError | None = None


Event = Delta | Done

_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    pid: int
    owner: str
    model: str
    kind: str  # "chat" | "completion"
    snapshot: Snapshot
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    state: ReqState = ReqState.WAITING
    priority: int = 20
    created_at: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    device: str | None = None
    cached_tokens: int = 0
    text: str = ""
    error: LlmosError | None = None
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    # -- context switching (scheduler) --
    session: str = ""  # groups a process's requests (the predictor's feature)
    enqueued_at: float = field(default_factory=time.monotonic)  # last put on the run queue
    dispatches: int = 0  # times given a slot; > 1 means it was resumed
    preemptions: int = 0  # times it lost its slot unfinished while others waited
    faults: int = 0  # device failures it was requeued (or failed) after
    segment_tokens: int = 0  # tokens generated in the current dispatch
    preempt_requested: bool = False  # leave the slot at the next clean token boundary
    matcher: StopMatcher | None = None  # stop-string state survives preemptions
    pending: list[Token] = field(default_factory=list)  # tokens whose text is held back
    # -- policy scratch (each field owned by one policy) --
    level: int = 0  # mlfq
    predicted_tokens: float | None = None  # sjf
    features: tuple[float, ...] | None = None  # the predictor's view at submission
    conversation: bool = False  # a kernel-kept conversation turn: store the reply
    app: str = ""  # its process's name ("(implicit)" for implicit ones): telemetry, predictor
    last_token_at: float | None = None
    itl_total_s: float = 0.0  # time between consecutive tokens of one dispatch, summed
    itl_gaps: int = 0
    route: str = ""  # its run queue (capabilities.routes): "" means its model's
    media: list[dict[str, Any]] | None = None  # how its image/audio parts were taken

    def __post_init__(self) -> None:
        self.route = self.route or self.model

    def tick(self, now: float) -> None:
        """A token arrived: account the gap since the previous one of this dispatch."""
        if self.segment_tokens and self.last_token_at is not None:
            self.itl_total_s += now - self.last_token_at
            self.itl_gaps += 1
        self.last_token_at = now

    @property
    def itl_s(self) -> float | None:
        """Mean inter-token latency (gaps while preempted are not counted)."""
        return self.itl_total_s / self.itl_gaps if self.itl_gaps else None

    @property
    def prompt_tokens(self) -> int:
        return len(self.snapshot.prompt_ids)

    @property
    def output_tokens(self) -> int:
        return len(self.snapshot.generated_ids)

    @property
    def finish_reason(self) -> str | None:
        return FINISH_REASON.get(self.state)

    async def outcome(self) -> Done:
        """Drain the events to the end (for a caller that does not stream)."""
        while True:
            event = await self.events.get()
            if isinstance(event, Done):
                return event

    def flush_held(self) -> None:
        """Release text held back for stop strings, at the true end of a request."""
        assert self.matcher is not None
        rest = self.matcher.flush()
        if rest or self.pending:
            self.emit(Delta(rest, tuple(self.pending)))
            self.pending.clear()

    def rewind(self, restart: bool) -> None:
        """Make the snapshot a clean resume point: drop trailing tokens whose text never
        arrived (a character cut in two), or everything when restarting from scratch."""
        if restart:
            self.snapshot.generated_ids.clear()
            self.pending.clear()
            self.matcher = StopMatcher(self.snapshot.params.stop)
            return
        while self.pending and not self.pending[-1].text:
            self.pending.pop()
            self.snapshot.generated_ids.pop()

    def emit(self, delta: Delta) -> None:
        self.text += delta.text
        self.events.put_nowait(delta)

    def finish(self, state: ReqState, error: LlmosError | None = None) -> None:
        """Invariant: called once; the Done event is the last one on the queue."""
        if self.state.finished:
            return
        self.state = state
        self.error = error
        self.finished_at = time.monotonic()
        self.events.put_nowait(Done(FINISH_REASON[state], error))
