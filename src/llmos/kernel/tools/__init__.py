"""Tools: the drivers agents act through. A registry of named, JSON-schema-typed
tools (built-ins, MCP servers' tools) called through the kernel's access rules."""

from llmos.kernel.tools.registry import Tool, ToolRegistry

__all__ = ["Tool", "ToolRegistry"]
