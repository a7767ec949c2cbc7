"""Embedded llama.cpp through the xllamacpp wheel.

Generation runs in-process: `Server.handle_completions` with a callback per chunk,
on a worker thread (it releases the GIL). Returning True from the callback cancels
the generation at that token. Token ids arrive in the chunks' logprobs.

With a multimodal projector (`mmproj`, a VLM's second GGUF file) the device has the
`vision` capability: a chat with image parts goes whole, as messages, to
`handle_chat_completions` (text pieces come back, no ids: not resumable). llama.cpp
takes OpenAI's `image_url` parts there (without a projector it refuses them: "image
input is not supported"); checked with SmolLM2 only, as no VLM ships in a package here.

The engine also opens a loopback HTTP listener; we use it for /tokenize,
/detokenize and /apply-template, and lock it with a random API key that only this
object knows, so it is no door around the kernel's access control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from llmos.devices._engine_metrics import EngineProbe
from llmos.devices._oai import (
    chat_body,
    completion_body,
    parse_chat_chunk,
    parse_chunk,
    raise_for_error,
)
from llmos.devices.base import Device
from llmos.errors import DeviceError
from llmos.types import DeviceEvent, Finished, Snapshot

log = logging.getLogger(__name__)


class _Done:
    __slots__ = ("error", "result")

    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error


class LlamaCppDevice(Device):
    kind = "llamacpp"
    tunable = True

    def __init__(
        self,
        model_path: Path,
        *,
        slots: int = 4,
        ctx: int = 2048,
        threads: int = 2,
        name: str = "llamacpp0",
        model: str | None = None,
        port: int = 0,
        api_key: str | None = None,
        cache_ram_mib: int = 256,
        batch: int | None = None,
        mmproj: Path | None = None,
    ) -> None:
        super().__init__(
            name=name,
            model=model or model_path.stem,
            slots=slots,
            context_length=ctx,
            capabilities=("text", "vision") if mmproj is not None else ("text",),
        )
        self.model_path = model_path
        self.mmproj = mmproj  # a VLM's projector: image parts are understood
        self.threads = threads
        self.batch = batch  # n_batch = n_ubatch; None: llama.cpp's defaults (2048, 512)
        self._reloaded: asyncio.Event | None = None  # set while reconfigure reloads: wait on it
        self._posts = 0  # calls to the engine's listener in flight (a reload waits for them)
        # llama.cpp keeps evicted prompts' KV in host RAM for reuse; its default cap
        # (8 GiB) lets a busy kernel's memory grow by gigabytes. Bounded here.
        self.cache_ram_mib = cache_ram_mib
        self.port = port
        # The engine's own listener answers only to this key.
        self.api_key = api_key or secrets.token_urlsafe(32)
        self._server: Any = None
        self._http: httpx.AsyncClient | None = None
        self._probe: EngineProbe | None = None  # /metrics, /slots
        self._pool: ThreadPoolExecutor | None = None
        self._stops: set[threading.Event] = set()  # one per running generation

    # -- lifecycle -----------------------------------------------------------------
    def _load(self) -> Any:
        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = str(self.model_path)
        if self.mmproj is not None:
            p.mmproj.path = str(self.mmproj)
        p.n_parallel = self.slots
        p.n_ctx = self.slots * self.context_length  # shared by all slots
        if self.batch is not None:
            p.n_batch = p.n_ubatch = self.batch
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.cache_prompt = True
        p.cache_ram_mib = self.cache_ram_mib
        p.endpoint_metrics = True
        p.endpoint_slots = True  # KV-cache use (engine_metrics)
        p.api_keys = [self.api_key]
        p.verbosity = -1
        p.port = self.port
        return xllamacpp.Server(p)

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = await asyncio.to_thread(self._load)
        except Exception as e:  # foreign error, translated at the boundary
            raise DeviceError(f"cannot load model {self.model_path}: {e}") from e
        self._pool = ThreadPoolExecutor(max_workers=self.slots + 2, thread_name_prefix=self.name)
        self._http = httpx.AsyncClient(
            base_url=self.listening_address,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=httpx.Timeout(30.0),
        )
        self._probe = EngineProbe(self._http)
        self.train_context = await self._read_train_context()

    async def _read_train_context(self) -> int | None:
        """The model's training context (n_ctx_train in /v1/models' meta), if told."""
        assert self._http is not None
        try:
            data = (await self._http.get("/v1/models")).json()
            return int(data["data"][0]["meta"]["n_ctx_train"]) or None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return None

    @property
    def engine(self) -> Any:
        """The xllamacpp.Server itself, for driving the engine directly (tests, bench)."""
        return self._server

    @property
    def listening_address(self) -> str:
        address = str(self._server.listening_address)
        return address if address.startswith("http") else f"http://{address}"

    async def close(self) -> None:
        """Stop running generations at their next token (their iterators then raise
        DeviceError), wait for the engine threads without blocking the loop, release."""
        self._server = None
        for stop in list(self._stops):
            stop.set()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._probe = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def reconfigure(self, *, slots: int, context_length: int, batch: int | None) -> None:
        """Reload the engine with n_parallel = slots, n_ctx = slots x context_length and
        n_batch = n_ubatch = batch (SmolLM2 reloads in 1-2 s). Tokenize and health calls
        made meanwhile wait for the new engine; if it fails to load, the old settings
        are loaded again and DeviceError is raised."""
        old = (self.slots, self.context_length, self.batch)
        reloaded = self._reloaded = asyncio.Event()
        try:
            for _ in range(500):  # calls already on the wire finish first (5 s at most)
                if not self._posts:
                    break
                await asyncio.sleep(0.01)
            await self.close()
            self.slots, self.context_length, self.batch = slots, context_length, batch
            try:
                await self.start()
            except DeviceError as exc:
                self.slots, self.context_length, self.batch = old
                await self.start()
                raise DeviceError(f"device {self.name} kept its settings: {exc.message}") from exc
        finally:
            self._reloaded = None
            reloaded.set()

    async def _engine_ready(self) -> None:
        if self._reloaded is not None:
            await self._reloaded.wait()

    # -- text <-> tokens ----------------------------------------------------------
    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._engine_ready()
        if self._http is None:
            raise DeviceError(f"device {self.name} is not started")
        self._posts += 1
        try:
            r = await self._http.post(path, json=body)
        except httpx.HTTPError as e:
            raise DeviceError(f"engine {self.name} unreachable: {e}") from e
        finally:
            self._posts -= 1
        data: dict[str, Any] = r.json()
        raise_for_error(data)
        return data

    async def tokenize(self, text: str) -> list[int]:
        data = await self._post(
            "/tokenize", {"content": text, "add_special": True, "parse_special": True}
        )
        return [int(t) for t in data["tokens"]]

    async def detokenize(self, ids: list[int]) -> str:
        return str((await self._post("/detokenize", {"tokens": ids}))["content"])

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str((await self._post("/apply-template", {"messages": messages}))["prompt"])

    async def health(self) -> bool:
        await self._engine_ready()
        if self._http is None:
            return False
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def engine_metrics(self) -> dict[str, float]:
        return await self._probe.read() if self._probe is not None else {}

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_path": str(self.model_path), "threads": self.threads}
        if self.mmproj is not None:
            out["mmproj"] = str(self.mmproj)
        return out

    # -- generation ---------------------------------------------------------------
    async def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        if self._server is None or self._pool is None:
            raise DeviceError(f"device {self.name} is not started")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        server = self._server
        chat = snapshot.messages is not None  # handed over whole (image parts)
        body = chat_body(snapshot) if chat else completion_body(snapshot)
        handle = server.handle_chat_completions if chat else server.handle_completions
        parse = parse_chat_chunk if chat else parse_chunk

        def on_chunk(chunk: Any) -> bool:
            if stop.is_set():
                return True
            try:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except RuntimeError:  # the loop is gone: nobody listens any more
                return True
            return False

        def run() -> None:
            try:
                result = handle(body, on_chunk)
                done = _Done(result=result)
            except BaseException as e:
                done = _Done(error=e)
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(queue.put_nowait, done)

        self.in_flight += 1
        self._stops.add(stop)
        future = loop.run_in_executor(self._pool, run)
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if stop.is_set():  # only close() sets it while we listen
                    raise DeviceError(f"device {self.name} was closed during the generation")
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise DeviceError(f"engine error: {item.error}") from item.error
                    if isinstance(item.result, dict):
                        raise_for_error(item.result)
                    # The engine ended without a finish chunk: treat as end of sequence.
                    yield Finished(reason="stop")
                    return
                for event in parse(item):
                    yield event
                    finished = finished or isinstance(event, Finished)
        finally:
            # Invariant: the slot is free once this returns (the engine thread is done).
            stop.set()
            try:
                await asyncio.shield(future)
            finally:
                self._stops.discard(stop)
                self.in_flight -= 1
