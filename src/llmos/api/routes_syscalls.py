"""The syscall table over HTTP, for generic clients (the shell, the MCP server,
scripts): `GET /v1/syscalls` lists it, `POST /v1/syscalls/{name}` makes one call
with the JSON body as its arguments. An LLM call is run to its end."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller
from llmos.kernel.syscalls import call_json, describe

router = APIRouter(prefix="/v1")


@router.get("/syscalls")
async def list_syscalls(who: Caller = Depends(caller)) -> dict[str, Any]:
    return {"object": "list", "data": describe(who)}


@router.post("/syscalls/{name}")
async def make_syscall(
    name: str,
    request: Request,
    args: dict[str, Any] = Body(default_factory=dict),
    who: Caller = Depends(caller),
) -> Any:
    return {"result": await call_json(kernel_of(request), name, who, args)}
