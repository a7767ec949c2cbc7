"""What an app is, and what it gets to work with.

An app is a service a user calls by name (`POST /serving/process`). It subclasses
`App`: a name (and aliases), a description, the JSON schema of its `input`, the
priority its process runs at, the syscalls that process may make, and `run(ctx,
input)` (`default(ctx)` when the call gives no input). Apps are found through the
Python entry point group `llmos.apps` — the built-ins (llmos.apps) and third-party
packages alike — and hosted by the API (apphost.py).

An app touches the kernel only through its `AppContext`: every call is a syscall
made as the app's own process (owned by the caller, capability = the app's
syscalls), so access checks, scheduling and accounting apply as to any process.
Data an app ships (a knowledge base, a catalogue) is seeded once into the shared
namespace of the `apps` user (APP_DATA_OWNER); a user replaces it for themselves
by writing the same path in their own namespace, and `read_data` prefers that."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from llmos.errors import InvalidRequest, NotFound
from llmos.params import APP_DATA_OWNER, DEFAULT_PRIORITY

SyscallFn = Callable[[str, dict[str, Any]], Awaitable[Any]]


class App:
    """Subclass, set the class attributes, implement `run` (and `default`)."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    input_schema: ClassVar[dict[str, Any]] = {}  # JSON schema (2020-12) of `input`
    priority: ClassVar[int] = DEFAULT_PRIORITY  # its process's (lowered to a caller process's)
    syscalls: ClassVar[tuple[str, ...]] = ("llm.chat",)  # its process's capability
    token_budget: ClassVar[int | None] = None  # tokens in + out one call may use
    needs_input: ClassVar[bool] = False  # a call without input is refused (400) unstarted

    def seed(self) -> dict[str, str]:
        """Demo data, path -> text, written once to APP_DATA_OWNER's namespace
        (never over a path that was ever written: a user's edit or deletion stays)."""
        return {}

    async def run(self, ctx: AppContext, input: Any) -> Any:
        raise NotImplementedError

    async def default(self, ctx: AppContext) -> Any:
        """The answer to a call without input (unless `needs_input`)."""
        raise InvalidRequest(f"{self.name} needs an input", param="input")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "input_schema": self.input_schema,
            "needs_input": self.needs_input,
            "priority": self.priority,
            "syscalls": list(self.syscalls),
        }


@dataclasses.dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))
        self.requests += 1

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "requests": self.requests,
        }


@dataclasses.dataclass
class AppContext:
    """One app call: its process, its model, and its way into the kernel."""

    app: str
    owner: str  # the user the app runs for (its process's owner)
    pid: int
    model: str  # the model its LLM calls use
    context_length: int  # that model's window, in tokens
    syscall: SyscallFn  # as the app's process
    shared_syscall: SyscallFn  # as APP_DATA_OWNER: reads of the shared data only
    usage: Usage = dataclasses.field(default_factory=Usage)

    async def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """A syscall as this app's process; an LLM call returns {text, usage, …}."""
        return await self.syscall(name, args or {})

    async def chat(self, messages: list[dict[str, Any]], *, max_tokens: int, **params: Any) -> str:
        """The model's reply (greedy unless `temperature` is given), counted in usage."""
        args = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        args.setdefault("temperature", 0.0)
        args.update(params)
        out = await self.call("llm.chat", args)
        self.usage.add(out.get("usage") or {})
        return str(out.get("text") or "")

    async def read_data(self, path: str) -> DataFile | None:
        """The caller's own copy of `path` if they wrote one, else the shared copy
        in APP_DATA_OWNER's namespace; None if neither exists."""
        for who, call in ((self.owner, self.syscall), (APP_DATA_OWNER, self.shared_syscall)):
            args = {"path": path} if who == self.owner else {"path": path, "owner": who}
            try:
                info = await call("fs.read", args)
            except NotFound:
                continue
            text = info.get("content")
            if text is None:
                raise DataError(f"{who}'s {path} is not UTF-8 text", path)
            return DataFile(path, who, int(info.get("version") or 0), text)
        return None


@dataclasses.dataclass(frozen=True)
class DataFile:
    path: str
    owner: str  # whose copy: the caller's, or APP_DATA_OWNER's (shared)
    version: int
    text: str

    def source(self) -> dict[str, Any]:
        return {"path": self.path, "owner": self.owner, "version": self.version}


class DataError(InvalidRequest):
    """An app's data file (a knowledge base, a catalogue) cannot be used as it is,
    the caller's own copy or the shared one: a 400 whose `param` is the file's path
    and whose message says whose copy and what is wrong with it."""

    code = "invalid_app_data"

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, param=path)
