"""File routes: /v1/files (raw bytes in and out) and its metadata, history and
search companions. Each is one `fs.*` syscall; paths are checked by the kernel."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, StrictInt
from starlette.convertors import PathConvertor, register_url_convertor

from llmos.api.auth import Owner, caller, kernel_of, namespace
from llmos.kernel import Caller
from llmos.params import MAX_SEARCH_LIMIT


class _AnyPath(PathConvertor):
    """`path`, newlines included: Starlette's `.*` stops at a newline, which would
    turn `a%0Ab` into a bare 404 instead of the kernel's 400 naming `path`."""

    regex = "[\\s\\S]*"


# Starlette keeps convertors in one table by name; registering is idempotent.
register_url_convertor("fspath", _AnyPath())

router = APIRouter(prefix="/v1")


class RollbackRequest(BaseModel):
    version: StrictInt


def _listing(data: Any) -> dict[str, Any]:
    return {"object": "list", "data": data}


# GET /v1/files is routed by routes_batches.py: this listing when called bare or with
# `prefix`, OpenAI's list of file objects when called with `purpose`, `after`, `limit`…
async def list_files(
    request: Request,
    prefix: str = "",
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> dict[str, Any]:
    return _listing(await kernel_of(request).call("fs.list", who, {"prefix": prefix, **ns}))


@router.put("/files/{path:fspath}")
async def write_file(
    path: str, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    """The request body, as is, is the file's new content (BodyGuard caps its size)."""
    body = await request.body()
    args = {"path": path, "content_b64": base64.b64encode(body).decode("ascii")}
    return await kernel_of(request).call("fs.write", who, {**args, **ns})


@router.get(
    "/files/{path:fspath}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def read_file(
    path: str,
    request: Request,
    version: int | None = None,
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> Response:
    got = await kernel_of(request).call("fs.read", who, {"path": path, "version": version, **ns})
    headers = {
        "X-Llmos-Version": str(got["version"]),
        "X-Llmos-Sha256": got["sha256"],
        "ETag": f'"{got["sha256"]}"',
    }
    return Response(
        base64.b64decode(got["content_b64"]),
        media_type="application/octet-stream",
        headers=headers,
    )


@router.delete("/files/{path:fspath}")
async def delete_file(
    path: str, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("fs.delete", who, {"path": path, **ns})


@router.get("/files-meta/{path:fspath}")
async def stat_file(
    path: str, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> Any:
    return await kernel_of(request).call("fs.stat", who, {"path": path, **ns})


@router.get("/files-versions/{path:fspath}")
async def file_versions(
    path: str, request: Request, ns: Owner = Depends(namespace), who: Caller = Depends(caller)
) -> dict[str, Any]:
    return _listing(await kernel_of(request).call("fs.versions", who, {"path": path, **ns}))


@router.post("/files-rollback/{path:fspath}")
async def rollback_file(
    path: str,
    body: RollbackRequest,
    request: Request,
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> Any:
    args = {"path": path, "version": body.version}
    return await kernel_of(request).call("fs.rollback", who, {**args, **ns})


@router.get("/files-search")
async def search_files(
    request: Request,
    q: str = Query(min_length=1),
    limit: int = Query(10, ge=1, le=MAX_SEARCH_LIMIT),
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> dict[str, Any]:
    args = {"query": q, "limit": limit}
    return _listing(await kernel_of(request).call("fs.search", who, {**args, **ns}))
