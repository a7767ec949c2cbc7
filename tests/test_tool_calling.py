"""Tool calling in /v1/chat/completions on a scripted mock device: strict checks of
tools / tool_choice / tool messages (400 naming the field), the prompt and the
answer schema the device is given, the mapping of its answer to OpenAI's
tool_calls (whole and streamed, read by the openai client), jobs, and the
kernel-side execution loop (llmos_execute_tools). The real model's side is in
test_tool_calling_real.py."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import pytest_asyncio

from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.errors import InvalidRequest
from llmos.kernel import Kernel, prompts
from llmos.kernel.tools import Tool
from llmos.params import MAX_TOOL_ROUNDS, MAX_TOOLS, Settings
from llmos.types import DeviceEvent, Finished, Snapshot, Token
from tests._live_server import serving
from tests.conftest import ADMIN

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


class ScriptedDevice(MockDevice):
    """The mock engine, answering each generation with the next scripted text (cut
    at max_tokens, as a real engine would); the mock's letters when the script is
    empty. Records each generation's prompt text and answer schema."""

    def __init__(self) -> None:
        super().__init__(slots=2, context_length=4096)
        self.script: list[str] = []
        self.seen: list[tuple[str, dict[str, Any] | None]] = []

    async def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        prompt = await self.detokenize(snapshot.prompt_ids)
        self.seen.append((prompt, snapshot.params.json_schema))
        if not self.script:
            async for event in super().generate(snapshot):
                yield event
            return
        text = self.script.pop(0)
        for ch in text[: snapshot.budget]:
            yield Token(id=ord(ch), text=ch, piece=ch)
        reason = "stop" if len(text) <= snapshot.budget else "length"
        yield Finished(reason, prompt_tokens=len(snapshot.prompt_ids))


@dataclass
class Env:
    kernel: Kernel
    device: ScriptedDevice
    http: httpx.AsyncClient
    oai: openai.AsyncOpenAI

    async def chat(self, **body: Any) -> httpx.Response:
        return await self.http.post("/v1/chat/completions", json={"model": "mock", **body})


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    device = ScriptedDevice()
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [device])
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://llmos", headers=headers) as http,
        httpx.AsyncClient(transport=transport) as raw,
    ):
        oai = openai.AsyncOpenAI(base_url="http://llmos/v1", api_key=ADMIN, http_client=raw)
        yield Env(kernel, device, http, oai)
    await kernel.stop()


def _error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    return err


# -- strict checks --------------------------------------------------------------------
def _tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": function}


BAD_TOOLS = [
    ({"tools": "get_weather"}, "tools"),
    ({"tools": []}, "tools"),
    ({"tools": [WEATHER] + [_tool(name=f"f{i}") for i in range(MAX_TOOLS)]}, "tools"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [_tool(name="has space")]}, "tools[0].function.name"),
    ({"tools": [_tool()]}, "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [_tool(name="f", description=3)]}, "tools[0].function.description"),
    ({"tools": [_tool(name="f", parameters=[])]}, "tools[0].function.parameters"),
    ({"tools": [_tool(name="f", parameters={"type": "string"})]}, "tools[0].function.parameters"),
    (
        {"tools": [_tool(name="f", parameters={"type": "object", "minProperties": -1})]},
        "tools[0].function.parameters",
    ),
    (
        {"tools": [_tool(name="f", parameters={"$ref": "https://example.com/s.json"})]},
        "tools[0].function.parameters",
    ),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}},
        "tool_choice.function.name",
    ),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "parallel_tool_calls": "perhaps"}, "parallel_tool_calls"),
    (
        {"tools": [WEATHER], "response_format": {"type": "json_object"}},
        "response_format",
    ),
    ({"tools": [WEATHER], "logprobs": True}, "logprobs"),
]


@pytest.mark.parametrize(("extra", "param"), BAD_TOOLS)
async def test_bad_tools_are_refused_naming_the_field(
    env: Env, extra: dict[str, Any], param: str
) -> None:
    err = _error(await env.chat(messages=ASK, **extra))
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert env.device.seen == []  # nothing ran


def _history(call: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    return [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}, result]


