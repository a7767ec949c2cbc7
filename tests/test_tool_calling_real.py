"""Tool calling against the real SmolLM2-135M, through both drivers (embedded
llama.cpp and a llama.cpp HTTP server), spoken to with the openai client. The
135M model's judgement is weak; what is checked is what the grammar guarantees:
every tool call has a tool's name and arguments valid against its schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from llmos.kernel.tools import Tool
from tests.conftest import MODEL, LiveServer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS: list[Any] = [WEATHER, MULTIPLY]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK: list[Any] = [{"role": "user", "content": "What is the weather like in Paris?"}]
SAMPLING: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_tokens": 48}


@pytest.fixture
def oai(live: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live.url + "/v1", api_key=live.token, max_retries=0) as client:
        yield client


def _valid_call(call: Any, names: set[str]) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def test_required_gives_a_call_valid_against_the_schema(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice="required", **SAMPLING)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    _valid_call(choice.message.tool_calls[0], set(SCHEMAS))


def test_named_function_is_the_one_called(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(
        messages=[{"role": "user", "content": "What is 6 times 7?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "multiply"}},
        **SAMPLING,
    )
    (call,) = out.choices[0].message.tool_calls or []
    _valid_call(call, {"multiply"})


def test_none_answers_in_text(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice="none", **SAMPLING)
    choice = out.choices[0]
    assert not choice.message.tool_calls
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content and choice.message.content.strip()


def test_round_trip_with_the_tool_result(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **SAMPLING,
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    _valid_call(call, {"get_weather"})
    history = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    second = oai.chat.completions.create(
        messages=history, tools=TOOLS, tool_choice="none", **SAMPLING
    )
    answer = second.choices[0].message
    assert not answer.tool_calls
    assert answer.content and answer.content.strip()
    assert second.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_call_parses_with_the_openai_client(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        messages=ASK, tools=TOOLS, tool_choice="required", **SAMPLING
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    _valid_call(call, set(SCHEMAS))


def test_kernel_side_execution_returns_the_answer_and_the_calls(
    live: LiveServer, oai: openai.OpenAI
) -> None:
    """The kernel runs the model's call of a registered tool, feeds the result back
    and returns the model's final answer with the executed calls."""
    ran: list[dict[str, Any]] = []

    async def multiply(k: Any, caller: Any, args: dict[str, Any]) -> int:
        ran.append(args)
        return int(args["a"]) * int(args["b"])

    spec = MULTIPLY["function"]
    tool = Tool("multiply", spec["description"], spec["parameters"], multiply, "test")
    live.kernel.tools.register(tool)
    try:
        out = oai.chat.completions.create(
            messages=[{"role": "user", "content": "What is 6 times 7?"}],
            tools=[MULTIPLY],
            tool_choice="required",
            extra_body={"llmos_execute_tools": True},
            **SAMPLING,
        )
    finally:
        live.kernel.tools.unregister("multiply")
    executed = (out.model_extra or {})["llmos_executed_tools"]
    assert 1 <= len(executed) == len(ran)
    first = executed[0]
    assert first["name"] == "multiply" and first["error"] is None
    jsonschema.validate(first["arguments"], SCHEMAS["multiply"])
    assert first["result"] == first["arguments"]["a"] * first["arguments"]["b"]
    choice = out.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert not choice.message.tool_calls
    assert choice.message.content and choice.message.content.strip()
