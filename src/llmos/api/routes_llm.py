"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Depends, Request

from llmos.api import chat_tools
from llmos.api.auth import caller, kernel_of
from llmos.api.errors import error_response
from llmos.api.openai_format import Renderer
from llmos.api.responses import ChatCompletion, Completion, Model, ModelList, streamed
from llmos.api.schemas import ChatRequest, CompletionRequest
from llmos.api.sse import DONE, EventStream, sse
from llmos.errors import LlmosError
from llmos.kernel import Caller, Delta, Done, Kernel
from llmos.kernel import Request as KRequest
from llmos.kernel.toolcalls import plan_of
from llmos.types import Token

router = APIRouter(prefix="/v1")


async def _collect(kernel: Kernel, req: KRequest, http: Request) -> list[Token]:
    """Wait for the whole answer; if the client hangs up first, stop the generation."""

    async def watch() -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass
        kernel.cancel(req, "the client disconnected")

    watcher = asyncio.create_task(watch())
    tokens: list[Token] = []
    try:
        while True:
            event = await req.events.get()
            if isinstance(event, Done):
                if event.error is not None:
                    raise event.error
                return tokens
            tokens.extend(event.tokens)
    finally:
        watcher.cancel()
        if not req.state.finished:
            kernel.cancel(req)


async def _stream(
    kernel: Kernel, req: KRequest, render: Renderer, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    usage_field = include_usage
    try:
        first = render.first_chunk(usage_field)
        if first is not None:
            yield sse(first)
        while True:
            event = await req.events.get()
            if isinstance(event, Delta):
                if not render.buffered and (event.text or render.want_logprobs):
                    yield sse(render.delta_chunk(event, usage_field))
                continue
            if event.error is not None:
                yield sse(event.error.to_dict())
            else:
                for chunk in render.final_chunks(usage_field):
                    yield sse(chunk)
                if include_usage:
                    yield sse(render.usage_chunk())
            break
        yield DONE
    finally:
        # The client went away (or we are done): never leave a generation running.
        if not req.state.finished:
            kernel.cancel(req)


async def serve_request(
    http: Request, who: Caller, name: str, args: dict[str, Any], stream: bool, usage: bool
) -> Any:
    kernel = kernel_of(http)
    req: KRequest = await kernel.call(name, who, args)
    render = Renderer(req, req.model, plan_of(args) if req.kind == "chat" else None)
    if stream:
        return EventStream(_stream(kernel, req, render, usage))
    try:
        tokens = await _collect(kernel, req, http)
    except LlmosError as e:
        return error_response(e)
    return render.response(tokens)


@router.post("/chat/completions", responses=streamed(ChatCompletion))
async def chat_completions(
    body: ChatRequest, request: Request, who: Caller = Depends(caller)
) -> Any:
    usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.llmos_execute_tools:
        return await chat_tools.serve(request, who, body.kernel_args(), body.stream, usage)
    return await serve_request(request, who, "llm.chat", body.kernel_args(), body.stream, usage)


@router.post("/completions", responses=streamed(Completion))
async def completions(
    body: CompletionRequest, request: Request, who: Caller = Depends(caller)
) -> Any:
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return await serve_request(request, who, "llm.complete", body.kernel_args(), body.stream, usage)


def _models(kernel: Kernel, infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model object per id (sys.models has one row per device), with what the
    devices serving it can take between them (`capabilities`, llmos's extension)."""
    out: dict[str, dict[str, Any]] = {}
    for info in infos:
        entry = out.setdefault(
            info["id"],
            {
                "id": info["id"],
                "object": "model",
                "created": int(kernel.started_at),
                "owned_by": "llmos",
                "capabilities": [],
            },
        )
        caps = entry["capabilities"]
        caps.extend(c for c in info.get("capabilities", ()) if c not in caps)
    return list(out.values())


@router.get("/models", responses={200: {"model": ModelList}})
async def models(request: Request, who: Caller = Depends(caller)) -> Any:
    kernel = kernel_of(request)
    infos = await kernel.call("sys.models", who)
    return {"object": "list", "data": _models(kernel, infos)}


@router.get("/models/{model_id:path}", responses={200: {"model": Model}})
async def model(model_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    kernel = kernel_of(request)
    kernel.device_for(model_id)
    infos = await kernel.call("sys.models", who)
    return next(m for m in _models(kernel, infos) if m["id"] == model_id)
