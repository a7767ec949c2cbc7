"""LlamaCppDevice (embedded xllamacpp) with the real SmolLM2: the shared device
behaviour, plus the lock on the engine's own loopback listener."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from llmos.devices import LlamaCppDevice, default_model_path
from llmos.errors import DeviceError
from llmos.types import SamplingParams, Snapshot, Token
from tests import _device_behaviour as behaviour

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def device() -> AsyncIterator[LlamaCppDevice]:
    dev = LlamaCppDevice(
        default_model_path(), slots=2, ctx=512, threads=behaviour.THREADS, name="test0"
    )
    await dev.start()
    try:
        yield dev
    finally:
        await dev.close()


async def _metrics(device: LlamaCppDevice) -> dict[str, float]:
    return await behaviour.engine_metrics(device.listening_address, device.api_key)


async def test_health(device: LlamaCppDevice) -> None:
    await behaviour.check_health(device)


async def test_tokenize_round_trip(device: LlamaCppDevice) -> None:
    await behaviour.check_tokenize_round_trip(device)


async def test_render_chat(device: LlamaCppDevice) -> None:
    await behaviour.check_render_chat(device)


async def test_greedy_length(device: LlamaCppDevice) -> None:
    await behaviour.check_greedy_length(device)


async def test_stop_by_close(device: LlamaCppDevice) -> None:
    await behaviour.check_stop_by_close(device, lambda: _metrics(device))


async def test_stop_by_cancel(device: LlamaCppDevice) -> None:
    await behaviour.check_stop_by_cancel(device, lambda: _metrics(device))


async def test_greedy_resume(device: LlamaCppDevice) -> None:
    await behaviour.check_greedy_resume(device)


async def test_json_schema(device: LlamaCppDevice) -> None:
    await behaviour.check_json_schema(device)


@pytest.mark.xfail(strict=True, reason="llama.cpp restarts the grammar on resume")
async def test_json_schema_resume(device: LlamaCppDevice) -> None:
    await behaviour.check_json_schema_resume(device)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}])
async def test_engine_listener_needs_the_device_key(
    device: LlamaCppDevice, headers: dict[str, str]
) -> None:
    """The engine's loopback listener is no door around the kernel's access control."""
    url = device.listening_address
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as client:
        for path, body in [
            ("/completion", {"prompt": "Hello", "n_predict": 1}),
            ("/v1/completions", {"prompt": "Hello", "max_tokens": 1}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
            ("/tokenize", {"content": "Hello"}),
            ("/apply-template", {"messages": [{"role": "user", "content": "Hi"}]}),
        ]:
            r = await client.post(path, json=body)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
        for path in ("/slots", "/props", "/metrics", "/v1/models"):
            r = await client.get(path)
            assert r.status_code == 401, (path, r.status_code, r.text[:200])
    # The device itself holds the key.
    assert await device.tokenize("Hello")


async def test_not_started_raises_device_error() -> None:
    dev = LlamaCppDevice(default_model_path(), slots=1, ctx=64, name="cold")
    try:
        assert await dev.health() is False
        with pytest.raises(DeviceError, match="not started"):
            await dev.tokenize("x")
        with pytest.raises(DeviceError, match="not started"):
            async for _ in dev.generate(Snapshot([1], SamplingParams(max_tokens=1))):
                pass
    finally:
        await dev.close()


async def test_bad_model_path_raises_device_error(tmp_path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a gguf file")
    dev = LlamaCppDevice(bad, slots=1, ctx=64, name="bad")
    try:
        with pytest.raises(DeviceError, match="cannot load model"):
            await dev.start()
    finally:
        await dev.close()


async def test_close_during_generation_and_restart() -> None:
    """close() stops a running generation (its iterator raises DeviceError rather than
    ending as if the model had finished), and the device can be started again."""
    dev = LlamaCppDevice(
        default_model_path(), slots=1, ctx=256, threads=behaviour.THREADS, name="restart"
    )
    try:
        await dev.start()
        prompt = await behaviour.chat_prompt(dev, behaviour.STORY)
        gen = dev.generate(Snapshot(prompt, behaviour.greedy(32)))
        try:
            assert isinstance(await anext(gen), Token)
            await dev.close()
            assert await dev.health() is False
            with pytest.raises(DeviceError, match="closed"):
                async for _ in gen:
                    pass
        finally:
            await gen.aclose()
        assert dev.in_flight == 0
        await dev.start()
        tokens, finished = await behaviour.collect(dev, Snapshot(prompt, behaviour.greedy(3)))
        assert len(tokens) == 3 and finished.reason == "length"
    finally:
        await dev.close()
