"""The kernel: process table, run queue, devices, accounting. No HTTP in here.

Every front end enters through `Kernel.call(name, caller, args)`, the syscall table
(syscalls.py); the methods below are what the thin syscall handlers call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.devices.base import Device
from llmos.devices.embeddings import LazyEmbedder
from llmos.errors import Forbidden, Hidden, InvalidRequest, Killed, NotFound, Unauthorized
from llmos.kernel import access, capabilities, key_syscalls, media_parts, prompts, sysinfo
from llmos.kernel.acl import Shares
from llmos.kernel.admission import Admission
from llmos.kernel.agents import Agents
from llmos.kernel.anomaly import Anomalies
from llmos.kernel.audit import AuditLog
from llmos.kernel.autoscale import Autoscaler
from llmos.kernel.backup_syscalls import Backups
from llmos.kernel.batches import BatchRunner
from llmos.kernel.breaker import FaultConfig
from llmos.kernel.capability import Capability
from llmos.kernel.conversation import Conversations
from llmos.kernel.crypto import KeyRing
from llmos.kernel.deadline import Deadlines
from llmos.kernel.fleet import Fleet, Group
from llmos.kernel.health import HealthMonitor
from llmos.kernel.jobs import JobRunner
from llmos.kernel.memory import MemoryStore
from llmos.kernel.perception import Perception
from llmos.kernel.policies import SchedConfig
from llmos.kernel.predictor import Predictor
from llmos.kernel.privacy import IMPLICIT_APP
from llmos.kernel.process import Process, ProcessTable, ProcState
from llmos.kernel.ratelimit import RateLimiter
from llmos.kernel.request import Request
from llmos.kernel.scheduler import Hooks, Scheduler
from llmos.kernel.stops import StopMatcher
from llmos.kernel.storage import FileStore
from llmos.kernel.store import Store
from llmos.kernel.sysmon import Sampler
from llmos.kernel.tokens import Caller, TokenStore
from llmos.kernel.tools import ToolRegistry
from llmos.kernel.tools.builtins import register_builtins
from llmos.kernel.tools.mcp_servers import McpServers
from llmos.kernel.tuner import Tuner
from llmos.kernel.users import Users
from llmos.params import DEFAULT_PRIORITY, MAX_NAME_LEN, MAX_PRIORITY, Settings
from llmos.types import Snapshot

log = logging.getLogger(__name__)

Listener = Callable[[Request], None]


class Kernel:
    def __init__(
        self, settings: Settings, devices: list[Device], groups: list[Group] | None = None
    ) -> None:
        if not devices:
            raise InvalidRequest("the kernel needs at least one device", param="devices")
        self.settings = settings
        self.devices = devices
        self.store = Store(settings.db_path)
        self.keys = KeyRing.load(self.store.db, settings.home, settings.data_key)  # at rest
        self.files = FileStore(self.store.db, keys=self.keys)
        self.users = Users(self.store.db)
        self.shares = Shares(self.store.db)
        self.audit = AuditLog(self.store.db, settings.home)
        self.tokens = TokenStore(self.store, self.users)
        self.procs = ProcessTable()
        for proc in self.store.load_processes():
            self.procs.restore(proc)
        self.memory = MemoryStore(self.store.db, LazyEmbedder(), self.keys)
        self.conversations = Conversations(self.store.db, self.memory)
        self.predictor = Predictor(  # output tokens (sjf) and slot time (admission)
            self.store,
            interval_s=settings.learn_interval_s,
            inflight=lambda: sum(map(len, self.live.values())),
        )
        config = SchedConfig(quantum=settings.quantum, predictor=self.predictor)
        hooks = Hooks(self._on_start, self._on_yield, self._on_finish)
        faults = FaultConfig.from_settings(settings)
        self.scheduler = Scheduler(
            devices, settings.policy, config, hooks, faults, settings.placement
        )
        self.health = HealthMonitor(self.scheduler)
        self.admission = Admission(
            settings.max_queue,
            settings.max_queue_per_owner,
            sum(d.slots for d in devices),
            self.predictor,
        )
        self._background: set[asyncio.Task[None]] = set()
        self.live: dict[int, set[Request]] = {}  # pid -> its unfinished requests
        self.listeners: list[Listener] = []  # told of every finished request
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.deadlines = Deadlines(settings.request_timeout_s, self.scheduler.cancel)
        self.listeners.append(self.deadlines.disarm)
        self.jobs = JobRunner(self)  # the crash-safe job journal and its runner
        self.batches = BatchRunner(self)  # OpenAI batches, run as journaled jobs
        self.tools = ToolRegistry()  # built-ins, MCP servers' tools
        register_builtins(self.tools)  # calculator, time, memory, files, python
        self.agents = Agents(self)  # programs run as processes (proc.exec)
        self.mcp = McpServers(self)  # attached MCP servers (their tools are in self.tools)
        self.sysmon = Sampler(self, settings.sample_interval_s)  # resources, rates, history
        self.backups = Backups(self)  # snapshots of LLMOS_HOME, and the scheduled ones
        self.tuner = Tuner(self)  # device settings, measured and recorded (tune.run)
        self.anomalies = Anomalies(self)  # per-process anomaly alerts and throttles
        self.perception = Perception(settings, self.store.db)  # speech, OCR; lazy drivers
        self.fleet_listeners: list[Callable[[str, str], None]] = []  # (group, action)
        self.fleet = Fleet(self, groups or [])  # replica groups: devices come and go
        self.autoscaler = Autoscaler(self, settings.autoscale_interval_s)
        self.started_at = time.time()
        self.admin_token: str | None = None  # set only when generated at this start

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.gather(*(d.start() for d in self.devices))
        self.health.start()
        self.admin_token = self.tokens.ensure_admin(
            self.settings.admin_token, self.admin_token_path
        )
        key_syscalls.start_sweep(self)  # finish a key rotation a restart cut short
        await self.predictor.start()  # stored models, or trained from telemetry
        self.jobs.start()
        self.batches.start()
        self.agents.recover()  # programs a crashed kernel left behind are over
        self.mcp.start()  # attached MCP servers come up in the background
        self.sysmon.start()
        self.backups.start()  # scheduled backups, when settings.backup_every_s > 0
        self.tuner.start()  # autotune "start"/"online": a calibration in the background
        self.autoscaler.start()  # replica groups grow, shrink and are mended

    @property
    def admin_token_path(self) -> Path:
        return self.settings.home / "admin-token"

    async def stop(self) -> None:
        for task in list(self._background):  # key sweeps etc.: resumed at the next start
            task.cancel()
        await self.autoscaler.stop()
        await self.agents.stop()  # their programs are terminated, their ends recorded
        await self.batches.stop()
        await self.jobs.stop()  # running jobs go back to the journal's queue
        await self.mcp.stop()
        await self.tuner.stop()  # a tuning cut short puts the old settings back
        await self.sysmon.stop()
        await self.backups.stop()
        self.perception.stop()
        await self.health.stop()
        for req in self.scheduler.waiting():
            self.scheduler.cancel(req, Killed("the kernel is shutting down"))
        await self.scheduler.drain()
        await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)
        await self.predictor.stop()
        self.store.close()

    def authenticate(self, token: str | None) -> Caller:
        try:
            return self.tokens.verify(token)
        except Unauthorized as exc:  # audited: who tried is unknown, which id is not
            token_id = token.split("-")[1] if token and token.count("-") >= 2 else "?"
            self.audit.append("?", "?", token_id[:32], None, "auth", {}, "denied", exc.message)
            raise

    async def call(self, name: str, caller: Caller, args: dict[str, Any] | None = None) -> Any:
        from llmos.kernel.syscalls import dispatch

        self.limiter.check(caller)  # per-token rate limit: 429 before any work
        return await dispatch(self, name, caller, args or {})

    # -- devices -------------------------------------------------------------------
    def models(self) -> list[str]:
        return sorted({d.model for d in self.devices})

    def device_for(self, model: Any, needs: frozenset[str] = capabilities.TEXT_ONLY) -> Device:
        """The device a request for `model` is built for (it tokenizes the prompt) and
        whose route it waits on: one with every capability in `needs`, up if any."""
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model is required", param="model")
        serving = [d for d in self.devices if d.model == model]
        if serving:
            return capabilities.pick(model, serving, needs, self.scheduler)
        raise NotFound(
            f"model {model!r} does not exist; available: {', '.join(self.models())}",
            param="model",
        )

    # -- processes -----------------------------------------------------------------
    def spawn(
        self,
        caller: Caller,
        name: str,
        priority: int,
        max_concurrent: int | None = None,
        token_budget: int | None = None,
        memory_shared: bool = False,
        caps: Capability | None = None,
    ) -> tuple[Process, str]:
        if caller.role == "process":  # a child: never more than its parent
            assert caller.pid is not None
            parent = self.procs.get(caller.pid)
            if not parent.state.alive:
                raise Killed(f"process {parent.pid} has ended", param="pid")
            access.no_wider_than(parent, priority, token_budget, memory_shared)
        if not name or len(name) > MAX_NAME_LEN:
            raise InvalidRequest(f"name must be 1..{MAX_NAME_LEN} characters", param="name")
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidRequest(f"priority must be 0..{MAX_PRIORITY}", param="priority")
        if max_concurrent is not None and max_concurrent < 1:
            raise InvalidRequest("max_concurrent must be at least 1", param="max_concurrent")
        if token_budget is not None and token_budget < 1:
            raise InvalidRequest("token_budget must be at least 1", param="token_budget")
        proc = self.procs.add(
            name,
            caller.owner,
            priority,
            max_concurrent=max_concurrent,
            token_budget=token_budget,
            memory_shared=memory_shared,
        )
        self.store.save_process(proc)
        expires = None if caps is None else caps.expires_at
        token, _ = self.tokens.issue(
            caller.owner, "process", proc.pid, expires_at=expires, caps=caps
        )
        return proc, token

    def visible(self, caller: Caller, pid: int) -> Process:
        """The process, if the caller may see it; 404 otherwise (existence must not leak)."""
        proc = self.procs.find(pid)
        if proc is None:
            raise NotFound(f"no process with pid {pid}", param="pid")
        if not access.may_see(self, caller, proc):
            raise Hidden(f"no process with pid {pid}", param="pid")
        return proc

    def list_processes(self, caller: Caller) -> list[Process]:
        return [p for p in self.procs.list() if access.may_see(self, caller, p)]

    def kill(self, caller: Caller, pid: int) -> Process:
        """Queued requests fail now; running ones stop at their next token."""
        proc = self.visible(caller, pid)
        access.require_change(self, caller, proc)
        if not proc.state.alive:
            return proc
        proc.move(ProcState.KILLED)
        self.store.save_process(proc)
        for req in list(self.live.get(pid, ())):
            self.scheduler.cancel(req, Killed(f"process {pid} was killed", param="pid"))
        self.agents.killed(pid)  # its program too (SIGKILL to its process group)
        return proc

    def renice(self, caller: Caller, pid: int, priority: int) -> Process:
        """Change a process's priority, its queued requests' included. As with nice(1),
        lowering it is the owner's right; raising it is an admin's."""
        proc = self.visible(caller, pid)
        access.require_change(self, caller, proc)
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidRequest(f"priority must be 0..{MAX_PRIORITY}", param="priority")
        if priority > proc.priority and not caller.is_admin:
            raise Forbidden(
                f"only an admin may raise a priority (process {pid} has {proc.priority})",
                param="priority",
            )
        proc.priority = priority
        self.store.save_process(proc)
        self.scheduler.reprioritize(pid, priority)
        return proc

    def process_of(self, caller: Caller) -> Process:
        """The process a caller's requests are accounted to (implicit if none named)."""
        if caller.pid is not None:
            proc = self.procs.get(caller.pid)
            if not proc.state.alive:
                raise Killed(f"process {proc.pid} has ended ({proc.state.name.lower()})")
            return proc
        pid = self.tokens.implicit_pid(caller.token_id)
        proc_or_none = self.procs.find(pid) if pid is not None else None
        if proc_or_none is not None and proc_or_none.state.alive:
            return proc_or_none
        proc = self.procs.add(
            f"{caller.owner}:implicit", caller.owner, DEFAULT_PRIORITY, implicit=True
        )
        self.store.save_process(proc)
        self.tokens.set_implicit_pid(caller.token_id, proc.pid)
        return proc

    # -- LLM requests --------------------------------------------------------------
    async def submit(self, caller: Caller, kind: str, args: dict[str, Any]) -> Request:
        if kind == "chat" and media_parts.has_parts(args.get("messages")):
            return await media_parts.submit(self, caller, args)  # image, audio parts
        dev = self.device_for(args.get("model"))
        build = prompts.chat_snapshot if kind == "chat" else prompts.completion_snapshot
        snapshot = await build(dev, args)
        proc = self.process_of(caller)  # after validation: bad input creates nothing
        return self.enqueue(proc, dev, kind, snapshot)

    def enqueue(
        self,
        proc: Process,
        dev: Device,
        kind: str,
        snapshot: Snapshot,
        conversation: bool = False,
        deadline: bool = True,
    ) -> Request:
        """Admit a built request for `proc` and put it on the run queue. Batch jobs
        (`deadline=False`) wait as long as interactive work keeps the slots busy."""
        self.admission.admit(proc)
        req = Request(
            pid=proc.pid,
            owner=proc.owner,
            model=dev.model,
            route=self.scheduler.routes[dev.name],
            kind=kind,
            snapshot=snapshot,
            priority=proc.priority,
            session=str(proc.pid),
            matcher=StopMatcher(snapshot.params.stop),
            conversation=conversation,
            app=IMPLICIT_APP if proc.implicit else proc.name,
        )
        req.features = self.predictor.features_of(req)
        proc.requests += 1
        proc.waiting += 1
        proc.settle()
        self.admission.queued(req)
        self.live.setdefault(proc.pid, set()).add(req)
        self.scheduler.submit(req)
        if deadline:
            self.deadlines.arm(req)
        return req

    def cancel(self, req: Request, reason: str = "the client went away") -> None:
        self.scheduler.cancel(req, Killed(reason))

    # -- the scheduler's hooks: every transition of a request, accounted once --------
    def _on_start(self, req: Request) -> None:
        proc = self.procs.get(req.pid)
        proc.waiting -= 1
        proc.running += 1
        proc.settle()
        self.admission.dequeued(req)

    def _on_yield(self, req: Request, counted: bool) -> None:
        proc = self.procs.get(req.pid)
        proc.running -= 1
        proc.waiting += 1
        proc.preemptions += counted
        proc.settle()
        self.admission.queued(req)

    def _on_finish(self, req: Request, was_running: bool) -> None:
        proc = self.procs.get(req.pid)
        if was_running:
            proc.running -= 1
        else:
            proc.waiting -= 1
            self.admission.dequeued(req)
        if req.dispatches:
            proc.tokens_in += req.prompt_tokens
        proc.tokens_out += req.output_tokens
        proc.settle()
        self.live.get(req.pid, set()).discard(req)
        self.store.save_process(proc)
        self.store.add_telemetry(sysinfo.telemetry_row(req))
        if req.started_at is not None and req.finished_at is not None:
            self.admission.served(req.finished_at - req.started_at)
        if req.finish_reason in ("stop", "length"):
            if req.conversation:
                self.conversations.record_reply(req.pid, req.text, req.output_tokens)
            self.predictor.observe_request(req)  # retrains in the background when due
        for listener in self.listeners:
            try:
                listener(req)
            except Exception:  # a broken observer must not break accounting
                log.exception("telemetry listener failed")

    @property
    def sched_config(self) -> SchedConfig:
        return self.scheduler.config

    def sched_info(self) -> dict[str, Any]:
        return sysinfo.sched_info(self)

    def set_policy(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Switch policy (and knobs) at run time; waiting requests move over."""
        config = dataclasses.replace(self.sched_config, **changes)
        config.validate()
        self.scheduler.set_policy(name, config)
        return self.sched_info()
