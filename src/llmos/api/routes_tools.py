"""Tool routes: `GET /v1/tools` lists the tools (name, description, JSON-schema
parameters, source); `POST /v1/tools/{name}/call {"arguments": {...}}` calls one
and answers `{"object": "tool.result", "name", "result"}`. Each is one `tool.*`
syscall, so a tool runs with the caller's rights."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict)


@router.get("/tools")
async def list_tools(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    return {"object": "list", "data": await kernel_of(request).call("tool.list", who, {})}


@router.post("/tools/{name}/call")
async def call_tool(
    name: str, request: Request, body: ToolCall | None = None, who: Caller = Depends(caller)
) -> dict[str, Any]:
    arguments = {} if body is None else body.arguments
    args = {"name": name, "arguments": arguments}
    result = await kernel_of(request).call("tool.call", who, args)
    return {"object": "tool.result", "name": name, "result": result}
