"""/v1/chat/completions with `llmos_execute_tools: true`: the kernel runs the
model's calls of its registered tools (the `llm.chat_tools` syscall) and the
answer is rendered as OpenAI's chat.completion, or as a stream of chunks sent
when the loop has ended, with llmos's extension field `llmos_executed_tools`
(every call the kernel ran: id, name, arguments, result, error). Calls of tools
the kernel does not hold come back as ordinary `tool_calls`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request

from llmos.api.auth import kernel_of
from llmos.api.errors import error_response
from llmos.api.openai_format import new_id, reply_body, reply_chunks, usage_of
from llmos.api.sse import DONE, EventStream, sse
from llmos.errors import Killed, LlmosError
from llmos.kernel import Caller


async def _watched(http: Request, work: asyncio.Task[Any]) -> Any:
    """The task's result; if the client hangs up first, the task is cancelled (and
    with it the generation or tool call in progress)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass
        gone.set()
        work.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        raise Killed("the client disconnected") from None
    finally:
        watcher.cancel()


async def serve(
    http: Request, who: Caller, args: dict[str, Any], stream: bool, include_usage: bool
) -> Any:
    kernel = kernel_of(http)
    work = asyncio.ensure_future(kernel.call("llm.chat_tools", who, args))
    try:
        result = await _watched(http, work)
    except LlmosError as e:
        return error_response(e)
    id_, created, model = new_id("chat"), int(time.time()), result["model"]
    u = result["usage"]
    usage = usage_of(u["prompt_tokens"], u["completion_tokens"], u["cached_tokens"])
    if not stream:
        body = reply_body(id_, created, model, result, usage)
        body["llmos_executed_tools"] = result["executed"]
        return body
    chunks = reply_chunks(id_, created, model, result, include_usage)
    chunks[-1]["llmos_executed_tools"] = result["executed"]
    if include_usage:
        chunks.append({**chunks[-1], "choices": [], "usage": usage})
        del chunks[-1]["llmos_executed_tools"]

    async def events() -> AsyncGenerator[bytes, None]:
        for chunk in chunks:
            yield sse(chunk)
        yield DONE

    return EventStream(events())
