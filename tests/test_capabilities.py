"""Devices declare capabilities (text, vision, audio_in, ...) and the kernel routes by
them: two devices of one model with different capabilities -- a text-only mock and
an OpenAI-compatible "vision server" (tests/_vision_server.py, a recording stand-in)
-- get image requests and text requests as each can take them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.cli.main import build_app
from llmos.devices import LlamaCppDevice, MockDevice, OpenAIHttpDevice
from llmos.devices.base import capability_set
from llmos.errors import InvalidRequest
from llmos.kernel import Kernel
from llmos.kernel.boot import build_devices
from llmos.kernel.capabilities import routes
from llmos.params import Settings
from tests._live_server import serving
from tests._vision_server import VisionServer, vision_server

ADMIN = "adm"
# A 1x1 PNG: enough for a device that takes images as they are.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f1a4e00000000049454e44ae426082"
)


def image_part(data: bytes = PNG, mime: str = "image/png") -> dict[str, Any]:
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def chat(*parts: dict[str, Any], text: str = "What is in the picture?", **over: Any) -> dict:
    content = [{"type": "text", "text": text}, *parts]
    return {
        "model": "mock",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        **over,
    }


# -- the capability vocabulary -------------------------------------------------------
async def test_devices_declare_capabilities() -> None:
    assert MockDevice().capabilities == {"text"}
    assert MockDevice(capabilities=("text", "vision")).capabilities == {"text", "vision"}
    embedded = LlamaCppDevice(Path("m.gguf"))
    assert embedded.capabilities == {"text"}
    vlm = LlamaCppDevice(Path("vlm.gguf"), mmproj=Path("mmproj.gguf"))
    assert vlm.capabilities == {"text", "vision"}
    assert vlm.details()["mmproj"] == "mmproj.gguf"
    http = OpenAIHttpDevice("http://127.0.0.1:9", capabilities=["text", "vision", "audio_in"])
    try:
        assert http.capabilities == {"text", "vision", "audio_in"}
        assert (await MockDevice(capabilities=("vision", "text")).info()).capabilities == (
            "text",
            "vision",
        )
    finally:
        await http.close()


@pytest.mark.parametrize(("names", "said"), [(["text", "smell"], "'smell'"), ([], "no capab")])
def test_unknown_or_no_capability_is_refused(names: list[str], said: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        capability_set(names)
    assert info.value.param == "capabilities"
    assert said in info.value.message and "vision" in info.value.message  # lists the known


def test_routes_one_queue_per_model_and_capability_set() -> None:
    a, b = MockDevice(name="a"), MockDevice(name="b")
    v = MockDevice(name="v", capabilities=("vision", "text"))
    other = MockDevice(name="o", model="other", capabilities=("text", "vision"))
    assert routes([a, b]) == {"a": "mock", "b": "mock"}  # interchangeable: one queue
    assert routes([a, v, b, other]) == {
        "a": "mock",
        "v": "mock+text+vision",
        "b": "mock",
        "o": "other",  # a model served one way keeps its id as the key
    }


@pytest.mark.parametrize(
    ("settings", "param", "said"),
    [
        ({"mock_device": True, "device_capabilities": ("vision",)}, "device_capabilities", "text"),
        ({"mock_device": True, "device_capabilities": ("text", "x")}, "device_capabilities", "'x'"),
        ({"device_capabilities": ("text", "vision")}, "device_capabilities", "mmproj"),
        ({"mock_device": True, "mmproj": Path("p.gguf")}, "mmproj", "embedded"),
        ({"mmproj": Path("/nonexistent/p.gguf")}, "mmproj", "not found"),
    ],
)
def test_bad_capability_settings_are_named(
    tmp_path: Path, settings: dict[str, Any], param: str, said: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings(home=tmp_path, **settings).validate()
    assert info.value.param == param and said in info.value.message, info.value.message


def test_settings_give_the_device_its_capabilities(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, mock_device=True, device_capabilities=("text", "vision"))
    settings.validate()
    (dev,) = build_devices(settings)
    assert dev.capabilities == {"text", "vision"}
    assert build_devices(Settings(home=tmp_path, mock_device=True))[0].capabilities == {"text"}


# -- routing between a text-only device and a vision server --------------------------
@dataclass
class Routed:
    kernel: Kernel
    client: httpx.AsyncClient
    text: MockDevice
    vision: VisionServer


@pytest_asyncio.fixture
async def routed(tmp_path: Path) -> AsyncIterator[Routed]:
    with vision_server(model="mock") as server:
        text = MockDevice(name="text0", slots=1, context_length=512, token_delay=0.002)
        vision = OpenAIHttpDevice(
            server.url, name="vision0", model="mock", slots=2, capabilities=("text", "vision")
        )
        kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [text, vision])
        await kernel.start()
        transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
        headers = {"Authorization": f"Bearer {ADMIN}"}
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://llmos", headers=headers
            ) as client:
                yield Routed(kernel, client, text, server)
        finally:
            await kernel.stop()


async def test_image_goes_to_the_vision_device_with_its_parts_unchanged(routed: Routed) -> None:
    body = chat(image_part())
    r = await routed.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["message"]["content"] == "I see 1 images and 0 audio clips."
    assert out["llmos"] == {
        "media": [
            {
                "part": "messages[0].content[1]",
                "type": "image_url",
                "handled": "native",
                "device": "vision0",
            }
        ]
    }
    (received,) = routed.vision.received
    assert received["messages"] == body["messages"]  # the parts, byte for byte
    assert received["model"] == "mock" and received["max_tokens"] == 16
    assert routed.text.started_prompts == []  # the text-only device never saw it


async def test_a_streamed_image_answer_says_how_its_parts_were_taken(routed: Routed) -> None:
    body = chat(image_part(), stream=True)
    async with routed.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [
            json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: {")
        ]
    assert events[0]["llmos"]["media"][0]["handled"] == "native"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "I see 1 images and 0 audio clips."


async def test_text_goes_to_the_narrowest_device_then_to_any_free_one(routed: Routed) -> None:
    admin = routed.kernel.authenticate(ADMIN)
    msgs = [{"role": "user", "content": "hello"}]
    args = {"model": "mock", "messages": msgs, "max_tokens": 20}
    first = await routed.kernel.call("llm.chat", admin, args)
    second = await routed.kernel.call("llm.chat", admin, args)  # the text device is busy
    assert (await first.outcome()).error is None and (await second.outcome()).error is None
    assert first.device == "text0" and first.route == "mock"  # both idle: the narrowest
    assert second.device == "vision0" and second.route == "mock+text+vision"
    assert second.text == "I see 0 images and 0 audio clips."
    assert routed.vision.received[0]["messages"] == msgs


async def test_models_and_devices_show_capabilities(routed: Routed) -> None:
    listing = (await routed.client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["capabilities"]) for m in listing] == [("mock", ["text", "vision"])]
    one = (await routed.client.get("/v1/models/mock")).json()
    assert one["capabilities"] == ["text", "vision"] and one["object"] == "model"
    devices = (await routed.client.get("/v1/sys/devices")).json()
    rows = devices["data"] if isinstance(devices, dict) else devices
    assert {d["name"]: d["capabilities"] for d in rows} == {
        "text0": ["text"],
        "vision0": ["text", "vision"],
    }
    assert {d["name"]: d["waiting"] for d in rows} == {"text0": 0, "vision0": 0}


async def test_image_urls_reach_a_vision_device_only_when_fetching_is_allowed(
    routed: Routed,
) -> None:
    url_part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    r = await routed.client.post("/v1/chat/completions", json=chat(url_part))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[1]"
    assert "allow_media_fetch" in r.json()["error"]["message"]
    assert routed.vision.received == []
    routed.kernel.settings.allow_media_fetch = True
    r = await routed.client.post("/v1/chat/completions", json=chat(url_part))
    assert r.status_code == 200, r.text
    assert routed.vision.received[0]["messages"][0]["content"][1] == url_part  # the device fetches


async def test_vision_required_with_only_text_devices_names_the_capability(
    tmp_path: Path,
) -> None:
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [MockDevice(name="text0")])
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    try:
        with pytest.raises(InvalidRequest) as info:
            await kernel.call("llm.chat", admin, {**chat(image_part()), "media": "native"})
        err = info.value
        assert err.param == "messages[0].content[1]" and err.code == "capability"
        assert "no device serving model 'mock' has the 'vision' capability" in err.message
        assert "text0: text" in err.message  # what the devices do have
        with pytest.raises(InvalidRequest) as info:
            await kernel.call("llm.chat", admin, {**chat(image_part()), "media": "sometimes"})
        assert info.value.param == "media"
        assert kernel.procs.list() == []  # refused before any process was made
    finally:
        await kernel.stop()


async def test_a_chat_handed_over_whole_is_never_switched(tmp_path: Path) -> None:
    """Under round robin a resumable request yields its slot every quantum; a chat
    given to the device as messages (its parts unchanged) cannot resume, so it runs
    to its end in one dispatch."""
    vision = MockDevice(name="v", slots=1, token_delay=0.002, capabilities=("text", "vision"))
    settings = Settings(home=tmp_path, admin_token=ADMIN, policy="rr", quantum=2)
    kernel = Kernel(settings, [vision])
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    try:
        native = await kernel.call("llm.chat", admin, chat(image_part(), max_tokens=12))
        plain = {"model": "mock", "messages": [{"role": "user", "content": "x"}], "max_tokens": 12}
        other = await kernel.call("llm.chat", admin, plain)
        for req in (native, other):
            assert (await req.outcome()).error is None
        assert native.snapshot.messages is not None and native.output_tokens == 12
        assert native.dispatches == 1 and native.preemptions == 0
        assert other.dispatches > 1  # the same policy does switch a resumable one
        assert vision.started_messages[0][0]["content"][1] == image_part()
    finally:
        await kernel.stop()


async def test_queue_depth_counts_every_route_of_a_model(tmp_path: Path) -> None:
    """One model served by a text device and a vision device has two run queues; its
    depth (sys.top, llmos:queue_depth) is their sum."""
    text = MockDevice(name="t", slots=1, token_delay=0.01)
    vision = MockDevice(name="v", slots=1, token_delay=0.01, capabilities=("text", "vision"))
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [text, vision])
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    try:
        plain = {"model": "mock", "messages": [{"role": "user", "content": "x"}], "max_tokens": 40}
        reqs = [await kernel.call("llm.chat", admin, plain) for _ in range(3)]
        reqs += [await kernel.call("llm.chat", admin, chat(image_part(), max_tokens=40))]
        reqs += [await kernel.call("llm.chat", admin, chat(image_part(), max_tokens=40))]
        s = kernel.scheduler
        by_route = {r: len(s.queue(r)) for r in set(s.routes.values())}
        assert sum(by_route.values()) == s.depth("mock") == s.num_waiting() == 3
        assert len([n for n in by_route.values() if n]) == 2  # both queues hold some
        assert (await kernel.call("sys.top", admin, {}))["queues"] == {"mock": 3}
        for req in reqs:
            assert (await req.outcome()).error is None
    finally:
        await kernel.stop()


def test_ps_devices_lists_capabilities(tmp_path: Path) -> None:
    kernel = Kernel(
        Settings(home=tmp_path, admin_token=ADMIN),
        [MockDevice(name="text0"), MockDevice(name="vis0", capabilities=("text", "vision"))],
    )
    with serving(create_app(kernel)) as url:
        for command in (["ps", "--devices"], ["devices"]):
            result = CliRunner().invoke(
                build_app(), [*command, "--url", url, "--token", ADMIN], env={"COLUMNS": "200"}
            )
            assert result.exit_code == 0, result.output
            assert "CAPABILITIES" in result.output
            rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
            assert "text, vision" in rows["vis0"] and "vision" not in rows["text0"]
