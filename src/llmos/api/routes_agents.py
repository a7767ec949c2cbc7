"""Agent routes: run a program as a process and follow it. Each is one syscall
(kernel/agent_syscalls.py): `POST /v1/processes/exec` (proc.exec), and for a pid
`GET .../logs` (proc.logs), `POST .../signal` (proc.signal), `POST .../wait`
(proc.wait: 408 `still_running` when its timeout passes first)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller
from llmos.params import (
    AGENT_LOG_READ_BYTES,
    MAX_AGENT_ARGS,
    MAX_AGENT_CPU_S,
    MAX_AGENT_ENV,
    MAX_AGENT_MEM_MB,
    MAX_NAME_LEN,
    MAX_PATH_BYTES,
    MAX_PRIORITY,
    MAX_WAIT_S,
    MIN_AGENT_MEM_MB,
)

router = APIRouter(prefix="/v1")


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=MAX_PATH_BYTES)  # absolute, kernel's machine
    args: list[str] = Field(default_factory=list, max_length=MAX_AGENT_ARGS)
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LEN)
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)
    token_budget: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    cpu_s: float | None = Field(default=None, gt=0, le=MAX_AGENT_CPU_S)  # RLIMIT_CPU
    mem_mb: int | None = Field(default=None, ge=MIN_AGENT_MEM_MB, le=MAX_AGENT_MEM_MB)
    capabilities: dict[str, Any] | None = None  # as proc.spawn's; never wider than yours
    env: dict[str, str] | None = Field(default=None, max_length=MAX_AGENT_ENV)


class WaitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float | None = Field(default=None, ge=0, le=MAX_WAIT_S)


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: Literal["suspend", "resume", "term", "kill"]


@router.post("/processes/exec", status_code=201)
async def exec_program(body: ExecRequest, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("proc.exec", who, body.model_dump(exclude_none=True))


@router.get("/processes/{pid}/logs")
async def program_logs(
    pid: int,
    request: Request,
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: int | None = Query(None, ge=0, description="follow: the last answer's next_offset"),
    tail: int | None = Query(None, ge=0, description="only the last this many lines"),
    max_bytes: int | None = Query(None, ge=1, le=AGENT_LOG_READ_BYTES),
    who: Caller = Depends(caller),
) -> Any:
    args = {"pid": pid, "stream": stream, "offset": offset, "tail": tail, "max_bytes": max_bytes}
    return await kernel_of(request).call("proc.logs", who, args)


@router.post("/processes/{pid}/signal")
async def signal_process(
    pid: int, body: SignalRequest, request: Request, who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("proc.signal", who, {"pid": pid, "signal": body.signal})


@router.post("/processes/{pid}/wait")
async def wait_process(
    pid: int, body: WaitRequest, request: Request, who: Caller = Depends(caller)
) -> Any:
    args = {"pid": pid, **body.model_dump(exclude_none=True)}
    return await kernel_of(request).call("proc.wait", who, args)