GOOD_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
BAD_HISTORY = [
    (_history(GOOD_CALL, {"role": "tool", "content": "18 C"}), "messages[2].tool_call_id"),
    (
        _history(GOOD_CALL, {"role": "tool", "tool_call_id": "call_2", "content": "18 C"}),
        "messages[2].tool_call_id",
    ),
    (
        _history(
            {**GOOD_CALL, "function": {"name": "get_weather", "arguments": "{city: Paris"}},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        _history(
            {**GOOD_CALL, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ),
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        _history({**GOOD_CALL, "id": ""}, {"role": "user", "content": "?"}),
        "messages[1].tool_calls[0].id",
    ),
    (
        [*ASK, {"role": "assistant", "content": None, "tool_calls": {"id": "x"}}],
        "messages[1].tool_calls",
    ),
]


@pytest.mark.parametrize(("messages", "param"), BAD_HISTORY)
async def test_bad_tool_messages_are_refused_naming_the_field(
    env: Env, messages: list[dict[str, Any]], param: str
) -> None:
    err = _error(await env.chat(messages=messages, tools=[WEATHER]))
    assert err["param"] == param


# -- the prompt, the schema, the answer ------------------------------------------------
async def test_required_call_is_returned_as_tool_calls(env: Env) -> None:
    env.device.script.append(CALL)
    r = await env.chat(messages=ASK, tools=[WEATHER, ADD], tool_choice="required")
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_") and len(call["id"]) > 10
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    prompt, schema = env.device.seen[0]
    # The tools were described, and the answer was constrained to a call of either.
    assert "get_weather: Current weather in a city." in prompt
    assert "add: Add two integers." in prompt
    assert schema is not None
    names = {o["properties"]["name"]["const"] for o in schema["anyOf"]}
    assert names == {"get_weather", "add"}
    valid = jsonschema.Draft202012Validator(schema)
    assert valid.is_valid(json.loads(CALL))
    assert not valid.is_valid({"name": "get_weather", "arguments": {"town": "Paris"}})
    assert not valid.is_valid({"content": "hi"})  # required: no plain answer


async def test_auto_may_answer_with_content(env: Env) -> None:
    env.device.script.append('{"content": "It is sunny."}')
    r = await env.chat(messages=ASK, tools=[WEATHER])  # tool_choice defaults to auto
    choice = r.json()["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "It is sunny.",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    schema = env.device.seen[0][1]
    assert schema is not None
    assert jsonschema.Draft202012Validator(schema).is_valid({"content": "x"})
    assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(CALL))


async def test_named_function_constrains_to_that_tool(env: Env) -> None:
    env.device.script.append('{"name": "add", "arguments": {"a": 2, "b": 3}}')
    choice_ = {"type": "function", "function": {"name": "add"}}
    r = await env.chat(messages=ASK, tools=[WEATHER, ADD], tool_choice=choice_)
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "add"
    prompt, schema = env.device.seen[0]
    assert schema is not None and "anyOf" not in schema
    assert schema["properties"]["name"] == {"const": "add"}
    assert "Call the tool add" in prompt and "get_weather" not in prompt


async def test_none_is_free_text_without_the_tools(env: Env) -> None:
    env.device.script.append("Paris is sunny today.")
    r = await env.chat(messages=ASK, tools=[WEATHER], tool_choice="none")
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Paris is sunny today."
    assert "tool_calls" not in choice["message"]
    prompt, schema = env.device.seen[0]
    assert schema is None and "get_weather" not in prompt


async def test_history_with_calls_and_results_is_rendered(env: Env) -> None:
    env.device.script.append("It is 18 C in Paris.")
    messages = [
        {"role": "system", "content": "Be brief."},
        *_history(GOOD_CALL, {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}),
    ]
    r = await env.chat(messages=messages, tools=[WEATHER], tool_choice="none")
    assert r.json()["choices"][0]["message"]["content"] == "It is 18 C in Paris."
    prompt = env.device.seen[0][0]
    # The call as the model's own answer format, the result as a tool message.
    assert '<assistant>{"name": "get_weather", "arguments": {"city": "Paris"}}\n' in prompt
    assert "<tool>18 C\n" in prompt


async def test_preamble_joins_the_clients_system_message(env: Env) -> None:
    env.device.script.append(CALL)
    messages = [{"role": "system", "content": "Be brief."}, *ASK]
    await env.chat(messages=messages, tools=[WEATHER], tool_choice="required")
    prompt = env.device.seen[0][0]
    assert prompt.startswith("<system>Be brief.\n\nYou can call these tools:")
    assert prompt.count("<system>") == 1


async def test_cut_off_answer_is_returned_as_content_with_length(env: Env) -> None:
    env.device.script.append(CALL)
    r = await env.chat(messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=10)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == CALL[:10]
    assert "tool_calls" not in choice["message"]


async def test_parameters_with_local_refs_keep_working_in_the_answer_schema(env: Env) -> None:
    params = {
        "type": "object",
        "properties": {"where": {"$ref": "#/$defs/place"}},
        "required": ["where"],
        "$defs": {
            "place": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "near": {"$ref": "#/$defs/place"}},
                "required": ["city"],
            }
        },
    }
    tools = [WEATHER, _tool(name="locate", parameters=params)]
    answer = {"name": "locate", "arguments": {"where": {"city": "Paris", "near": {"city": "X"}}}}
    env.device.script.append(json.dumps(answer))
    r = await env.chat(messages=ASK, tools=tools, tool_choice="required")
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == answer["arguments"]
    schema = env.device.seen[0][1]
    assert schema is not None and set(schema["$defs"]) == {"t1_place"}
    valid = jsonschema.Draft202012Validator(schema)
    assert valid.is_valid(answer)
    assert not valid.is_valid({"name": "locate", "arguments": {"where": {"near": {}}}})


