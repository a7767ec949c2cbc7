"""Agents: programs the kernel runs as OS processes (`proc.exec`, `llmos run`).

An agent is an llmos process (pid, capability token, quotas, accounting) with a
Python program attached. The kernel launches the program itself, so it can limit,
signal, reap and account it:
- a clean environment: PATH, LANG, HOME and TMPDIR (its work directory), the
  caller's extra variables, then LLMOS_URL, LLMOS_TOKEN (its process token),
  LLMOS_PID and OPENAI_BASE_URL/OPENAI_API_KEY (so any OpenAI client talks to the
  kernel as the process) — nothing else of the kernel's environment;
- its own session and process group, CPU and memory limits, cwd
  LLMOS_HOME/agents/<pid>/work (childproc.py: the OS side);
- stdout and stderr piped into bounded logs beside it (agentlog.py);
- reaped by the kernel itself, so its exit status and CPU time are recorded.

Invariants: an `Agent` is in `running` from launch until its exit is recorded;
when the program ends, its llmos process ends with it (EXITED, unless it was
KILLED: either way its requests are cancelled) and its token is revoked; a
suspended process's program is stopped (SIGSTOP) and its requests parked."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import llmos
from llmos.errors import InvalidRequest, Killed, Overloaded, StillRunning
from llmos.kernel import bgtask, childproc
from llmos.kernel.agentlog import LogChunk, LogSink
from llmos.kernel.process import Process, ProcState
from llmos.params import (
    AGENT_CPU_S,
    AGENT_LOG_BYTES,
    AGENT_MEM_MB,
    AGENT_TERM_GRACE_S,
    MAX_AGENTS,
)

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

SAMPLE_S = 1.0  # a running agent's CPU and wall time are refreshed this often
DRAIN_S = 2.0  # after the program exits, its output pipes get this long to empty
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class AgentSpec:
    """What to run and under which limits (validated by agent_syscalls.py)."""

    path: str  # absolute, a readable file
    args: tuple[str, ...] = ()
    cpu_s: int = AGENT_CPU_S
    mem_mb: int = AGENT_MEM_MB
    env: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Agent:
    pid: int
    popen: subprocess.Popen[bytes]
    sinks: dict[str, LogSink]
    started: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None
    escalation: asyncio.TimerHandle | None = None  # SIGKILL after a SIGTERM's grace


class Agents:
    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self.home = kernel.settings.home / "agents"
        self.url: str | None = None  # where agents reach the API; None: from settings
        self.running: dict[int, Agent] = {}

    # -- lifecycle -----------------------------------------------------------------
    def recover(self) -> None:
        """At start: a process whose program outlived a crashed kernel is over (its
        program is killed if it still runs, its token revoked)."""
        for proc in self.k.procs.list():
            if proc.os_pid is not None and proc.state.alive:
                childproc.kill_orphan(proc.os_pid, proc.created_at, proc.command)
                proc.move(ProcState.KILLED)
                self.k.tokens.revoke_process(proc.pid)
                self.k.store.save_process(proc)

    async def stop(self) -> None:
        """At shutdown: every agent is asked to stop (SIGTERM), then killed."""
        agents = list(self.running.values())
        for agent in agents:
            self._end(self.k.procs.get(agent.pid), ProcState.KILLED, "the kernel is shutting down")
            childproc.signal_group(agent.popen, signal.SIGTERM)
            childproc.signal_group(agent.popen, signal.SIGCONT)
        watchers = [a.watcher for a in agents if a.watcher is not None]
        if not watchers:
            return
        _, late = await asyncio.wait(watchers, timeout=AGENT_TERM_GRACE_S)
        for agent in agents:
            childproc.signal_group(agent.popen, signal.SIGKILL)
        if late:
            _, stuck = await asyncio.wait(late, timeout=AGENT_TERM_GRACE_S + DRAIN_S)
            for task in stuck:
                task.cancel()

    # -- launching -----------------------------------------------------------------
    def admit(self) -> None:
        if len(self.running) >= MAX_AGENTS:
            raise Overloaded(f"{MAX_AGENTS} agents are running; try again when one ends")

    def launch(self, proc: Process, token: str, spec: AgentSpec) -> None:
        """Start `spec`'s program as process `proc` (spawned, with `token`)."""
        root = self.home / str(proc.pid)
        work = root / "work"
        work.mkdir(parents=True, mode=0o700, exist_ok=True)
        argv = [spec.path, *spec.args]
        env = self._environment(proc, token, work, spec.env)
        try:
            popen = childproc.start(argv, spec.cpu_s, spec.mem_mb, work, env)
        except OSError as exc:
            proc.exit_code = 127
            self._end(proc, ProcState.EXITED, f"process {proc.pid} could not start")
            self.k.tokens.revoke_process(proc.pid)
            self.k.store.save_process(proc)
            raise InvalidRequest(
                f"cannot start {spec.path}: {exc.strerror or exc}", param="path"
            ) from None
        sinks = {s: LogSink(root / f"{s}.log", AGENT_LOG_BYTES) for s in STREAMS}
        agent = Agent(proc.pid, popen, sinks)
        proc.command = shlex.join(argv)
        proc.os_pid = popen.pid
        proc.cpu_s = proc.wall_s = 0.0
        self.k.store.save_process(proc)
        self.running[proc.pid] = agent
        assert popen.stdout is not None and popen.stderr is not None
        loop = asyncio.get_running_loop()
        pumps = [
            loop.create_task(childproc.pump(popen.stdout, sinks["stdout"])),
            loop.create_task(childproc.pump(popen.stderr, sinks["stderr"])),
        ]
        agent.watcher = loop.create_task(self._watch(agent, pumps), name=f"agent-{proc.pid}")

    def _environment(
        self, proc: Process, token: str, work: Path, extra: dict[str, str]
    ) -> dict[str, str]:
        url = self.kernel_url()
        env = {
            "PATH": os.environ.get("PATH") or os.defpath,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            **extra,
            "HOME": str(work),
            "TMPDIR": str(work),
            "PYTHONUNBUFFERED": "1",  # its output reaches the logs as it prints
            "LLMOS_URL": url,
            "LLMOS_TOKEN": token,
            "LLMOS_PID": str(proc.pid),
            "OPENAI_BASE_URL": url + "/v1",
            "OPENAI_API_KEY": token,
        }
        # llmos importable from outside this interpreter's own prefix (a source tree)
        source = Path(llmos.__file__).resolve().parent.parent
        if not source.is_relative_to(Path(sys.prefix).resolve()):
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, (str(source), extra.get("PYTHONPATH")))
            )
        return env

    def kernel_url(self) -> str:
        if self.url:
            return self.url
        s = self.k.settings
        host = "127.0.0.1" if s.host in ("", "0.0.0.0") else "::1" if s.host == "::" else s.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if s.tls_cert else 'http'}://{host}:{s.port}"

    # -- its life ------------------------------------------------------------------
    async def _watch(self, agent: Agent, pumps: list[asyncio.Task[None]]) -> None:
        exited = childproc.reaped(agent.popen.pid)
        try:
            sampler = psutil.Process(agent.popen.pid)
        except psutil.Error:
            sampler = None
        proc = self.k.procs.get(agent.pid)
        while not exited.done():  # CPU and wall time so far, for `llmos ps`
            proc.wall_s = round(time.monotonic() - agent.started, 3)
            cpu = childproc.cpu_seconds(sampler) if sampler else None
            proc.cpu_s = proc.cpu_s if cpu is None else cpu
            await asyncio.wait([exited], timeout=SAMPLE_S)
        status, usage = exited.result()
        code = childproc.reaped_exit(agent.popen, status)
        _, stuck = await asyncio.wait(pumps, timeout=DRAIN_S)
        for pump in stuck:
            pump.cancel()
        self._record_exit(agent, code, usage)

    def _record_exit(self, agent: Agent, code: int | None, usage: Any) -> None:
        proc = self.k.procs.get(agent.pid)
        proc.exit_code = code
        if usage is not None:
            proc.cpu_s = round(usage.ru_utime + usage.ru_stime, 3)
        proc.wall_s = round(time.monotonic() - agent.started, 3)
        if agent.escalation is not None:
            agent.escalation.cancel()
        for sink in agent.sinks.values():
            sink.close()
        self.running.pop(agent.pid, None)
        if proc.state.alive:
            self._end(proc, ProcState.EXITED, f"process {proc.pid} exited (status {code})")
        self.k.tokens.revoke_process(proc.pid)
        self.k.store.save_process(proc)
        agent.done.set()

    def _end(self, proc: Process, state: ProcState, reason: str) -> None:
        """`proc` is over: its queued requests fail now, running ones at their next token."""
        if proc.state.alive:
            proc.move(state)
        for req in list(self.k.live.get(proc.pid, ())):
            self.k.scheduler.cancel(req, Killed(reason, param="pid"))
        self.k.scheduler.parking.release(proc.pid)

    # -- signals -------------------------------------------------------------------
    def killed(self, pid: int) -> None:
        """Kernel.kill's hook: the process was killed; so is its program."""
        self.k.scheduler.parking.release(pid)
        agent = self.running.get(pid)
        if agent is not None:
            childproc.signal_group(agent.popen, signal.SIGKILL)

    def suspend(self, proc: Process) -> None:
        if proc.state == ProcState.SUSPENDED:
            return
        proc.move(ProcState.SUSPENDED)
        self.k.scheduler.suspend(proc.pid)
        agent = self.running.get(proc.pid)
        if agent is not None:
            childproc.signal_group(agent.popen, signal.SIGSTOP)
        self.k.store.save_process(proc)

    def resume(self, proc: Process) -> None:
        if proc.state != ProcState.SUSPENDED:
            return
        agent = self.running.get(proc.pid)
        if agent is not None:
            childproc.signal_group(agent.popen, signal.SIGCONT)
        proc.resume()
        self.k.scheduler.resume(proc.pid)
        self.k.store.save_process(proc)

    def terminate(self, proc: Process) -> bool:
        """Ask its program to end (SIGTERM; SIGKILL after a grace period). False if
        it runs no program (the caller kills the process instead)."""
        agent = self.running.get(proc.pid)
        if agent is None:
            return False
        self.resume(proc)  # a stopped program cannot act on SIGTERM
        childproc.signal_group(agent.popen, signal.SIGTERM)
        if agent.escalation is None:
            loop = asyncio.get_running_loop()
            agent.escalation = loop.call_later(
                AGENT_TERM_GRACE_S, childproc.signal_group, agent.popen, signal.SIGKILL
            )
        return True

    # -- reading it ----------------------------------------------------------------
    async def wait(self, proc: Process, timeout_s: float) -> Process:
        agent = self.running.get(proc.pid)
        if agent is None:
            if proc.state.alive:
                raise InvalidRequest(
                    f"process {proc.pid} runs no program: nothing to wait for", param="pid"
                )
            return proc
        if not await bgtask.wait(agent.done, timeout_s):
            raise StillRunning(
                f"process {proc.pid} is still running after {timeout_s:g}s; wait again",
                param="timeout_s",
            )
        return proc

    def logs(
        self, proc: Process, stream: str, offset: int | None, tail: int | None, max_bytes: int
    ) -> LogChunk:
        if proc.command is None:
            raise InvalidRequest(f"process {proc.pid} runs no program: it has no logs", param="pid")
        agent = self.running.get(proc.pid)
        if agent is not None:
            return agent.sinks[stream].read(offset, tail, max_bytes, growing=True)
        sink = LogSink(self.home / str(proc.pid) / f"{stream}.log", AGENT_LOG_BYTES)
        return sink.read(offset, tail, max_bytes, growing=False)
