"""The tool registry: name -> Tool (JSON-schema parameters, an async handler that
runs with the caller's rights). Calls are validated against the schema before the
handler runs; tools run concurrently (no lock is held across a call)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from llmos.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.tokens import Caller

ToolHandler = Callable[["Kernel", "Caller", dict[str, Any]], Awaitable[Any]]
NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Tool:
    name: str  # e.g. "calculator", "mcp.weather.forecast"
    description: str
    parameters: dict[str, Any]  # a JSON schema for the arguments object
    handler: ToolHandler = field(repr=False)
    source: str = "builtin"  # "builtin" | "mcp:<server>" | "app:<name>"

    def spec(self) -> dict[str, Any]:
        """As listed to clients (and as OpenAI's `tools[].function`)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "source": self.source,
        }


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool, replace: bool = False) -> None:
        if not NAME.match(tool.name):
            raise InvalidRequest(f"bad tool name {tool.name!r}", param="name")
        if tool.name in self._tools and not replace:
            raise InvalidRequest(f"a tool named {tool.name!r} exists", param="name")
        jsonschema.Draft202012Validator.check_schema(tool.parameters)
        self._tools[tool.name] = tool

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def unregister_source(self, source: str) -> None:
        for name in [n for n, t in self._tools.items() if t.source == source]:
            del self._tools[name]

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise NotFound(f"no tool named {name!r}; tools: {known}", param="name")
        return tool

    def listing(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def validate(self, tool: Tool, args: Any) -> dict[str, Any]:
        if not isinstance(args, dict):
            raise InvalidRequest("arguments must be a JSON object", param="arguments")
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(tool.parameters).iter_errors(args)
        )
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            param = "arguments" + (f".{where}" if where else "")
            message = error.message
            if len(message) > 300:  # jsonschema quotes the whole value: keep its head
                shown = repr(error.instance)
                message = message.replace(shown, shown[:40] + "…'")[:300]
            raise InvalidRequest(f"{tool.name}: {message}", param=param)
        return args

    async def call(self, k: Kernel, caller: Caller, name: str, args: Any) -> Any:
        tool = self.get(name)
        return await tool.handler(k, caller, self.validate(tool, args))