async def test_openai_client_reads_the_tool_call(env: Env) -> None:
    env.device.script.append(CALL)
    out = await env.oai.chat.completions.create(
        model="mock",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
    )
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    fn = message.tool_calls[0].function
    assert (fn.name, json.loads(fn.arguments)) == ("get_weather", {"city": "Paris"})


async def test_streamed_tool_call_parses_with_the_openai_client(env: Env) -> None:
    env.device.script.append(CALL)
    async with env.oai.chat.completions.stream(
        model="mock",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        stream_options={"include_usage": True},
    ) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert final.usage is not None and final.usage.completion_tokens == len(CALL)


async def test_streamed_tool_call_chunks(env: Env) -> None:
    env.device.script.append(CALL)
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "stream": True}
    r = await env.chat(**body)
    events = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    assert not any(d.get("content") for d in deltas)  # no JSON leaks out as text
    (tool_delta,) = [d for d in deltas if "tool_calls" in d]
    (call,) = tool_delta["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_streamed_auto_content_comes_whole(env: Env) -> None:
    env.device.script.append('{"content": "Sunny."}')
    r = await env.chat(messages=ASK, tools=[WEATHER], stream=True)
    chunks = [json.loads(e[6:]) for e in r.text.split("\n\n") if e and e != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Sunny."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- jobs -------------------------------------------------------------------------------
async def test_a_job_returns_tool_calls_the_same_on_every_read(env: Env) -> None:
    env.device.script.append(CALL)
    body = {"model": "mock", "messages": ASK, "tools": [WEATHER], "tool_choice": "required"}
    r = await env.http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": body})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(200):
        job = (await env.http.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    first = job["result"]["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    assert first["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    again = (await env.http.get(f"/v1/jobs/{job_id}")).json()["result"]["choices"][0]
    assert again == first  # the call id is stable


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [WEATHER], "llmos_execute_tools": True}, "body.llmos_execute_tools"),
        ({"tools": [WEATHER], "tool_choice": "maybe"}, "body.tool_choice"),
    ],
)
async def test_a_job_refuses_what_it_cannot_run(env: Env, body: dict[str, Any], param: str) -> None:
    job = {"endpoint": "/v1/chat/completions", "body": {"model": "mock", "messages": ASK, **body}}
    err = _error(await env.http.post("/v1/jobs", json=job))
    assert err["param"] == param


# -- kernel-side execution ----------------------------------------------------------------
def _register(kernel: Kernel, log: list[dict[str, Any]]) -> None:
    async def add(k: Kernel, caller: Any, args: dict[str, Any]) -> Any:
        log.append({"owner": caller.owner, **args})
        return args["a"] + args["b"]

    async def broken(k: Kernel, caller: Any, args: dict[str, Any]) -> Any:
        raise InvalidRequest("the tool is out of order", param="arguments")

    spec = ADD["function"]
    kernel.tools.register(Tool("add", spec["description"], spec["parameters"], add))
    kernel.tools.register(Tool("broken", "Always fails.", {"type": "object"}, broken))


