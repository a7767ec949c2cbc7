"""MCP server routes: /v1/mcp. Each is one `mcp.*` syscall; only admins attach,
restart and detach (a server is a command run on the host as the kernel's user).
The tools of an attached server are called like any tool: /v1/tools/{name}/call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class McpAttach(BaseModel):
    """An MCP server to attach: a stdio command, as in Claude desktop's mcpServers."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Its tools are named mcp.<name>.<tool>.")
    command: str = Field(description="The program to run, e.g. npx, uvx or a path.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")


@router.get("/mcp")
async def list_mcp(request: Request, who: Caller = Depends(caller)) -> Any:
    return {"object": "list", "data": await kernel_of(request).call("mcp.list", who)}


@router.post("/mcp", status_code=201)
async def add_mcp(body: McpAttach, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("mcp.add", who, body.model_dump())


@router.post("/mcp/{name}/restart")
async def restart_mcp(name: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("mcp.restart", who, {"name": name})


@router.delete("/mcp/{name}")
async def remove_mcp(name: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("mcp.remove", who, {"name": name})
