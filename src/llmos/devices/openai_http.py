"""Any OpenAI-compatible server over HTTP (llama-server, vLLM, Ollama, a hosted API).

Two modes, chosen by probing at start:
- token mode, when the server tokenizes (`/tokenize`, and `/apply-template` for chat,
  as llama-server does): prompts travel as token ids to `/v1/completions`, ids come
  back in logprobs, so generations can be stopped and resumed exactly;
- text mode otherwise: chat goes to `/v1/chat/completions` as messages and tokens
  are text pieces without ids (counted, not resumable).
A chat with image or audio parts (a server with a VLM: `capabilities` says so) goes
as messages to `/v1/chat/completions` in either mode, the parts unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
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
from llmos.errors import DeviceError, InvalidRequest, LlmosError
from llmos.types import DeviceEvent, Finished, Snapshot

# HTTP statuses that blame the request, not the server: they fail the request at once
# instead of counting against the device (kernel/breaker.py).
_REQUEST_ERRORS = frozenset({400, 413, 422})


class OpenAIHttpDevice(Device):
    kind = "openai-http"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        name: str = "http0",
        model: str | None = None,
        slots: int = 4,
        ctx: int = 2048,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        capabilities: Iterable[str] = ("text",),
    ) -> None:
        super().__init__(
            name=name,
            model=model or "",
            slots=slots,
            context_length=ctx,
            capabilities=capabilities,
        )
        base = url.rstrip("/")
        self.v1 = base if base.endswith("/v1") else base + "/v1"
        self.root = self.v1[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport
        )
        self.token_ids = False
        self._slots_given = slots
        self._ctx_given = ctx
        self._closed = False
        self._probe = EngineProbe(self._http, self.root)  # llama-server's, vLLM's /metrics

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"device {self.name} is closed")

    @property
    def resumable(self) -> bool:
        return self.token_ids

    async def start(self) -> None:
        self._check_open()
        try:
            r = await self._http.get(self.v1 + "/models")
        except httpx.HTTPError as e:
            reason = str(e) or type(e).__name__
            raise DeviceError(
                f"cannot reach OpenAI-compatible server at {self.v1}: {reason}"
            ) from e
        if r.status_code in (401, 403):
            raise DeviceError(f"server at {self.v1} rejected the API key (HTTP {r.status_code})")
        try:
            r.raise_for_status()
            listing = r.json()
            models = (listing.get("data") if isinstance(listing, dict) else None) or []
        except (httpx.HTTPError, ValueError) as e:
            raise DeviceError(f"{self.v1}/models failed: {e}") from e
        if not self.model:
            if not models or not isinstance(models[0], dict) or "id" not in models[0]:
                raise DeviceError(f"server at {self.v1} lists no models")
            self.model = str(models[0]["id"])
        try:
            await self.tokenize("probe")
            await self.render_chat([{"role": "user", "content": "probe"}])
            self.token_ids = True
        except LlmosError:
            self.token_ids = False
        if self.token_ids:
            await self._read_props()

    async def _read_props(self) -> None:
        """llama-server tells its slot count and per-slot context in /props."""
        try:
            props = (await self._http.get(self.root + "/props")).json()
        except (httpx.HTTPError, ValueError):
            return
        if not isinstance(props, dict):
            return
        self.slots = int(props.get("total_slots") or self._slots_given)
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if n_ctx:
            self.context_length = int(n_ctx)

    async def close(self) -> None:
        self._closed = True
        await self._http.aclose()

    async def health(self) -> bool:
        if self._closed:
            return False
        for path in (self.root + "/health", self.v1 + "/models"):
            try:
                if (await self._http.get(path)).status_code == 200:
                    return True
            except httpx.HTTPError:
                continue
        return False

    async def _post(self, path: str, body: dict[str, Any], key: str) -> Any:
        """POST to a llama-server route; return the answer's `key` field."""
        self._check_open()
        try:
            r = await self._http.post(self.root + path, json=body)
            data = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise DeviceError(f"{path} failed on {self.root}: {e}") from e
        if not isinstance(data, dict):
            raise DeviceError(f"{path} on {self.root} answered HTTP {r.status_code}, not an object")
        raise_for_error(data)
        if r.status_code >= 400 or key not in data:
            raise DeviceError(f"{path} failed on {self.root}: HTTP {r.status_code}")
        return data[key]

    async def tokenize(self, text: str) -> list[int]:
        body = {"content": text, "add_special": True, "parse_special": True}
        tokens = await self._post("/tokenize", body, "tokens")
        try:
            return [int(t) for t in tokens]
        except (TypeError, ValueError) as e:
            raise DeviceError(f"/tokenize on {self.root} answered no token ids") from e

    async def detokenize(self, ids: list[int]) -> str:
        return str(await self._post("/detokenize", {"tokens": ids}, "content"))

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(await self._post("/apply-template", {"messages": messages}, "prompt"))

    async def engine_metrics(self) -> dict[str, float]:
        return {} if self._closed else await self._probe.read()

    def details(self) -> dict[str, Any]:
        return {"url": self.v1, "token_ids": self.token_ids}

    async def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        self._check_open()
        ids = self.token_ids and snapshot.messages is None
        if ids:
            path, body = "/completions", completion_body(snapshot, self.model)
        else:
            path, body = "/chat/completions", chat_body(snapshot, self.model)
        self.in_flight += 1
        try:
            async with self._http.stream("POST", self.v1 + path, json=body) as r:
                if r.status_code >= 400:
                    raise await self._refusal(r)
                async for event in self._events(r, ids):
                    yield event
                    if isinstance(event, Finished):
                        return
            yield Finished("stop")
        except httpx.HTTPError as e:
            raise DeviceError(f"stream from {self.v1} broke: {e}") from e
        finally:
            # Closing the response drops the connection; the server cancels the task.
            self.in_flight -= 1

    @staticmethod
    async def _refusal(r: httpx.Response) -> LlmosError:
        """The error an HTTP error answer means: the request's own (a 4xx such as a
        context overflow) or the device's (5xx, and any status we cannot tell)."""
        raw = await r.aread()
        try:
            error = json.loads(raw)
            if isinstance(error, dict):
                raise_for_error(error)
        except ValueError:
            pass
        except DeviceError as e:
            if r.status_code not in _REQUEST_ERRORS:
                return e
            return InvalidRequest(f"engine rejected the request: {e.message}")
        except LlmosError as e:
            return e
        if r.status_code in _REQUEST_ERRORS:
            return InvalidRequest(f"engine rejected the request (HTTP {r.status_code})")
        return DeviceError(f"engine answered HTTP {r.status_code}: {raw[:200]!r}")

    async def _events(self, r: httpx.Response, ids: bool) -> AsyncGenerator[DeviceEvent, None]:
        # Text mode: OpenAI-style servers send usage in a chunk after the finish_reason
        # (stream_options.include_usage), so the Finished waits for it or the stream end.
        # A stream that ends with neither [DONE] nor a finish_reason was cut: a failure.
        pending: Finished | None = None
        done = False
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError as e:
                raise DeviceError(f"stream from {self.v1} sent bad JSON: {data[:200]!r}") from e
            if not isinstance(chunk, dict):
                raise DeviceError(f"stream from {self.v1} sent a non-object: {data[:200]!r}")
            if ids:
                for event in parse_chunk(chunk):
                    yield event
                continue
            for event in parse_chat_chunk(chunk):
                if isinstance(event, Finished):
                    pending = event
                else:
                    yield event
            usage = chunk.get("usage")
            if pending is not None and isinstance(usage, dict):
                details = usage.get("prompt_tokens_details") or {}
                yield Finished(
                    pending.reason,
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    cached_tokens=int(details.get("cached_tokens") or 0),
                )
                return
        if pending is not None:
            yield pending
        elif not done:
            raise DeviceError(f"stream from {self.v1} ended before the generation finished")
