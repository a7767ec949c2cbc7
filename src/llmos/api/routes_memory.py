"""Memory routes: long-term memories (/v1/memories) and kernel-kept conversations
(/v1/processes/{pid}/messages, /context, /core)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import Owner, caller, kernel_of, namespace
from llmos.api.routes_llm import serve_request
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=64 * 1024)
    tags: list[str] | None = None
    meta: dict[str, Any] | None = None
    shared: bool = False
    pid: int | None = None


class MemoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(default=None, min_length=1, max_length=64 * 1024)
    tags: list[str] | None = None
    meta: dict[str, Any] | None = None


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=8192)
    k: int = Field(default=5, ge=1, le=100)
    tag: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1)
    model: str | None = None
    max_tokens: int = Field(default=256, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


class CoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    pinned: list[str] | None = None


@router.post("/memories", status_code=201)
async def add_memory(
    body: MemoryIn, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call(
        "mem.add", who, {**body.model_dump(exclude_none=True), **ns}
    )


@router.get("/memories")
async def list_memories(
    request: Request,
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
    tag: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Any:
    args = {"tag": tag, "limit": limit, "offset": offset}
    return {
        "object": "list",
        "data": await kernel_of(request).call("mem.list", who, {**args, **ns}),
    }


@router.post("/memories/search")
async def search_memories(
    body: SearchIn, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    data = await kernel_of(request).call(
        "mem.search", who, {**body.model_dump(exclude_none=True), **ns}
    )
    return {"object": "list", "data": data}


@router.get("/memories/{mid}")
async def get_memory(
    mid: int, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("mem.get", who, {"id": mid, **ns})


@router.patch("/memories/{mid}")
async def update_memory(
    mid: int,
    body: MemoryPatch,
    request: Request,
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> Any:
    args = {"id": mid, **body.model_dump(exclude_none=True)}
    return await kernel_of(request).call("mem.update", who, {**args, **ns})


@router.delete("/memories/{mid}")
async def delete_memory(
    mid: int, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("mem.delete", who, {"id": mid, **ns})


@router.post("/processes/{pid}/messages")
async def send_message(
    pid: int, body: MessageIn, request: Request, who: Caller = Depends(caller)
) -> Any:
    args = {"pid": pid, **body.model_dump(exclude_none=True, exclude={"stream"})}
    return await serve_request(request, who, "conv.send", args, body.stream, True)


@router.get("/processes/{pid}/messages")
async def history(pid: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return {
        "object": "list",
        "data": await kernel_of(request).call("conv.history", who, {"pid": pid}),
    }


@router.get("/processes/{pid}/context")
async def context(pid: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("conv.context", who, {"pid": pid})


@router.get("/processes/{pid}/core")
async def get_core(pid: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("conv.core", who, {"pid": pid})


@router.put("/processes/{pid}/core")
async def set_core(pid: int, body: CoreIn, request: Request, who: Caller = Depends(caller)) -> Any:
    args = {"pid": pid, **body.model_dump(exclude_none=True)}
    return await kernel_of(request).call("conv.core", who, args)
