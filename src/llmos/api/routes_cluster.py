"""Cluster routes: GET /v1/cluster (replica groups, placement, recent scaling
events), GET /v1/cluster/events, POST /v1/cluster/scale (admin; kernel/fleet.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class ScaleRequest(BaseModel):
    """Add or drain replicas of a group until it has `replicas` (admin)."""

    model_config = ConfigDict(extra="forbid")
    group: str = Field(min_length=1, description="The replica group's name.")
    replicas: int = Field(
        strict=True, ge=0, description="How many replicas, within the group's min..max."
    )


@router.get("/cluster")
async def cluster_status(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("cluster.status", who)


@router.get("/cluster/events")
async def cluster_events(
    request: Request,
    limit: int = Query(50, ge=1, le=1000, description="Most events to return."),
    group: str | None = Query(None, min_length=1, description="Only this group's."),
    who: Caller = Depends(caller),
) -> Any:
    args: dict[str, Any] = {"limit": limit, "group": group}
    data = await kernel_of(request).call("cluster.events", who, args)
    return {"object": "list", "data": data}


@router.post("/cluster/scale")
async def cluster_scale(body: ScaleRequest, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("cluster.scale", who, body.model_dump())
