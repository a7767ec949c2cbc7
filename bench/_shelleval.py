"""The natural-language shell's evaluation set (tests/shell_eval.jsonl) and how a
planner is scored on it; shared by tests/test_shell.py and bench/shell_eval.py.

Each case: a sentence, the path meant to plan it ("parser" for the common commands
the deterministic parser covers, "model" for phrasing it does not), and the
expected steps — syscall and *key* args. A plan is right when its steps have the
expected syscalls in order and every key arg matches (strings compared without
case, surrounding punctuation or a trailing slash); other args may be anything.
"Syscalls right" counts the steps' syscalls alone."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.shell.plan import Plan, ShellError

CASES = Path(__file__).resolve().parent.parent / "tests" / "shell_eval.jsonl"


@dataclass(frozen=True)
class Case:
    sentence: str
    path: str  # "parser" | "model"
    expect: list[dict[str, Any]]


@dataclass
class Outcome:
    case: Case
    plan: Plan | None
    error: str | None
    syscalls_right: bool
    right: bool
    seconds: float


@dataclass
class Score:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        return sum(o.right for o in self.outcomes) / self.n if self.n else 0.0

    @property
    def syscall_accuracy(self) -> float:
        return sum(o.syscalls_right for o in self.outcomes) / self.n if self.n else 0.0

    @property
    def refused(self) -> int:
        return sum(o.plan is None for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 3),
            "syscall_accuracy": round(self.syscall_accuracy, 3),
            "no_plan": self.refused,
            "mean_s": round(sum(o.seconds for o in self.outcomes) / self.n, 2) if self.n else 0,
        }

    def misses(self) -> list[str]:
        return [
            f"{o.case.sentence!r}: expected {_show(o.case.expect)}, got "
            + (_show([s.to_dict() for s in o.plan.steps]) if o.plan else f"no plan ({o.error})")
            for o in self.outcomes
            if not o.right
        ]


def load(path: Path = CASES) -> list[Case]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            cases.append(Case(raw["sentence"], raw["path"], raw["expect"]))
    return cases


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value.casefold()).strip(" \t.,;:!?'\"").rstrip("/")
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _args_match(expected: Any, actual: Any) -> bool:
    """Every expected key is there with an equal value (recursively for objects)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _args_match(v, actual[k]) for k, v in expected.items()
        )
    return bool(_norm(expected) == _norm(actual))


def judge(case: Case, plan: Plan) -> tuple[bool, bool]:
    """(syscalls right, whole plan right)."""
    names = [s.syscall for s in plan.steps]
    if names != [e["syscall"] for e in case.expect]:
        return False, False
    return True, all(
        _args_match(e.get("args", {}), s.args) for e, s in zip(case.expect, plan.steps, strict=True)
    )


def score(cases: list[Case], planner: Callable[[str], Plan | None]) -> Score:
    """Run `planner` on every case; a None or a ShellError is a miss with no plan."""
    result = Score()
    for case in cases:
        started = time.monotonic()
        plan, error = None, None
        try:
            plan = planner(case.sentence)
        except ShellError as exc:
            error = exc.message
        seconds = time.monotonic() - started
        syscalls_right, right = judge(case, plan) if plan is not None else (False, False)
        result.outcomes.append(Outcome(case, plan, error, syscalls_right, right, seconds))
    return result


def _show(steps: list[dict[str, Any]]) -> str:
    return "; ".join(f"{s['syscall']} {json.dumps(s.get('args', {}))}" for s in steps)
