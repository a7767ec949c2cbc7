"""The Ray actor that hosts one device replica on some node of the cluster.

It builds the engine its spec declares (an embedded llama.cpp, an OpenAI-compatible
server's client, or the mock engine) and serves the device interface to the
kernel's RayDevice (ray_device.py): `generate` is a streaming method, one device
event per item. The actor is async, so generations run concurrently up to the
engine's slots, as they would in the kernel's own process.

This module is imported on the nodes: it needs ray only through its caller."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from llmos.devices.base import Device
from llmos.devices.cluster_spec import DeviceSpec
from llmos.types import DeviceEvent, Snapshot


def build(spec: DeviceSpec, name: str) -> Device:
    """The engine of a replica, on the node it was placed on."""
    caps = spec.capabilities
    if spec.engine == "mock":
        from llmos.devices.mock import MockDevice

        return MockDevice(
            name=name,
            model=spec.model_id,
            slots=spec.slots,
            context_length=spec.ctx,
            token_delay=spec.token_delay,
            capabilities=caps,
        )
    if spec.engine == "openai":
        from llmos.devices.openai_http import OpenAIHttpDevice

        assert spec.url is not None
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return OpenAIHttpDevice(
            spec.url,
            api_key=key,
            name=name,
            model=spec.model_id,
            slots=spec.slots,
            ctx=spec.ctx,
            capabilities=caps,
        )
    from llmos.devices.catalog import default_model_path
    from llmos.devices.llamacpp import LlamaCppDevice

    path = Path(spec.model_path) if spec.model_path else default_model_path()
    return LlamaCppDevice(
        path, slots=spec.slots, ctx=spec.ctx, threads=spec.threads, name=name, model=spec.model_id
    )


class EngineHost:
    """One replica's engine; every method is called by the kernel through Ray."""

    def __init__(self, spec: DeviceSpec, name: str) -> None:
        self.device = build(spec, name)
        self._ids = itertools.count(1)
        self._pulled: dict[int, tuple[asyncio.Task[None], asyncio.Queue[Any]]] = {}

    async def start(self) -> dict[str, Any]:
        import ray

        await self.device.start()
        d = self.device
        return {
            "kind": d.kind,
            "model": d.model,
            "slots": d.slots,
            "context_length": d.context_length,
            "capabilities": sorted(d.capabilities),
            "resumable": d.resumable,
            "tunable": d.tunable,
            "batch": d.batch,
            "train_context": d.train_context,
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    async def close(self) -> None:
        await self.device.close()

    async def health(self) -> bool:
        return await self.device.health()

    async def tokenize(self, text: str) -> list[int]:
        return await self.device.tokenize(text)

    async def detokenize(self, ids: list[int]) -> str:
        return await self.device.detokenize(ids)

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return await self.device.render_chat(messages)

    async def engine_metrics(self) -> dict[str, float]:
        return await self.device.engine_metrics()

    async def reconfigure(self, slots: int, context_length: int, batch: int | None) -> None:
        await self.device.reconfigure(slots=slots, context_length=context_length, batch=batch)

    def details(self) -> dict[str, Any]:
        return {**self.device.details(), "in_flight": self.device.in_flight}

    async def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        """Streamed to the kernel; cancelling the Ray task closes the engine's
        generation (its slot is free once this generator has closed)."""
        async with aclosing(self.device.generate(snapshot)) as events:
            async for event in events:
                yield event

    # -- pulled streams, for kernels on Ray Client (ray://), which cannot stream ----
    async def open(self, snapshot: Snapshot) -> int:
        """Start a generation whose events the kernel pulls with `next`."""
        sid = next(self._ids)
        queue: asyncio.Queue[DeviceEvent | BaseException | None] = asyncio.Queue()

        async def run() -> None:
            try:
                async with aclosing(self.device.generate(snapshot)) as events:
                    async for event in events:
                        queue.put_nowait(event)
                queue.put_nowait(None)
            except Exception as exc:  # handed to the kernel by `next`
                queue.put_nowait(exc)

        self._pulled[sid] = (asyncio.get_running_loop().create_task(run()), queue)
        return sid

    async def next(self, sid: int, wait_s: float) -> tuple[list[DeviceEvent], bool]:
        """The events ready (waiting up to `wait_s` for the first), and whether the
        generation has ended. Raises what the generation raised."""
        task, queue = self._pulled[sid]
        out: list[DeviceEvent] = []
        try:
            async with asyncio.timeout(wait_s):
                item = await queue.get()
        except TimeoutError:
            return out, False
        while True:
            if item is None or isinstance(item, BaseException):
                self._pulled.pop(sid, None)
                await task
                if isinstance(item, BaseException):
                    raise item
                return out, True
            out.append(item)
            if queue.empty():
                return out, False
            item = queue.get_nowait()

    async def cancel(self, sid: int) -> None:
        """Stop a pulled generation; returns once its slot is free."""
        entry = self._pulled.pop(sid, None)
        if entry is not None:
            entry[0].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry[0]
