"""The predictor's routes: GET /v1/learn/stats, POST /v1/learn/train (admins)
(`learn.stats`, `learn.train`; kernel/learn_syscalls.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1/learn")


@router.get("/stats")
async def learn_stats(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("learn.stats", who)


@router.post("/train")
async def learn_train(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("learn.train", who)
