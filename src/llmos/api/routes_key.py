"""Encryption-at-rest routes: /v1/sys/key (status) and /v1/sys/key/rotate. Each is
one `key.*` syscall; both are for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1/sys")


@router.get("/key")
async def key_status(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("key.status", who)


@router.post("/key/rotate")
async def key_rotate(request: Request, who: Caller = Depends(caller)) -> Any:
    """A new data key, active at once; rows are re-encrypted in the background
    (`GET /v1/sys/key` shows how many are left)."""
    return await kernel_of(request).call("key.rotate", who)
