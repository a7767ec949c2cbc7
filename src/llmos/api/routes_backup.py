"""Backup routes (admins): POST /v1/backups makes one, GET /v1/backups lists them,
GET /v1/backups/stream makes a fresh one and sends it as a tar (what a warm
standby pulls: kernel/standby.py)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class BackupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(
        None, description="The backup's name under LLMOS_HOME/backups; default: the UTC time"
    )
    include_key: bool = Field(False, description="Carry the master key (the backup then reads)")


@router.post("/backups", status_code=201)
async def create_backup(body: BackupBody, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("backup.create", who, body.model_dump(exclude_none=True))


@router.get("/backups")
async def list_backups(request: Request, who: Caller = Depends(caller)) -> Any:
    return {"object": "list", "data": await kernel_of(request).call("backup.list", who)}


def _tar(src: Path, out: Path) -> None:
    with tarfile.open(out, "w") as tar:
        for f in sorted(src.iterdir()):
            tar.add(f, arcname=f.name)


@router.get(
    "/backups/stream",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "A tar of the backup"}},
)
async def stream_backup(
    request: Request,
    include_key: bool = Query(False, description="Carry the master key"),
    who: Caller = Depends(caller),
) -> Any:
    """A fresh snapshot as an uncompressed tar; the kernel's copy is removed once sent."""
    args = {"to": f"stream-{secrets.token_hex(8)}", "include_key": include_key}
    made = await kernel_of(request).call("backup.create", who, args)
    snap = Path(made["path"])
    work = Path(tempfile.mkdtemp(prefix="llmos-backup-"))
    try:
        await asyncio.to_thread(_tar, snap, work / "snap.tar")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(snap, ignore_errors=True)
    return FileResponse(
        work / "snap.tar",
        media_type="application/x-tar",
        filename="llmos-backup.tar",
        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True),
    )
