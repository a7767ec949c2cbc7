"""OpenAIHttpDevice against a real llama.cpp server (a subprocess, tests/_llama_server.py):
the shared device behaviour in token mode, plus connecting, probing and failing."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from llmos.devices import OpenAIHttpDevice, default_model_path
from llmos.errors import DeviceError
from llmos.types import Snapshot
from tests import _device_behaviour as behaviour
from tests._llama_server import free_port, llama_server

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

API_KEY = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with llama_server(
        default_model_path(), slots=2, ctx=512, threads=behaviour.THREADS, api_key=API_KEY
    ) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def device(server_url: str) -> AsyncIterator[OpenAIHttpDevice]:
    # Deliberately wrong sizes: the device must read the real ones from /props.
    dev = OpenAIHttpDevice(server_url, api_key=API_KEY, slots=7, ctx=999, name="http-test")
    try:
        await dev.start()
        yield dev
    finally:
        await dev.close()


def _metrics(server_url: str) -> behaviour.Metrics:
    return lambda: behaviour.engine_metrics(server_url, API_KEY)


async def test_start_probes_token_mode_and_props(device: OpenAIHttpDevice) -> None:
    assert device.token_ids is True
    assert device.slots == 2 and device.context_length == 512
    assert device.model.endswith(".gguf")  # the server's first model id
    info = await device.info()
    assert info.kind == "openai-http"
    assert info.details == {"url": device.v1, "token_ids": True}


async def test_health(device: OpenAIHttpDevice) -> None:
    await behaviour.check_health(device)


async def test_tokenize_round_trip(device: OpenAIHttpDevice) -> None:
    await behaviour.check_tokenize_round_trip(device)


async def test_render_chat(device: OpenAIHttpDevice) -> None:
    await behaviour.check_render_chat(device)


async def test_greedy_length(device: OpenAIHttpDevice) -> None:
    await behaviour.check_greedy_length(device)


async def test_stop_by_close(device: OpenAIHttpDevice, server_url: str) -> None:
    await behaviour.check_stop_by_close(device, _metrics(server_url))


async def test_stop_by_cancel(device: OpenAIHttpDevice, server_url: str) -> None:
    await behaviour.check_stop_by_cancel(device, _metrics(server_url))


async def test_greedy_resume(device: OpenAIHttpDevice) -> None:
    await behaviour.check_greedy_resume(device)


async def test_json_schema(device: OpenAIHttpDevice) -> None:
    await behaviour.check_json_schema(device)


async def test_url_with_or_without_v1(server_url: str) -> None:
    for url in (server_url + "/v1", server_url + "/v1/", server_url + "/"):
        dev = OpenAIHttpDevice(url, api_key=API_KEY)
        try:
            await dev.start()
            assert dev.root == server_url and dev.v1 == server_url + "/v1"
            assert dev.token_ids
        finally:
            await dev.close()


async def test_start_on_closed_port_raises_device_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    dev = OpenAIHttpDevice(url, timeout=5.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(DeviceError) as info:
            await dev.start()
    finally:
        await dev.close()
    assert time.monotonic() - t0 < 5.0, "start() hung on a closed port"
    message = info.value.message
    assert url in message and "cannot reach" in message
    assert "\n" not in message and "Traceback" not in message
    # A closed device answers, it does not raise foreign errors.
    assert await dev.health() is False
    with pytest.raises(DeviceError, match="closed"):
        await dev.tokenize("x")


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_start_with_bad_api_key_raises_device_error(server_url: str, key: str | None) -> None:
    dev = OpenAIHttpDevice(server_url, api_key=key)
    try:
        with pytest.raises(DeviceError, match="401"):
            await dev.start()
    finally:
        await dev.close()


async def test_text_mode_chat(server_url: str) -> None:
    """Text mode (servers without /tokenize): messages go to /v1/chat/completions and
    tokens come back as text pieces without ids; usage still reaches Finished."""
    dev = OpenAIHttpDevice(server_url, api_key=API_KEY)
    try:
        await dev.start()
        dev.token_ids = False  # as if the probe had failed
        messages = [{"role": "user", "content": behaviour.STORY}]
        snapshot = Snapshot([], behaviour.greedy(6), messages=messages)
        tokens, finished = await behaviour.collect(dev, snapshot)
        assert len(tokens) == 6 and all(t.id == -1 and t.text for t in tokens)
        assert finished.reason == "length" and finished.prompt_tokens > 10
        question = 'Is the sky blue? Answer with a JSON object like {"sky_is_blue": true}.'
        snapshot = Snapshot(
            [],
            behaviour.greedy(32, json_schema=behaviour.SCHEMA),
            messages=[{"role": "user", "content": question}],
        )
        tokens, finished = await behaviour.collect(dev, snapshot)
        assert finished.reason == "stop"
        assert isinstance(json.loads("".join(t.text for t in tokens))["sky_is_blue"], bool)
        assert dev.in_flight == 0
    finally:
        await dev.close()