BROKEN = _tool(name="broken", description="Always fails.", parameters={"type": "object"})


async def test_kernel_runs_a_registered_tool_and_answers(env: Env) -> None:
    log: list[dict[str, Any]] = []
    _register(env.kernel, log)
    env.device.script += ['{"name": "add", "arguments": {"a": 2, "b": 3}}', '{"content": "5."}']
    ask = [{"role": "user", "content": "What is 2 + 3?"}]
    r = await env.chat(messages=ask, tools=[ADD], tool_choice="required", llmos_execute_tools=True)
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == "5." and choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    (ran,) = body["llmos_executed_tools"]
    assert (ran["name"], ran["arguments"], ran["result"], ran["error"]) == (
        "add",
        {"a": 2, "b": 3},
        5,
        None,
    )
    assert log == [{"owner": "admin", "a": 2, "b": 3}]  # with the caller's identity
    # Round two saw the call and its result; its tool_choice fell back to auto.
    prompt, schema = env.device.seen[1]
    assert '{"name": "add", "arguments": {"a": 2, "b": 3}}' in prompt and "<tool>5\n" in prompt
    assert schema is not None and len(schema["anyOf"]) == 2
    # Usage is summed over both rounds.
    generated = len('{"name": "add", "arguments": {"a": 2, "b": 3}}') + len('{"content": "5."}')
    assert body["usage"]["completion_tokens"] == generated


async def test_kernel_returns_calls_of_tools_it_does_not_hold(env: Env) -> None:
    _register(env.kernel, [])
    env.device.script.append(CALL)
    r = await env.chat(
        messages=ASK, tools=[WEATHER, ADD], tool_choice="required", llmos_execute_tools=True
    )
    body = r.json()
    assert body["llmos_executed_tools"] == []
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"


async def test_a_failing_tool_is_shown_to_the_model(env: Env) -> None:
    _register(env.kernel, [])
    env.device.script += ['{"name": "broken", "arguments": {}}', '{"content": "Sorry."}']
    r = await env.chat(
        messages=ASK, tools=[BROKEN], tool_choice="required", llmos_execute_tools=True
    )
    body = r.json()
    (ran,) = body["llmos_executed_tools"]
    assert ran["result"] is None
    assert ran["error"]["message"] == "the tool is out of order"
    assert "<tool>error: the tool is out of order\n" in env.device.seen[1][0]
    assert body["choices"][0]["message"]["content"] == "Sorry."


async def test_the_loop_is_bounded_then_forces_a_text_answer(env: Env) -> None:
    _register(env.kernel, [])
    calls = [json.dumps({"name": "add", "arguments": {"a": i, "b": 1}}) for i in range(9)]
    env.device.script += [*calls[:MAX_TOOL_ROUNDS], "Done.", *calls[MAX_TOOL_ROUNDS:]]
    r = await env.chat(messages=ASK, tools=[ADD], tool_choice="required", llmos_execute_tools=True)
    body = r.json()
    results = [t["result"] for t in body["llmos_executed_tools"]]
    assert results == [i + 1 for i in range(MAX_TOOL_ROUNDS)]
    assert body["choices"][0]["message"]["content"] == "Done."
    assert len(env.device.seen) == MAX_TOOL_ROUNDS + 1
    assert env.device.seen[-1][1] is None  # the last round: tool_choice "none", free text


async def test_a_repeated_call_is_not_run_again(env: Env) -> None:
    """A model repeating a call it has the result of is looping: the kernel does
    not run it again and asks for a text answer."""
    log: list[dict[str, Any]] = []
    _register(env.kernel, log)
    again = '{"name": "add", "arguments": {"a": 6, "b": 7}}'
    env.device.script += [again, '{"name": "add", "arguments": {"b": 7, "a": 6}}', "13."]
    r = await env.chat(messages=ASK, tools=[ADD], tool_choice="required", llmos_execute_tools=True)
    body = r.json()
    assert len(log) == 1 and len(body["llmos_executed_tools"]) == 1
    assert body["choices"][0]["message"]["content"] == "13."
    schemas = [schema for _, schema in env.device.seen]
    assert schemas[0] is not None and schemas[1] is not None and schemas[2] is None
    assert body["usage"]["completion_tokens"] == 2 * len(again) + len("13.")


