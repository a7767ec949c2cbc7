"""Agents from the SDK: run a program as a process, follow its output, wait for it,
suspend, resume or terminate it (mixins of `Client` and `AsyncClient`; each method
is one route of api/routes_agents.py).

    with Client() as llm:
        agent = llm.run_agent("examples/react_agent.py", "What is 17 * 23?")
        for text in llm.follow(agent["pid"]):
            print(text, end="")
        print(llm.wait(agent["pid"])["exit_code"])

The program's path is resolved here, and must exist on the kernel's machine."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmos.params import MAX_WAIT_S
from llmos.sdk._errors import ApiError

EXEC_PATH = "/v1/processes/exec"
POLL_S = 0.25  # `follow` asks for new output this often


def _url(pid: int, what: str) -> str:
    return f"/v1/processes/{int(pid)}/{what}"


def exec_body(
    path: str | os.PathLike[str],
    args: Sequence[str],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    body = {k: v for k, v in options.items() if v is not None}
    return {"path": os.path.abspath(os.fspath(path)), "args": list(args), **body}


def logs_params(
    stream: str, tail: int | None, offset: int | None, max_bytes: int | None
) -> dict[str, Any]:
    params = {"stream": stream, "tail": tail, "offset": offset, "max_bytes": max_bytes}
    return {k: v for k, v in params.items() if v is not None}


def _slice(deadline: float | None) -> float:
    """The next wait's timeout: at most MAX_WAIT_S, never past `deadline`."""
    if deadline is None:
        return MAX_WAIT_S
    return max(0.0, min(MAX_WAIT_S, deadline - time.monotonic()))


def _still_running(exc: ApiError, deadline: float | None) -> bool:
    """A 408 before our own deadline means: ask again."""
    return exc.status == 408 and (deadline is None or time.monotonic() < deadline)


def _finished(chunk: dict[str, Any]) -> bool:
    return not chunk.get("running") and chunk["next_offset"] >= chunk["end"]


class AgentsMixin:
    """Client's agent methods."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    def run_agent(
        self,
        path: str | os.PathLike[str],
        *args: str,
        name: str | None = None,
        priority: int | None = None,
        token_budget: int | None = None,
        max_concurrent: int | None = None,
        cpu_s: float | None = None,
        mem_mb: int | None = None,
        capabilities: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run the Python program at `path` as a new process; returns the process
        (pid, os_pid, command, ...). It gets LLMOS_URL and LLMOS_TOKEN (its own
        process token) and runs under `cpu_s` CPU seconds and `mem_mb` MiB."""
        options = {
            "name": name,
            "priority": priority,
            "token_budget": token_budget,
            "max_concurrent": max_concurrent,
            "cpu_s": cpu_s,
            "mem_mb": mem_mb,
            "capabilities": capabilities,
            "env": env,
        }
        proc: dict[str, Any] = self._request("POST", EXEC_PATH, exec_body(path, args, options))
        return proc

    def wait(self, pid: int, timeout: float | None = None) -> dict[str, Any]:
        """The process once its program has ended (exit_code, cpu_s, wall_s, tokens).
        `timeout` seconds (None: no limit) passed first: ApiError 408 still_running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                proc: dict[str, Any] = self._request(
                    "POST", _url(pid, "wait"), {"timeout_s": _slice(deadline)}
                )
                return proc
            except ApiError as exc:
                if not _still_running(exc, deadline):
                    raise

    def logs(
        self,
        pid: int,
        stream: str = "stdout",
        *,
        tail: int | None = None,
        offset: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Captured output: {text, offset, next_offset, end, dropped, running}. With
        `offset`, what follows that position; with `tail`, the last lines."""
        params = logs_params(stream, tail, offset, max_bytes)
        chunk: dict[str, Any] = self._request("GET", _url(pid, "logs"), params=params)
        return chunk

    def follow(self, pid: int, stream: str = "stdout", poll_s: float = POLL_S) -> Iterator[str]:
        """Yield the program's output as it comes, from the start, until it ends."""
        offset = 0
        while True:
            chunk = self.logs(pid, stream, offset=offset)
            if chunk["text"]:
                yield chunk["text"]
            offset = chunk["next_offset"]
            if _finished(chunk):
                return
            if not chunk["text"]:
                time.sleep(poll_s)

    def signal(self, pid: int, signal: str) -> dict[str, Any]:
        """suspend | resume | term | kill; returns the process."""
        proc: dict[str, Any] = self._request("POST", _url(pid, "signal"), {"signal": signal})
        return proc

    def suspend(self, pid: int) -> dict[str, Any]:
        """Park its requests (none is dispatched) and stop its program (SIGSTOP)."""
        return self.signal(pid, "suspend")

    def resume(self, pid: int) -> dict[str, Any]:
        return self.signal(pid, "resume")

    def terminate(self, pid: int) -> dict[str, Any]:
        """SIGTERM its program (SIGKILL a few seconds later if it is still there)."""
        return self.signal(pid, "term")


class AsyncAgentsMixin:
    """AsyncClient's agent methods (as AgentsMixin's)."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

    async def run_agent(
        self,
        path: str | os.PathLike[str],
        *args: str,
        name: str | None = None,
        priority: int | None = None,
        token_budget: int | None = None,
        max_concurrent: int | None = None,
        cpu_s: float | None = None,
        mem_mb: int | None = None,
        capabilities: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        options = {
            "name": name,
            "priority": priority,
            "token_budget": token_budget,
            "max_concurrent": max_concurrent,
            "cpu_s": cpu_s,
            "mem_mb": mem_mb,
            "capabilities": capabilities,
            "env": env,
        }
        body = exec_body(path, args, options)
        proc: dict[str, Any] = await self._request("POST", EXEC_PATH, body)
        return proc

    async def wait(self, pid: int, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                proc: dict[str, Any] = await self._request(
                    "POST", _url(pid, "wait"), {"timeout_s": _slice(deadline)}
                )
                return proc
            except ApiError as exc:
                if not _still_running(exc, deadline):
                    raise

    async def logs(
        self,
        pid: int,
        stream: str = "stdout",
        *,
        tail: int | None = None,
        offset: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        params = logs_params(stream, tail, offset, max_bytes)
        chunk: dict[str, Any] = await self._request("GET", _url(pid, "logs"), params=params)
        return chunk

    async def follow(
        self, pid: int, stream: str = "stdout", poll_s: float = POLL_S
    ) -> AsyncIterator[str]:
        offset = 0
        while True:
            chunk = await self.logs(pid, stream, offset=offset)
            if chunk["text"]:
                yield chunk["text"]
            offset = chunk["next_offset"]
            if _finished(chunk):
                return
            if not chunk["text"]:
                await asyncio.sleep(poll_s)

    async def signal(self, pid: int, signal: str) -> dict[str, Any]:
        proc: dict[str, Any] = await self._request("POST", _url(pid, "signal"), {"signal": signal})
        return proc

    async def suspend(self, pid: int) -> dict[str, Any]:
        return await self.signal(pid, "suspend")

    async def resume(self, pid: int) -> dict[str, Any]:
        return await self.signal(pid, "resume")

    async def terminate(self, pid: int) -> dict[str, Any]:
        return await self.signal(pid, "term")
