"""Auto-tuning routes: POST /v1/tune (admin) runs a tuning, GET /v1/tune/history
lists the decisions (kernel/tuner.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class TuneRequest(BaseModel):
    """Measure a device's settings and move to better ones (admin)."""

    model_config = ConfigDict(extra="forbid")
    device: str | None = Field(
        default=None, min_length=1, description="A device's name; default: the first tunable."
    )
    dry_run: bool = Field(
        default=False, strict=True, description="Measure and report; change nothing."
    )
    max_seconds: float | None = Field(
        default=None, ge=5, le=600, description="The calibration's time budget (default 60)."
    )


@router.post("/tune")
async def tune(body: TuneRequest, request: Request, who: Caller = Depends(caller)) -> Any:
    args = body.model_dump(exclude_none=True)
    return await kernel_of(request).call("tune.run", who, args)


@router.get("/tune/history")
async def tune_history(
    request: Request,
    limit: int = Query(50, ge=1, le=1000, description="Most decisions to return."),
    device: str | None = Query(None, min_length=1, description="Only this device's."),
    who: Caller = Depends(caller),
) -> Any:
    args: dict[str, Any] = {"limit": limit, "device": device}
    data = await kernel_of(request).call("tune.history", who, args)
    return {"object": "list", "data": data}
