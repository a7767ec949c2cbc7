"""The built-in tools. Those that touch kernel state go through the kernel's own
syscalls with the caller's rights (`file_read` is `fs.read` made by the caller), so
roles, capabilities, shares and the audit apply exactly as to a direct call; a
process whose capability lacks `fs.read` cannot read a file through a tool either.
Errors an inner syscall raises about one of its arguments name the tool's argument
(`arguments.path`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llmos.errors import InvalidRequest, LlmosError
from llmos.kernel.tools.arith import CalcError, evaluate
from llmos.kernel.tools.registry import Tool, ToolRegistry
from llmos.kernel.tools.sandbox import Sandbox
from llmos.params import (
    CALC_MAX_CHARS,
    MAX_PATH_BYTES,
    MAX_QUERY_CHARS,
    SANDBOX_MAX_CODE_BYTES,
    SANDBOX_MAX_TIMEOUT_S,
    SANDBOX_TIMEOUT_S,
)

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.tokens import Caller


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES}


async def _via(k: Kernel, c: Caller, syscall: str, args: dict[str, Any]) -> Any:
    """A syscall on the caller's behalf; its errors about an argument name the
    tool's argument."""
    try:
        return await k.call(syscall, c, args)
    except LlmosError as exc:
        if exc.param in args:
            exc.param = f"arguments.{exc.param}"
        raise


async def calculator(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    try:
        return {"expression": a["expression"], "result": evaluate(a["expression"])}
    except CalcError as exc:
        raise InvalidRequest(f"calculator: {exc}", param="arguments.expression") from None


async def current_time(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    now = datetime.now(UTC)
    out: dict[str, Any] = {"utc": now.isoformat(), "unix": now.timestamp()}
    name = a.get("timezone")
    if name is not None:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise InvalidRequest(
                f"time: unknown time zone {name!r} (an IANA name such as Europe/Paris)",
                param="arguments.timezone",
            ) from None
        local = now.astimezone(zone)
        out.update(timezone=name, local=local.isoformat(), weekday=local.strftime("%A"))
    else:
        out.update(timezone="UTC", local=now.isoformat(), weekday=now.strftime("%A"))
    return out


async def memory_search(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await _via(k, c, "mem.search", {"query": a["query"], "k": a.get("k", 5)})


async def file_read(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    got = await _via(k, c, "fs.read", {"path": a["path"]})
    out = {key: got[key] for key in ("path", "version", "size", "content")}
    if got["content"] is None:  # not UTF-8 text
        out["content_b64"] = got["content_b64"]
    return out


async def file_write(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await _via(k, c, "fs.write", {"path": a["path"], "content": a["content"]})


async def file_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await _via(k, c, "fs.list", {"prefix": a.get("prefix", "")})


def python_tool(sandbox: Sandbox) -> Tool:
    async def run(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
        code: str = a["code"]
        if len(code.encode("utf-8", "surrogatepass")) > SANDBOX_MAX_CODE_BYTES:
            raise InvalidRequest(
                f"python: code is larger than {SANDBOX_MAX_CODE_BYTES} bytes",
                param="arguments.code",
            )
        timeout = float(a.get("timeout_s", SANDBOX_TIMEOUT_S))
        done = await sandbox.run(code, timeout, hide=[k.settings.home])
        return done.to_dict()

    return Tool(
        "python",
        "Run Python 3 code in a sandbox (standard library only; no network, no "
        "processes; files only in a fresh empty directory, deleted after) and return "
        "its stdout, stderr, exit_code, timed_out and killed_by. print() what you need.",
        _schema(
            {
                "code": {"type": "string", "minLength": 1, "maxLength": SANDBOX_MAX_CODE_BYTES},
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": SANDBOX_MAX_TIMEOUT_S,
                    "description": f"wall-clock limit, seconds (default {SANDBOX_TIMEOUT_S:g})",
                },
            },
            ["code"],
        ),
        run,
    )


BUILTINS = (
    Tool(
        "calculator",
        "Evaluate an arithmetic expression exactly: numbers, + - * / // % **, "
        "parentheses, sqrt sin cos tan exp log log10 abs round floor ceil min max, pi e tau.",
        _schema({"expression": {"type": "string", "maxLength": CALC_MAX_CHARS}}, ["expression"]),
        calculator,
    ),
    Tool(
        "time",
        "The current date and time: UTC, and local time in an IANA time zone if given.",
        _schema(
            {"timezone": {"type": "string", "maxLength": 64, "description": "e.g. Europe/Paris"}},
            [],
        ),
        current_time,
    ),
    Tool(
        "memory_search",
        "Search your long-term memories; the k best matches, best first.",
        _schema(
            {
                "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                "k": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            ["query"],
        ),
        memory_search,
    ),
    Tool(
        "file_read",
        "Read one of your files in the kernel's storage (its current version).",
        _schema({"path": PATH}, ["path"]),
        file_read,
    ),
    Tool(
        "file_write",
        "Write text to one of your files in the kernel's storage (a new version).",
        _schema({"path": PATH, "content": {"type": "string"}}, ["path", "content"]),
        file_write,
    ),
    Tool(
        "file_list",
        "List your files in the kernel's storage, optionally under a path prefix.",
        _schema({"prefix": {"type": "string", "maxLength": MAX_PATH_BYTES}}, []),
        file_list,
    ),
)


def register_builtins(registry: ToolRegistry, sandbox: Sandbox | None = None) -> Sandbox:
    """Put the built-in tools in `registry`; returns the sandbox the python tool uses."""
    sandbox = sandbox or Sandbox()
    for tool in (*BUILTINS, python_tool(sandbox)):
        registry.register(tool, replace=True)
    return sandbox
