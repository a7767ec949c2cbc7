"""What the shell plans: a `Plan` of `Step`s (one syscall each), the vocabulary of
syscalls it plans with and their argument shapes (JSON schemas), the set of steps
that cannot be undone, and the check a plan passes before it is shown.

A plan on the wire: {"steps": [{"syscall": name, "args": {...}}], "explanation": str}.
The same shapes constrain the model's output (`plan_schema`, a llama.cpp grammar)
and validate any plan, whoever proposed it (`check`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from llmos.params import MAX_PRIORITY, POLICY_NAMES

MAX_STEPS = 8  # one sentence; a longer plan is a script, not a command
MAX_TEXT = 400  # longest string argument (the model's grammar enforces it too)
MAX_EXPLANATION = 160


class ShellError(Exception):
    """A sentence the shell will not run, with a message for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _obj(required: Mapping[str, Any] | None = None, **optional: Any) -> dict[str, Any]:
    """An object schema: `required` properties first (their order is the grammar's),
    then the optional ones; nothing else."""
    props = {**(required or {}), **optional}
    return {
        "type": "object",
        "properties": props,
        "required": list(required or {}),
        "additionalProperties": False,
    }


MAX_ID = 999_999_999  # pids, memory ids, versions: bounded, or a model writes digits forever
_INT = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_STR = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_PID = {"pid": _INT}
_PATH = {"path": _STR}
_SIGNALS = ("suspend", "resume", "term", "kill")

# The built-in tools' argument shapes (the tool contract of issue 6); the kernel
# validates again against the registry's schema when the call is made.
TOOL_ARGS: dict[str, dict[str, Any]] = {
    "calculator": _obj({"expression": _STR}),
    "time": _obj(timezone=_STR),
    "memory_search": _obj({"query": _STR}, k=_INT),
    "file_read": _obj(_PATH),
    "file_write": _obj({**_PATH, "content": _STR}),
    "file_list": _obj(prefix=_STR),
    "python": _obj({"code": _STR}),
}
_TOOL_CALL = {
    "anyOf": [
        _obj({"name": {"const": name}, "arguments": schema}) for name, schema in TOOL_ARGS.items()
    ]
}

# The syscalls the shell plans with, and their arguments. Others (key rotation,
# telemetry export, job submission, granting shares, adding users…) are left to the
# CLI and the SDK.
VOCABULARY: dict[str, dict[str, Any]] = {
    "proc.list": _obj(),
    "proc.get": _obj(_PID),
    "proc.spawn": _obj(
        {"name": _STR}, priority={"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY}
    ),
    "proc.logs": _obj(_PID, tail=_INT),
    "proc.kill": _obj(_PID),
    "proc.signal": _obj({**_PID, "signal": {"enum": list(_SIGNALS)}}),
    "conv.history": _obj(_PID),
    "mem.search": _obj({"query": _STR}, k=_INT),
    "mem.add": _obj({"text": _STR}),
    "mem.list": _obj(limit=_INT),
    "mem.get": _obj({"id": _INT}),
    "mem.delete": _obj({"id": _INT}),
    "fs.list": _obj(prefix={"type": "string", "maxLength": MAX_TEXT}),
    "fs.read": _obj(_PATH),
    "fs.stat": _obj(_PATH),
    "fs.write": _obj({**_PATH, "content": {"type": "string", "maxLength": MAX_TEXT}}),
    "fs.delete": _obj(_PATH),
    "fs.versions": _obj(_PATH),
    "fs.rollback": _obj({**_PATH, "version": _INT}),
    "fs.search": _obj({"query": _STR}),
    "sys.info": _obj(),
    "sys.devices": _obj(),
    "sys.models": _obj(),
    "sched.get": _obj(),
    "sched.set": _obj({"policy": {"enum": list(POLICY_NAMES)}}),
    "tool.list": _obj(),
    "tool.call": _TOOL_CALL,
    "job.list": _obj(),
    "job.get": _obj({"id": _STR}),
    "job.cancel": _obj({"id": _STR}),
    "auth.whoami": _obj(),
    "user.list": _obj(),
    "user.rm": _obj({"name": _STR}),
    "token.list": _obj(),
    "token.revoke": _obj({"id": _STR}),
    "share.list": _obj(),
    "share.rm": _obj({"id": _INT}),
}

# Steps that cannot be taken back: they are confirmed before the plan runs.
# (`fs.delete` keeps the file's history, but a deletion is still what the user must
# mean; `fs.rollback` replaces the current content.)
IRREVERSIBLE = frozenset(
    {
        "proc.kill",
        "fs.delete",
        "fs.rollback",
        "mem.delete",
        "user.rm",
        "token.revoke",
        "share.rm",
        "job.cancel",
    }
)


@dataclass(frozen=True)
class Step:
    syscall: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def irreversible(self) -> bool:
        if self.syscall == "proc.signal":
            return self.args.get("signal") in ("term", "kill")
        return self.syscall in IRREVERSIBLE

    def to_dict(self) -> dict[str, Any]:
        return {"syscall": self.syscall, "args": self.args}


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    explanation: str = ""
    source: str = "parser"  # who proposed it: "parser" | "model"

    @property
    def irreversible(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.irreversible)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.to_dict() for s in self.steps],
            "explanation": self.explanation,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Plan:
        """A plan from its JSON form; a wrong shape is a ShellError naming what."""
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise ShellError("a plan is an object with a list of steps")
        steps = []
        for i, raw in enumerate(data["steps"], 1):
            if not isinstance(raw, dict) or not isinstance(raw.get("syscall"), str):
                raise ShellError(f"step {i} has no syscall name")
            args = raw.get("args", {})
            if not isinstance(args, dict):
                raise ShellError(f"step {i} ({raw['syscall']}): args must be an object")
            steps.append(Step(raw["syscall"], args))
        explanation = data.get("explanation", "")
        return cls(tuple(steps), explanation if isinstance(explanation, str) else "", source)


