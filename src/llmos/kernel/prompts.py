"""From a syscall's arguments to a Snapshot a device can run: validate the messages
or prompt, apply the chat template, tokenize, and check the context budget."""

from __future__ import annotations

import math
from typing import Any

from llmos.devices.base import Device
from llmos.errors import ContextOverflow, InvalidRequest
from llmos.kernel import toolcalls
from llmos.params import MAX_MESSAGES, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS
from llmos.types import SamplingParams, Snapshot

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


MEDIA_PARTS = frozenset({"image_url", "input_audio"})  # checked by media_parts.py


def _text_of(content: Any, where: str, media: bool = False) -> str | list[dict[str, Any]]:
    """Message content is a string or a list of text parts (OpenAI's two forms). With
    `media` (a chat handed to a device that takes them) image and audio parts stay,
    and content holding any stays a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts, parts = [], []
        for i, part in enumerate(content):
            if media and isinstance(part, dict) and part.get("type") in MEDIA_PARTS:
                parts.append(part)
                continue
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequest(
                    "only text content parts are taken here (image and audio parts are "
                    "taken by a plain chat completion, llm.chat)",
                    param=f"{where}.content[{i}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(
                    "text part needs a string 'text'", param=f"{where}.content[{i}]"
                )
            texts.append(text)
            parts.append({"type": "text", "text": text})
        return parts if len(parts) > len(texts) else "".join(texts)
    if content is None:
        return ""
    raise InvalidRequest("content must be a string or a list of parts", param=f"{where}.content")


def normalize_messages(messages: Any, media: bool = False) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise InvalidRequest("messages must be a list", param="messages")
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"at most {MAX_MESSAGES} messages", param="messages")
    out = []
    calls: dict[str, str] = {}  # tool call id -> function name, of the messages so far
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest("each message must be an object", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"role must be one of {', '.join(sorted(ROLES))}", param=f"{where}.role"
            )
        msg: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": _text_of(m.get("content"), where, media),
        }
        if role == "assistant" and m.get("tool_calls") is not None:
            made = toolcalls.history_calls(m["tool_calls"], f"{where}.tool_calls")
            calls.update((c.id, c.name) for c in made)
            msg["tool_calls"] = made
        elif role == "tool":
            msg["tool_call_id"], msg["name"] = toolcalls.result_of(m, where, calls)
        out.append(msg)
    return out


def _number(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{key} must be a number", param=key)
    return float(value)


def sampling(args: dict[str, Any], max_tokens: int) -> SamplingParams:
    temperature = _number(args, "temperature", 1.0)
    top_p = _number(args, "top_p", 1.0)
    if not (0.0 <= temperature <= 2.0) or math.isnan(temperature):
        raise InvalidRequest("temperature must be between 0 and 2", param="temperature")
    if not (0.0 < top_p <= 1.0):
        raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
    stop = args.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    elif stop is not None:
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings", param="stop")
    top_logprobs = int(args.get("top_logprobs") or 0)
    if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS}", param="top_logprobs")
    seed = args.get("seed")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=int(seed) if seed is not None else None,
        stop=stops,
        logprobs=bool(args.get("logprobs")),
        top_logprobs=top_logprobs,
        json_schema=args.get("json_schema"),
        ignore_eos=bool(args.get("ignore_eos")),
    )


def budget(prompt_len: int, max_tokens: Any, ctx: int, field: str) -> int:
    """max_tokens to use; the prompt plus it must fit in one slot's context."""
    if prompt_len >= ctx:
        raise ContextOverflow(
            f"the prompt is {prompt_len} tokens but the model's context is {ctx} tokens",
            param=field,
        )
    if max_tokens is None:
        return ctx - prompt_len
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens must be a positive integer", param="max_tokens")
    if prompt_len + max_tokens > ctx:
        raise ContextOverflow(
            f"max_tokens {max_tokens} plus the prompt's {prompt_len} tokens exceeds the "
            f"context of {ctx} tokens; ask for at most {ctx - prompt_len}",
            param="max_tokens",
        )
    return max_tokens


def _tool_args(args: dict[str, Any], plan: toolcalls.ToolPlan | None) -> dict[str, Any]:
    """A tool plan's answer schema replaces response_format's (they cannot be combined)."""
    if plan is None or not plan.constrained:
        return args
    if args.get("json_schema") is not None:
        raise InvalidRequest(
            'response_format cannot be combined with tools unless tool_choice is "none"',
            param="response_format",
        )
    if args.get("logprobs"):
        raise InvalidRequest(
            'logprobs are not available with tools unless tool_choice is "none"',
            param="logprobs",
        )
    return {**args, "json_schema": plan.schema()}


async def chat_snapshot(dev: Device, args: dict[str, Any], native: bool = False) -> Snapshot:
    """`native`: image and audio parts go to the device as they are, so the chat is
    handed over whole as messages (no token ids: it cannot be resumed)."""
    plan = toolcalls.plan_of(args)
    normalized = normalize_messages(args.get("messages"), media=native)
    args = _tool_args(args, plan)
    if native or not getattr(dev, "token_ids", True):
        messages = toolcalls.plain_messages(normalized, plan, tool_role=False)
        max_tokens = budget(0, args.get("max_tokens"), dev.context_length, "messages")
        return Snapshot([], sampling(args, max_tokens), messages=messages)
    messages = toolcalls.plain_messages(normalized, plan)
    ids = await dev.tokenize(await dev.render_chat(messages))
    max_tokens = budget(len(ids), args.get("max_tokens"), dev.context_length, "messages")
    return Snapshot(ids, sampling(args, max_tokens))


async def completion_snapshot(dev: Device, args: dict[str, Any]) -> Snapshot:
    prompt = args.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not getattr(dev, "token_ids", True):
            messages = [{"role": "user", "content": prompt}]
            max_tokens = budget(0, args.get("max_tokens"), dev.context_length, "prompt")
            return Snapshot([], sampling(args, max_tokens), messages=messages)
        ids = await dev.tokenize(prompt) if prompt else []
    elif (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    ):
        ids = list(prompt)
    else:
        raise InvalidRequest(
            "prompt must be a string or a non-empty list of token ids (n=1)", param="prompt"
        )
    if not ids:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    max_tokens = budget(len(ids), args.get("max_tokens", 16), dev.context_length, "prompt")
    return Snapshot(ids, sampling(args, max_tokens))
