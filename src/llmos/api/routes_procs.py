"""Process and system routes: /v1/processes, /v1/sys/* (top and history: kernel/sysmon.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from llmos.api.auth import caller, kernel_of
from llmos.api.schemas import Renice, SchedulerUpdate, SpawnRequest
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


@router.get("/processes")
async def list_processes(request: Request, who: Caller = Depends(caller)) -> Any:
    data = await kernel_of(request).call("proc.list", who)
    return {"object": "list", "data": data}


@router.post("/processes", status_code=201)
async def spawn(body: SpawnRequest, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("proc.spawn", who, body.model_dump(exclude_none=True))


@router.get("/processes/{pid}")
async def get_process(pid: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("proc.get", who, {"pid": pid})


@router.delete("/processes/{pid}")
async def kill_process(pid: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("proc.kill", who, {"pid": pid})


@router.post("/processes/{pid}/renice")
async def renice_process(
    pid: int, body: Renice, request: Request, who: Caller = Depends(caller)
) -> Any:
    args = {"pid": pid, "priority": body.priority}
    return await kernel_of(request).call("proc.renice", who, args)


@router.get("/sys/top")
async def sys_top(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("sys.top", who)


@router.get("/sys/history")
async def sys_history(
    request: Request,
    seconds: float = Query(600, gt=0, le=86400, description="How far back, in seconds."),
    who: Caller = Depends(caller),
) -> Any:
    return await kernel_of(request).call("sys.history", who, {"seconds": seconds})


@router.get("/sys/info")
async def sys_info(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("sys.info", who)


@router.get("/sys/devices")
async def sys_devices(request: Request, who: Caller = Depends(caller)) -> Any:
    return {"object": "list", "data": await kernel_of(request).call("sys.devices", who)}


@router.get("/sys/scheduler")
async def get_scheduler(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("sched.get", who)


@router.put("/sys/scheduler")
async def set_scheduler(
    body: SchedulerUpdate, request: Request, who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("sched.set", who, body.model_dump(exclude_none=True))
