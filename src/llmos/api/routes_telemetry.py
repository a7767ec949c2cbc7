"""Telemetry route: /v1/telemetry/export, aggregate telemetry with ε-differential
privacy (the `telemetry.export` syscall; kernel/privacy.py says what is released)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller
from llmos.params import MAX_EPSILON, MAX_EXPORT_HOURS

router = APIRouter(prefix="/v1/telemetry")


@router.get("/export")
async def telemetry_export(
    request: Request,
    epsilon: float | None = Query(
        None, description=f"The privacy budget this export spends: 0 < epsilon <= {MAX_EPSILON:g}."
    ),
    hours: int | None = Query(
        None, description=f"Past hours to cover, the current one included (1..{MAX_EXPORT_HOURS})."
    ),
    who: Caller = Depends(caller),
) -> Any:
    args = {"epsilon": epsilon, "hours": hours}
    return await kernel_of(request).call("telemetry.export", who, args)
