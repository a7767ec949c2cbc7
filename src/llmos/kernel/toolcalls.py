"""Tool calling in chat (OpenAI's `tools` / `tool_choice`): the request's tool plan,
the prompt the model sees, the JSON schema that constrains its answer, and the
mapping of that answer back to OpenAI's `tool_calls`.

The model's answer is constrained (llama.cpp grammar, through SamplingParams.
json_schema) to one JSON object:
- a call: {"name": <one of the tools>, "arguments": <that tool's parameters>};
- with tool_choice "auto", alternatively a plain answer: {"content": <string>}.
"required" allows a call of any tool, a named function a call of that one only;
"none" does not constrain (and does not describe the tools). At most one call per
answer, whatever `parallel_tool_calls` says.

Chat templates without tool support (SmolLM2's) get this fallback rendering, used
for every model so the format is the same everywhere:
- the tools and the answer format are described in a system message (appended to
  the client's first system message, if any);
- an assistant message's tool calls become its content, one call object per line,
  in the format above;
- a tool result stays a `tool` message (the template renders the role); for a
  device that takes messages rather than token ids, it is a `user` message
  "Result of <name>: <content>", since hosted APIs refuse bare `tool` messages.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from llmos.errors import InvalidRequest
from llmos.params import MAX_TOOLS

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
CHOICES = ("none", "auto", "required")
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolPlan:
    """What a chat request offers the model. `choice`: "none" | "auto" | "required",
    or "function" with `forced` naming it."""

    functions: tuple[Function, ...]
    choice: str
    forced: str | None = None

    @property
    def constrained(self) -> bool:
        return self.choice != "none"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.functions)

    def with_choice(self, choice: str) -> ToolPlan:
        return replace(self, choice=choice, forced=None)

    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the model's answer is constrained to (None: free text)."""
        if not self.constrained:
            return None
        defs: dict[str, Any] = {}
        options = [
            _call_schema(f.name, _hoist(f.parameters, f"t{i}_", defs))
            for i, f in enumerate(self.functions)
            if self.forced in (None, f.name)
        ]
        if self.choice == "auto":
            options.append(
                {
                    "type": "object",
                    "properties": {"content": {"type": "string"}},
                    "required": ["content"],
                    "additionalProperties": False,
                }
            )
        schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
        return {**schema, "$defs": defs} if defs else schema

    def preamble(self) -> str:
        lines = ["You can call these tools:"]
        for f in self.functions:
            if self.forced in (None, f.name):
                params = json.dumps(f.parameters, separators=(",", ":"))
                about = f": {f.description}" if f.description else ""
                lines.append(f"- {f.name}{about} Arguments (JSON schema): {params}")
        call = '{"name": "<tool name>", "arguments": {<the arguments>}}'
        if self.forced is not None:
            lines.append(f"Call the tool {self.forced}: reply only with the JSON object {call}.")
        elif self.choice == "required":
            lines.append(f"Call one of the tools: reply only with the JSON object {call}.")
        else:
            lines.append(f"To call a tool, reply only with the JSON object {call}.")
            lines.append('To answer without a tool, reply with {"content": "<your answer>"}.')
        return "\n".join(lines)


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _hoist(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` as a subschema of the answer's schema: its local definitions move to
    the root's $defs under `prefix` and its `$ref`s follow them ("#" too)."""
    own = {**schema.get("$defs", {}), **schema.get("definitions", {})}
    body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions", "$schema")}

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: rewrite(v) for k, v in node.items()}
        ref = node.get("$ref")
        if ref == "#":
            out["$ref"] = f"#/$defs/{prefix}root"
            defs.setdefault(f"{prefix}root", None)
        elif isinstance(ref, str):
            for base in ("#/$defs/", "#/definitions/"):
                if ref.startswith(base):
                    out["$ref"] = f"#/$defs/{prefix}{ref.removeprefix(base)}"
        return out

    root: dict[str, Any] = rewrite(body)
    for name, sub in own.items():
        defs[prefix + name] = rewrite(sub)
    if f"{prefix}root" in defs:
        defs[f"{prefix}root"] = root
    return root


# -- the request's tool plan ---------------------------------------------------------
def _function(tool: Any, where: str, seen: set[str]) -> Function:
    if not isinstance(tool, dict):
        raise InvalidRequest("each tool must be an object", param=where)
    if tool.get("type", "function") != "function":
        raise InvalidRequest("type must be 'function'", param=f"{where}.type")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise InvalidRequest("function must be an object", param=f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise InvalidRequest(
            "name must be 1..128 letters, digits, '_', '.' or '-'", param=f"{where}.function.name"
        )
    if name in seen:
        raise InvalidRequest(f"two tools are named {name!r}", param=f"{where}.function.name")
    seen.add(name)
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise InvalidRequest("description must be a string", param=f"{where}.function.description")
    parameters = fn.get("parameters")
    if parameters is None:
        parameters = NO_PARAMETERS
    where_p = f"{where}.function.parameters"
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a JSON schema object", param=where_p)
    if parameters.get("type", "object") != "object":
        raise InvalidRequest("parameters must describe an object (type 'object')", param=where_p)
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError as e:
        message = f"parameters is not a valid JSON schema: {e.message}"
        raise InvalidRequest(message, param=where_p) from None
    _local_refs(parameters, where_p)
    return Function(name, description, parameters)


def _local_refs(node: Any, where: str) -> None:
    """Only refs into the schema's own definitions can follow it into the answer's."""
    if isinstance(node, list):
        for n in node:
            _local_refs(n, where)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not (
            ref == "#" or ref.startswith(("#/$defs/", "#/definitions/"))
        ):
            raise InvalidRequest(
                f"$ref {ref!r}: only '#', '#/$defs/…' and '#/definitions/…' are supported",
                param=where,
            )
        for v in node.values():
            _local_refs(v, where)


def plan_of(args: dict[str, Any]) -> ToolPlan | None:
    """The tool plan of a chat request (`tools`, `tool_choice`, `parallel_tool_calls`),
    checked strictly; None when it offers no tools."""
    tools = args.get("tools")
    choice = args.get("tool_choice")
    parallel = args.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest(
            "parallel_tool_calls must be true or false", param="parallel_tool_calls"
        )
    if tools is None:
        if choice not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest("tools must be a non-empty list", param="tools")
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"at most {MAX_TOOLS} tools", param="tools")
    seen: set[str] = set()
    functions = tuple(_function(t, f"tools[{i}]", seen) for i, t in enumerate(tools))
    if choice is None or choice in CHOICES:
        return ToolPlan(functions, choice or "auto")
    if isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequest(
                'tool_choice must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": …}}',
                param="tool_choice",
            )
        name = fn.get("name")
        if name not in seen:
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not among the tools",
                param="tool_choice.function.name",
            )
        return ToolPlan(functions, "function", forced=name)
    raise InvalidRequest(
        'tool_choice must be "none", "auto", "required" or a function', param="tool_choice"
    )


# -- messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }

    def as_text(self) -> str:
        """The call in the answer format the model is constrained to."""
        return json.dumps({"name": self.name, "arguments": self.arguments})


def history_calls(calls: Any, where: str) -> list[ToolCall]:
    """An assistant message's `tool_calls`, as a client sends them back."""
    if not isinstance(calls, list):
        raise InvalidRequest("tool_calls must be a list", param=where)
    out = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        if not isinstance(call, dict):
            raise InvalidRequest("each tool call must be an object", param=at)
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise InvalidRequest("id must be a non-empty string", param=f"{at}.id")
        if call.get("type", "function") != "function":
            raise InvalidRequest("type must be 'function'", param=f"{at}.type")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest("function needs a name", param=f"{at}.function.name")
        raw = fn.get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                "arguments must be a string holding a JSON object", param=f"{at}.function.arguments"
            )
        out.append(ToolCall(call["id"], fn["name"], arguments))
    return out


def result_of(message: dict[str, Any], where: str, calls: dict[str, str]) -> tuple[str, str]:
    """(tool_call_id, function name) of a `tool` message; it must answer an earlier call."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("a tool message needs a tool_call_id", param=f"{where}.tool_call_id")
    if call_id not in calls:
        raise InvalidRequest(
            f"tool_call_id {call_id!r} answers no earlier assistant tool call",
            param=f"{where}.tool_call_id",
        )
    return call_id, calls[call_id]


def plain_messages(
    messages: list[dict[str, Any]], plan: ToolPlan | None, tool_role: bool = True
) -> list[dict[str, Any]]:
    """Normalized messages (with tool calls and results) as plain {role, content}
    messages any chat template renders: the fallback format of this module's doc."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m["content"]
        if m.get("tool_calls"):
            text = "\n".join(c.as_text() for c in m["tool_calls"])
            content = f"{content}\n{text}" if content else text
            out.append({"role": "assistant", "content": content})
        elif m["role"] == "tool" and not tool_role:
            out.append({"role": "user", "content": f"Result of {m['name']}: {content}"})
        else:
            out.append({"role": m["role"], "content": content})
    if plan is not None and plan.constrained:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{plan.preamble()}"}
        else:
            out.insert(0, {"role": "system", "content": plan.preamble()})
    return out


# -- the model's answer --------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """The answer as OpenAI shows it: content or tool calls, and why it ended."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None


def call_id(seed: str, index: int) -> str:
    """Stable per response (a job's result renders the same on every read)."""
    return "call_" + hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:24]


def interpret(plan: ToolPlan | None, text: str, finish_reason: str | None, seed: str) -> Reply:
    """Map the constrained answer to content or a tool call. Text that is not the
    constrained form (cut off by max_tokens, or a device that ignored the schema)
    is returned as content, with the finish reason the generation had."""
    if plan is None or not plan.constrained:
        return Reply(text, (), finish_reason)
    try:
        answer = json.loads(text)
    except ValueError:
        return Reply(text, (), finish_reason)
    if not isinstance(answer, dict):
        return Reply(text, (), finish_reason)
    if plan.choice == "auto" and set(answer) == {"content"} and isinstance(answer["content"], str):
        return Reply(answer["content"], (), finish_reason)
    name, arguments = answer.get("name"), answer.get("arguments")
    if set(answer) == {"name", "arguments"} and name in plan.names and isinstance(arguments, dict):
        return Reply(None, (ToolCall(call_id(seed, 0), name, arguments),), "tool_calls")
    return Reply(text, (), finish_reason)
