"""Kernel-side execution of a chat's tool calls: the `llm.chat_tools` syscall (the
HTTP API's `llmos_execute_tools: true`). Without it, tool calls go back to the
client, as in OpenAI's API (toolcalls.py).

The loop: generate (an `llm.chat` syscall) -> if the answer calls a tool of the
kernel's registry, run it (a `tool.call` syscall, so the caller's role and
capability apply and denials are audited) -> append the call and its result to the
conversation -> generate again. The first round uses the request's tool_choice,
later ones "auto"; after MAX_TOOL_ROUNDS executed calls one last round with
tool_choice "none" forces a text answer; so does a call the kernel has already
run (same name and arguments): its result is in the conversation, and a model
repeating a call is looping. A call of a tool the registry does not hold ends the
loop: it is returned to the client like any tool call. A tool that fails is not
an error of the chat: the model sees "error: <message>" as the result.

Result (plain JSON): {model, pid, content, tool_calls, finish_reason, usage (summed
over the rounds), executed: [{id, name, arguments, result, error}], rounds}."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, LlmosError, NotFound
from llmos.kernel import toolcalls
from llmos.kernel.request import Request
from llmos.kernel.sysdefs import ALL, Syscall
from llmos.kernel.tokens import Caller
from llmos.params import MAX_TOOL_ROUNDS

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


async def _generate(k: Kernel, c: Caller, args: dict[str, Any]) -> Request:
    """One round, run to its end (cancelled with the caller)."""
    req: Request = await k.call("llm.chat", c, args)
    try:
        done = await req.outcome()
    except asyncio.CancelledError:
        k.cancel(req)
        raise
    if done.error is not None:
        raise done.error
    return req


def _registered(k: Kernel, name: str) -> bool:
    try:
        k.tools.get(name)
    except NotFound:
        return False
    return True


async def _execute(k: Kernel, c: Caller, call: toolcalls.ToolCall) -> dict[str, Any]:
    """Run one call with the caller's rights; its outcome as the model will see it."""
    try:
        result = await k.call("tool.call", c, {"name": call.name, "arguments": call.arguments})
    except LlmosError as e:
        error = {"type": e.type, "message": e.message, "param": e.param}
        return {**_call_dict(call), "result": None, "error": error}
    return {**_call_dict(call), "result": result, "error": None}


def _key(call: toolcalls.ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True)


def _call_dict(call: toolcalls.ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _result_text(done: dict[str, Any]) -> str:
    if done["error"] is not None:
        return f"error: {done['error']['message']}"
    result = done["result"]
    return result if isinstance(result, str) else json.dumps(result, default=str)


async def _chat_tools(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    plan = toolcalls.plan_of(a)
    if plan is None:
        raise InvalidRequest("kernel-side tool execution needs tools", param="tools")
    if not isinstance(a.get("messages"), list):
        raise InvalidRequest("messages must be a list", param="messages")
    messages = list(a["messages"])
    choice: Any = a.get("tool_choice")
    executed: list[dict[str, Any]] = []
    ran: set[str] = set()  # the calls executed (_key)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    rounds = 0
    while True:
        req = await _generate(k, c, {**a, "messages": messages, "tool_choice": choice})
        rounds += 1
        usage["prompt_tokens"] += req.prompt_tokens
        usage["completion_tokens"] += req.output_tokens
        usage["cached_tokens"] += req.cached_tokens
        round_plan = toolcalls.plan_of({**a, "tool_choice": choice})
        reply = toolcalls.interpret(round_plan, req.text, req.finish_reason, uuid.uuid4().hex)
        calls = reply.tool_calls
        if not calls or not all(_registered(k, call.name) for call in calls):
            break
        if any(_key(call) in ran for call in calls):
            choice = "none"  # a repeat: its result is in the conversation already
            continue
        for call in calls:
            ran.add(_key(call))
            done = await _execute(k, c, call)
            executed.append(done)
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]}
            )
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": _result_text(done)}
            )
        choice = "auto" if len(executed) < MAX_TOOL_ROUNDS else "none"
    return {
        "model": req.model,
        "pid": req.pid,
        "content": reply.content,
        "tool_calls": [call.to_openai() for call in calls],
        "finish_reason": reply.finish_reason,
        "usage": usage,
        "executed": executed,
        "rounds": rounds,
    }


TOOL_LOOP_SYSCALLS = (
    Syscall(
        "llm.chat_tools",
        _chat_tools,
        ALL,
        "chat whose calls of registered tools the kernel runs (with the caller's rights) "
        "until a text answer; returns it and the executed calls",
    ),
)
