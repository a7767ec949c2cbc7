"""Anomaly alerts: GET /v1/alerts, POST /v1/alerts/{alert_id}/clear (kernel/anomaly.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller
from llmos.kernel.alert_syscalls import MAX_ALERT_LIST

router = APIRouter(prefix="/v1")


@router.get("/alerts")
async def list_alerts(
    request: Request,
    active_only: bool = Query(False, description="Only alerts not cleared yet."),
    limit: int = Query(100, ge=1, le=MAX_ALERT_LIST, description="Newest this many."),
    who: Caller = Depends(caller),
) -> Any:
    args = {"active_only": active_only, "limit": limit}
    return await kernel_of(request).call("alert.list", who, args)


@router.post("/alerts/{alert_id}/clear")
async def clear_alert(alert_id: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("alert.clear", who, {"id": alert_id})
