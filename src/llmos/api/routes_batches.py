"""OpenAI's Files and Batch APIs: /v1/files (file objects `file-<hex>`) and
/v1/batches. Each route is one `file.*` / `batch.*` syscall (the batch's input
file is read and parsed here, batch_format.py).

/v1/files is shared with the path-addressed file store (routes_files.py). This
router is included first and claims only what is OpenAI's:
- `POST /v1/files` (multipart upload; the store writes with PUT);
- `GET|DELETE /v1/files/{id}` and `GET /v1/files/{id}/content` where the id is
  `file-` and lowercase hex (a store path of exactly that form is shadowed);
- `GET /v1/files` answers OpenAI's list of file objects when called with any of
  `purpose`, `after`, `limit`, `order`; bare (or with `prefix`) it is the store's
  listing, as before."""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.convertors import StringConvertor, register_url_convertor

from llmos.api import routes_files
from llmos.api.auth import Owner, caller, kernel_of, namespace
from llmos.api.batch_format import parse_file, render_file
from llmos.errors import InvalidRequest, NotFound
from llmos.kernel import Caller
from llmos.params import MAX_JOB_LIST


class _FileId(StringConvertor):
    regex = "file-[0-9a-f]+"


register_url_convertor("oaifile", _FileId())  # idempotent: one table by name

router = APIRouter(prefix="/v1")


def _page(data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(data) == limit,
    }


@router.post("/files")
async def upload_file(
    request: Request,
    file: UploadFile = File(..., description="The file; for batches, JSONL requests."),
    purpose: str = Form(..., description="batch (or another OpenAI purpose)."),
    who: Caller = Depends(caller),
) -> Any:
    data = await file.read()  # BodyGuard has capped the request's size
    args = {
        "purpose": purpose,
        "filename": file.filename or "upload",
        "content_b64": base64.b64encode(data).decode("ascii"),
    }
    return await kernel_of(request).call("file.create", who, args)


@router.get("/files")
async def list_files(
    request: Request,
    prefix: str | None = None,
    purpose: str | None = None,
    after: str | None = None,
    limit: int | None = Query(None, ge=1, le=MAX_JOB_LIST),
    order: Literal["asc", "desc"] | None = None,
    ns: Owner = Depends(namespace),
    who: Caller = Depends(caller),
) -> Any:
    if prefix is not None or (purpose, after, limit, order) == (None, None, None, None):
        return await routes_files.list_files(request, prefix or "", ns, who)
    n = limit or 100
    args = {"purpose": purpose, "after": after, "limit": n}
    data = await kernel_of(request).call("file.list", who, args)
    if order == "asc":
        data.reverse()
    return _page(data, n)


async def _file(request: Request, who: Caller, file_id: str) -> dict[str, Any]:
    """The file object; a generated result file's `bytes` is its rendered size."""
    f: dict[str, Any] = await kernel_of(request).call("file.get", who, {"file_id": file_id})
    if f.get("batch_id"):
        f["bytes"] = len(await _content(request, who, file_id))
    return f


async def _content(request: Request, who: Caller, file_id: str) -> bytes:
    got = await kernel_of(request).call("file.content", who, {"file_id": file_id})
    if "records" in got:
        return render_file(got["batch"]["id"], got["records"])
    return base64.b64decode(got["content_b64"])


@router.get("/files/{file_id:oaifile}")
async def get_file(file_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await _file(request, who, file_id)


@router.get(
    "/files/{file_id:oaifile}/content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def file_content(file_id: str, request: Request, who: Caller = Depends(caller)) -> Response:
    """The bytes as uploaded; a batch's output or error file: its JSONL lines."""
    return Response(await _content(request, who, file_id), media_type="application/octet-stream")


@router.delete("/files/{file_id:oaifile}")
async def delete_file(file_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("file.delete", who, {"file_id": file_id})


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_file_id: StrictStr
    endpoint: StrictStr
    completion_window: StrictStr
    metadata: dict[str, StrictStr] | None = None


ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


@router.post("/batches")
async def create_batch(body: BatchCreate, request: Request, who: Caller = Depends(caller)) -> Any:
    """The input file is parsed here; its unusable lines go to the error file."""
    if body.endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"endpoint must be one of {', '.join(ENDPOINTS)} (this kernel serves no embeddings)",
            param="endpoint",
        )
    if body.completion_window != "24h":
        raise InvalidRequest('completion_window must be "24h"', param="completion_window")
    kernel = kernel_of(request)
    try:
        got = await kernel.call("file.content", who, {"file_id": body.input_file_id})
    except NotFound as exc:
        exc.param = "input_file_id"
        raise
    if "records" in got:
        raise InvalidRequest("a batch's result file cannot be its input", param="input_file_id")
    lines = parse_file(base64.b64decode(got["content_b64"]), body.endpoint)
    args = {**body.model_dump(), "lines": lines}
    return await kernel.call("batch.create", who, args)


@router.get("/batches")
async def list_batches(
    request: Request,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=MAX_JOB_LIST),
    who: Caller = Depends(caller),
) -> Any:
    data = await kernel_of(request).call("batch.list", who, {"after": after, "limit": limit})
    return _page(data, limit)


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("batch.get", who, {"batch_id": batch_id})


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("batch.cancel", who, {"batch_id": batch_id})