async def test_kernel_loop_streams_its_answer(env: Env) -> None:
    _register(env.kernel, [])
    env.device.script += ['{"name": "add", "arguments": {"a": 2, "b": 2}}', '{"content": "4"}']
    r = await env.chat(
        messages=ASK,
        tools=[ADD],
        tool_choice="required",
        llmos_execute_tools=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [json.loads(e[6:]) for e in r.text.split("\n\n") if e and e != "data: [DONE]"]
    assert r.text.endswith("data: [DONE]\n\n")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "4"
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert final[0]["llmos_executed_tools"][0]["result"] == 4
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_kernel_execution_needs_tools(env: Env) -> None:
    err = _error(await env.chat(messages=ASK, llmos_execute_tools=True))
    assert err["param"] == "tools"


async def test_kernel_execution_follows_the_process_capability(env: Env) -> None:
    """A process whose capability leaves out tool.call cannot have the kernel run
    tools for it: the call fails (denied, audited) and the model is told so."""
    log: list[dict[str, Any]] = []
    _register(env.kernel, log)
    caps = {"syscalls": ["llm.chat", "llm.chat_tools"]}
    r = await env.http.post("/v1/processes", json={"name": "agent", "capabilities": caps})
    assert r.status_code in (200, 201), r.text
    token = r.json()["token"]
    env.device.script += ['{"name": "add", "arguments": {"a": 2, "b": 3}}', '{"content": "?"}']
    r = await env.http.post(
        "/v1/chat/completions",
        json={
            "model": "mock",
            "messages": ASK,
            "tools": [ADD],
            "tool_choice": "required",
            "llmos_execute_tools": True,
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    (ran,) = r.json()["llmos_executed_tools"]
    assert ran["error"]["type"] == "permission_error" and ran["result"] is None
    assert "tool.call" in ran["error"]["message"]
    assert log == []  # the tool never ran
    denied = env.kernel.audit.listing(outcome="denied")
    assert any(e["action"] == "tool.call" for e in denied)


@pytest.mark.parametrize("stream", [False, True])
def test_hang_up_cancels_the_running_tool(tmp_path: Path, stream: bool) -> None:
    """The client gives up while the kernel runs a tool for it: the tool is cancelled."""
    started, cancelled = threading.Event(), threading.Event()

    async def slow(k: Kernel, caller: Any, args: dict[str, Any]) -> Any:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    device = ScriptedDevice()
    device.script.append('{"name": "slow", "arguments": {}}')
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [device])
    kernel.tools.register(Tool("slow", "Takes a minute.", {"type": "object"}, slow))
    body = {
        "model": "mock",
        "messages": ASK,
        "tools": [_tool(name="slow", parameters={"type": "object"})],
        "tool_choice": "required",
        "llmos_execute_tools": True,
        "stream": stream,
    }
    with serving(create_app(kernel)) as url, httpx.Client(timeout=1.0) as c:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with pytest.raises(httpx.ReadTimeout):
            c.post(url + "/v1/chat/completions", json=body, headers=headers)
        assert started.wait(5)
        assert cancelled.wait(5)


async def test_text_mode_devices_get_results_as_user_messages() -> None:
    """A device that takes messages (a hosted API) refuses bare `tool` messages:
    results go as user messages naming the tool; the answer schema still applies."""

    class TextDevice(MockDevice):
        token_ids = False

    messages = _history(GOOD_CALL, {"role": "tool", "tool_call_id": "call_1", "content": "18 C"})
    args = {"messages": messages, "tools": [WEATHER], "tool_choice": "required"}
    snapshot = await prompts.chat_snapshot(TextDevice(), args)
    assert snapshot.messages is not None
    assert [m["role"] for m in snapshot.messages] == ["system", "user", "assistant", "user"]
    assert snapshot.messages[3]["content"] == "Result of get_weather: 18 C"
    assert snapshot.messages[2]["content"] == CALL
    assert snapshot.params.json_schema is not None
