"""`AsyncClient`: `Client` for asyncio code; the same methods, awaited."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, Unpack

import httpx

from llmos.params import DEFAULT_PRIORITY
from llmos.sdk import _wire
from llmos.sdk._access import AsyncAccessMixin
from llmos.sdk._agents import AsyncAgentsMixin
from llmos.sdk._alerts import AsyncAlertsMixin
from llmos.sdk._apps import AsyncAppsMixin
from llmos.sdk._audio import AsyncAudioMixin
from llmos.sdk._backup import AsyncBackupMixin
from llmos.sdk._batches import AsyncBatchesMixin
from llmos.sdk._cluster import AsyncClusterMixin
from llmos.sdk._config import DEFAULT_TIMEOUT, resolve_timeout, resolve_token, resolve_url
from llmos.sdk._errors import error_from_response, transport_error
from llmos.sdk._fs import AsyncFilesMixin
from llmos.sdk._jobs import AsyncJobsMixin
from llmos.sdk._key import AsyncKeyMixin
from llmos.sdk._learn import AsyncLearnMixin
from llmos.sdk._mcp import AsyncMcpMixin
from llmos.sdk._sysmon import AsyncSysmonMixin
from llmos.sdk._tools import AsyncToolsMixin
from llmos.sdk._tune import AsyncTuneMixin
from llmos.sdk._wire import ChatResult, MessageParams, Messages, SchedulerKnobs


class AsyncClient(
    AsyncFilesMixin,
    AsyncAccessMixin,
    AsyncAgentsMixin,
    AsyncAlertsMixin,
    AsyncAppsMixin,
    AsyncAudioMixin,
    AsyncBackupMixin,
    AsyncBatchesMixin,
    AsyncClusterMixin,
    AsyncJobsMixin,
    AsyncKeyMixin,
    AsyncLearnMixin,
    AsyncMcpMixin,
    AsyncSysmonMixin,
    AsyncToolsMixin,
    AsyncTuneMixin,
):
    """`Client` for asyncio: the same constructor and methods, awaited; `stream`
    is an async iterator. Close it with `aclose()` (or `close()`), or use it as an
    async context manager. `transport` is httpx's seam, for tests."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=resolve_timeout(timeout),
            transport=transport,
        )
        self._model: str | None = None  # first id from /v1/models, once asked

    # -- lifecycle -----------------------------------------------------------------
    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    # -- LLM -----------------------------------------------------------------------
    async def models(self) -> list[dict[str, Any]]:
        return _wire.data_of(await self._request("GET", "/v1/models"))

    async def chat(
        self,
        messages_or_text: Messages,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        **extra: Any,
    ) -> ChatResult:
        body = _wire.body_of(
            model or await self._default_model(),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            extra=extra,
        )
        body["messages"] = _wire.messages_of(messages_or_text)
        return _wire.result_of(await self._request("POST", _wire.CHAT_PATH, body))

    async def complete(
        self,
        prompt: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        **extra: Any,
    ) -> ChatResult:
        body = _wire.body_of(
            model or await self._default_model(),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            extra=extra,
        )
        body["prompt"] = prompt
        return _wire.result_of(await self._request("POST", _wire.COMPLETIONS_PATH, body))

    async def stream(
        self,
        messages_or_text: Messages,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        **extra: Any,
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas as they are generated. An error event in the
        stream (e.g. the process was killed) raises ApiError where it arrives.
        Nothing is sent until the first delta is asked for."""
        body = _wire.body_of(
            model or await self._default_model(),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            extra=extra,
            stream=True,
        )
        body["messages"] = _wire.messages_of(messages_or_text)
        async with aclosing(self._sse(_wire.CHAT_PATH, body)) as deltas:
            async for delta in deltas:
                yield delta

    # -- processes -----------------------------------------------------------------
    async def processes(self) -> list[dict[str, Any]]:
        """Every process this token may see, finished ones included."""
        return _wire.data_of(await self._request("GET", _wire.PROCESSES_PATH))

    async def spawn(
        self,
        name: str,
        priority: int = DEFAULT_PRIORITY,
        *,
        max_concurrent: int | None = None,
        token_budget: int | None = None,
        memory_shared: bool = False,
    ) -> dict[str, Any]:
        """A new process; its `token` makes requests that are accounted to it.
        Quotas: at most `max_concurrent` requests in flight (more get a 429 with
        `retry_after`), at most `token_budget` tokens in and out in all (then 403).
        `memory_shared`: it may also read and write its owner's shared memories."""
        body = _wire.spawn_body(
            name,
            priority,
            max_concurrent=max_concurrent,
            token_budget=token_budget,
            memory_shared=memory_shared,
        )
        proc: dict[str, Any] = await self._request("POST", _wire.PROCESSES_PATH, body)
        return proc

    async def process(self, pid: int) -> dict[str, Any]:
        proc: dict[str, Any] = await self._request("GET", _wire.process_url(pid))
        return proc

    async def kill(self, pid: int) -> dict[str, Any]:
        proc: dict[str, Any] = await self._request("DELETE", _wire.process_url(pid))
        return proc

    # -- conversations -------------------------------------------------------------
    async def send(self, pid: int, content: str, **params: Unpack[MessageParams]) -> ChatResult:
        """One user turn of process `pid`'s kernel-kept conversation, and the reply.
        Send only the new turn: the kernel adds the core block, recent turns and
        recalled memories, and keeps both turns (see `history`, `context`)."""
        body = _wire.message_body(content, params)
        return _wire.result_of(
            await self._request("POST", _wire.process_url(pid, "messages"), body)
        )

    def send_stream(
        self, pid: int, content: str, **params: Unpack[MessageParams]
    ) -> AsyncIterator[str]:
        """`send`, with the reply's text deltas yielded as they are generated.
        Nothing is sent until the first delta is asked for."""
        body = _wire.message_body(content, params, stream=True)
        return self._sse(_wire.process_url(pid, "messages"), body)

    async def history(self, pid: int) -> list[dict[str, Any]]:
        """Every turn of the conversation, oldest first: idx, role, content, tokens,
        and `memory_id` once the turn has been paged out to long-term memory."""
        return _wire.data_of(await self._request("GET", _wire.process_url(pid, "messages")))

    async def context(self, pid: int) -> dict[str, Any]:
        """What the last prompt held: budget, window_start and its `parts` (core,
        recent_turns, recalled, new_turn) with their token counts."""
        view: dict[str, Any] = await self._request("GET", _wire.process_url(pid, "context"))
        return view

    async def core(self, pid: int) -> dict[str, Any]:
        """The conversation's system prompt and pinned facts, sent with every turn."""
        core: dict[str, Any] = await self._request("GET", _wire.process_url(pid, "core"))
        return core

    async def set_core(
        self, pid: int, system: str | None = None, pinned: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Replace the system prompt and/or the pinned facts (None = leave as is)."""
        body = _wire.core_body(system, pinned)
        core: dict[str, Any] = await self._request("PUT", _wire.process_url(pid, "core"), body)
        return core

    # -- system --------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._request("GET", "/v1/sys/info")
        return info

    async def devices(self) -> list[dict[str, Any]]:
        return _wire.data_of(await self._request("GET", "/v1/sys/devices"))

    async def scheduler(self) -> dict[str, Any]:
        """The scheduling policy, its knobs, and preemption/queue counters."""
        state: dict[str, Any] = await self._request("GET", _wire.SCHEDULER_PATH)
        return state

    async def set_scheduler(
        self, policy: str | None = None, **knobs: Unpack[SchedulerKnobs]
    ) -> dict[str, Any]:
        """Switch policy and/or knobs at run time (admin only); waiting requests move
        to the new policy. Only the arguments given (not None) are sent. Returns the
        new state, as `scheduler()`."""
        body = _wire.scheduler_body(policy, knobs)
        state: dict[str, Any] = await self._request("PUT", _wire.SCHEDULER_PATH, body)
        return state

    # -- memory --------------------------------------------------------------------
    async def mem_add(
        self,
        text: str,
        *,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        shared: bool = False,
        pid: int | None = None,
    ) -> dict[str, Any]:
        """Remember `text`. A process token stores it for its process (or, with
        `shared`, for its owner, if spawned with `memory_shared`); a user token in the
        user's namespace, or for process `pid`."""
        body = _wire.memory_body(text, tags=tags, meta=meta, shared=shared, pid=pid)
        memory: dict[str, Any] = await self._request("POST", _wire.MEMORIES_PATH, body)
        return memory

    async def mem_search(
        self, query: str, k: int = 5, tag: str | None = None
    ) -> list[dict[str, Any]]:
        """The `k` memories in scope closest to `query` by meaning and words, best
        first, each with a `score`."""
        body = _wire.memory_search_body(query, k, tag)
        return _wire.data_of(await self._request("POST", _wire.MEMORIES_SEARCH_PATH, body))

    async def mem_get(self, id: int) -> dict[str, Any]:
        memory: dict[str, Any] = await self._request("GET", _wire.memory_url(id))
        return memory

    async def mem_update(
        self,
        id: int,
        *,
        text: str | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change a memory's text, tags or metadata (None = leave as is)."""
        body = _wire.memory_body(text, tags=tags, meta=meta)
        memory: dict[str, Any] = await self._request("PATCH", _wire.memory_url(id), body)
        return memory

    async def mem_delete(self, id: int) -> dict[str, Any]:
        memory: dict[str, Any] = await self._request("DELETE", _wire.memory_url(id))
        return memory

    async def mem_list(
        self, tag: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Memories in scope (with `tag`), newest first."""
        params = _wire.memory_list_params(tag, limit, offset)
        return _wire.data_of(await self._request("GET", _wire.MEMORIES_PATH, params=params))

    # -- plumbing ------------------------------------------------------------------
    async def _default_model(self) -> str:
        if self._model is None:
            self._model = _wire.first_model(await self.models())
        return self._model

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        return _wire.json_of(await self._send(method, path, json=body, **kwargs), self.url)

    async def _sse(self, path: str, body: dict[str, Any]) -> AsyncGenerator[str, None]:
        """POST `body` and yield the text deltas of the server-sent events answered."""
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    event = _wire.sse_event(line)
                    if event is _wire.DONE:
                        return
                    if isinstance(event, str):
                        yield event
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        raise _wire.truncated_stream()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
