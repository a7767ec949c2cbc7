"""Running a checked plan: one syscall per step through the SDK, in order, stopping
at the first step the kernel refuses (later steps may depend on it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmos.sdk import ApiError, Client
from llmos.shell.plan import Plan, Step


@dataclass(frozen=True)
class StepResult:
    index: int  # 1-based, as the plan is shown
    step: Step
    result: Any = None
    error: str | None = None  # the kernel's message, if the step failed

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.index, **self.step.to_dict()}
        if self.ok:
            out["result"] = self.result
        else:
            out["error"] = self.error
        return out


def execute(client: Client, plan: Plan) -> Iterator[StepResult]:
    """Each step's result as it completes; a failed step is the last one yielded."""
    for i, step in enumerate(plan.steps, 1):
        try:
            result = client.syscall(step.syscall, step.args)
        except ApiError as exc:
            yield StepResult(i, step, error=exc.message)
            return
        yield StepResult(i, step, result)
