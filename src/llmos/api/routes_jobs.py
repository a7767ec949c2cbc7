"""Batch job routes: /v1/jobs. Each is one `job.*` syscall.

A job is one OpenAI request run in the background and kept in the kernel's crash-safe
journal: `POST /v1/jobs {"endpoint": "/v1/chat/completions", "body": {...}}` answers
202 once the job is on disk. A completed job's `result` is the response object the
endpoint itself would have returned (chat.completion or text_completion)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from llmos.api.auth import caller, kernel_of
from llmos.api.errors import _param
from llmos.api.openai_format import completion_body, openai_reply, reply_body, usage_of
from llmos.api.schemas import ChatRequest, CompletionRequest
from llmos.errors import InvalidRequest
from llmos.kernel import Caller
from llmos.kernel.toolcalls import interpret, plan_of
from llmos.params import MAX_JOB_LIST
from llmos.types import Token, TopLogprob

router = APIRouter(prefix="/v1")

Endpoint = Literal["/v1/chat/completions", "/v1/completions"]
KINDS: dict[str, tuple[str, type[ChatRequest] | type[CompletionRequest]]] = {
    "/v1/chat/completions": ("chat", ChatRequest),
    "/v1/completions": ("completion", CompletionRequest),
}
ENDPOINTS = {kind: endpoint for endpoint, (kind, _) in KINDS.items()}


class JobCreate(BaseModel):
    """One request to run as a job, as a line of an OpenAI batch input file."""

    model_config = ConfigDict(extra="forbid")
    endpoint: Endpoint
    body: dict[str, Any]


def _kernel_args(job: JobCreate) -> tuple[str, dict[str, Any]]:
    """Check `body` as the endpoint itself would; errors name `body.<field>`."""
    kind, schema = KINDS[job.endpoint]
    try:
        parsed = schema.model_validate(job.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _param(tuple(first.get("loc", ())))
        param = f"body.{field}" if field else "body"
        problem = "missing required field" if first.get("type") == "missing" else first["msg"]
        raise InvalidRequest(f"{param}: {problem}", param=param) from None
    if parsed.stream:
        raise InvalidRequest(
            "a job cannot stream: its result is kept for GET /v1/jobs/{id}", param="body.stream"
        )
    if getattr(parsed, "llmos_execute_tools", False):
        raise InvalidRequest(
            "a job cannot run tools in the kernel: its tool calls are returned",
            param="body.llmos_execute_tools",
        )
    return kind, parsed.kernel_args()


def _token(t: dict[str, Any]) -> Token:
    def raw(b: list[int] | None) -> tuple[int, ...] | None:
        return None if b is None else tuple(b)

    top = tuple(
        TopLogprob(a["id"], a["token"], a["logprob"], raw(a.get("bytes"))) for a in t["top"]
    )
    return Token(t["id"], t["text"], t["piece"], t["logprob"], raw(t.get("bytes")), top)


def _response(job: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """The stored outcome as OpenAI's response object; the same on every GET."""
    kind = job["kind"]
    logprobs = None
    if raw.get("tokens") is not None:
        k = int(job["request"].get("top_logprobs") or 0)
        logprobs = ([_token(t) for t in raw["tokens"]], k)
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    id_ = prefix + job["id"].removeprefix("job-")
    usage = usage_of(raw["prompt_tokens"], raw["completion_tokens"], raw["cached_tokens"])
    plan = plan_of(job["request"]) if kind == "chat" else None
    if plan is not None and plan.constrained:  # tool calling: content or tool_calls
        reply = interpret(plan, raw["text"], raw["finish_reason"], id_)
        return reply_body(id_, raw["created"], raw["model"], openai_reply(reply), usage)
    return completion_body(
        kind,
        id_,
        raw["created"],
        raw["model"],
        raw["text"],
        raw["finish_reason"],
        logprobs,
        usage,
    )


def render(job: dict[str, Any]) -> dict[str, Any]:
    out = {**job, "endpoint": ENDPOINTS.get(job["kind"])}
    if job.get("result") is not None:
        out["result"] = _response(job, job["result"])
    return out


@router.post("/jobs", status_code=202)
async def submit_job(
    body: JobCreate,
    request: Request,
    idempotency_key: Annotated[str | None, Header()] = None,
    who: Caller = Depends(caller),
) -> Any:
    """202 once the job is journaled (on disk). With an `Idempotency-Key` used before
    for the same request: that job again, and `Idempotent-Replayed: true`."""
    kind, args = _kernel_args(body)
    sys_args = {"kind": kind, "body": args, "idempotency_key": idempotency_key}
    job = await kernel_of(request).call("job.submit", who, sys_args)
    replayed = bool(job.pop("replayed", False))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(render(job), status_code=202, headers=headers)


@router.get("/jobs")
async def list_jobs(
    request: Request,
    status: str | None = None,
    limit: int = Query(100, ge=1, le=MAX_JOB_LIST),
    before: str | None = None,
    owner: str | None = None,
    who: Caller = Depends(caller),
) -> dict[str, Any]:
    """Newest first; `before`: the last id of the previous page."""
    args = {"status": status, "limit": limit, "before": before, "owner": owner}
    data = await kernel_of(request).call("job.list", who, args)
    return {"object": "list", "data": [render(j) for j in data]}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return render(await kernel_of(request).call("job.get", who, {"id": job_id}))


@router.delete("/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return render(await kernel_of(request).call("job.cancel", who, {"id": job_id}))