def plan_schema(names: list[str] | None = None, max_steps: int = MAX_STEPS) -> dict[str, Any]:
    """The JSON schema of a plan of at most `max_steps` steps using `names` (default:
    the whole vocabulary), each with its own argument shape."""
    chosen = [n for n in (names or list(VOCABULARY)) if n in VOCABULARY]
    step = {"anyOf": [_obj({"syscall": {"const": n}, "args": VOCABULARY[n]}) for n in chosen]}
    return _obj(
        {
            "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_steps},
            "explanation": {"type": "string", "maxLength": MAX_EXPLANATION},
        }
    )


def signature(name: str) -> str:
    """`proc.kill(pid)`, `fs.list(prefix?)`: a syscall as the model's prompt shows it."""
    schema = VOCABULARY[name]
    if "anyOf" in schema:
        return f"{name}(name, arguments)"
    required = set(schema["required"])
    params = [p if p in required else p + "?" for p in schema["properties"]]
    return f"{name}({', '.join(params)})"


def check(plan: Plan, table: Mapping[str, bool]) -> None:
    """Refuse, with the reason, a plan that could not or should not run: too long or
    empty, a syscall the kernel does not have (`table` maps each syscall to whether
    this token may make it), one the shell does not plan with, one the token may not
    make, or arguments of the wrong shape."""
    if not plan.steps:
        raise ShellError("the plan has no steps")
    if len(plan.steps) > MAX_STEPS:
        raise ShellError(f"the plan has {len(plan.steps)} steps; at most {MAX_STEPS}")
    for i, step in enumerate(plan.steps, 1):
        where = f"step {i} ({step.syscall})"
        if step.syscall not in table:
            raise ShellError(f"{where}: the kernel has no such syscall")
        if step.syscall not in VOCABULARY:
            raise ShellError(
                f"{where}: the shell does not run this syscall; use the CLI or the SDK"
            )
        if not table[step.syscall]:
            raise ShellError(f"{where}: your token may not make this syscall")
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(VOCABULARY[step.syscall]).iter_errors(step.args)
        )
        if error is not None:
            at = ".".join(str(p) for p in error.absolute_path)
            raise ShellError(f"{where}: bad arguments{f' at {at}' if at else ''}: {error.message}")
