"""The app host: finds the apps, seeds their data, and runs each call as a process.

Apps are found through the entry point group `llmos.apps` (the built-ins are
entries of the llmos distribution itself, so they load exactly as third-party apps
do; the API never imports an app module by name). A broken or clashing entry is
logged and skipped, never fatal; on a name clash the llmos distribution's app wins.

One call (`run`): the input is checked against the app's schema (400 naming the
field), then a process `app:<name>` is spawned by the caller through `proc.spawn`
(so it is theirs, audited, and no wider than them) with the app's priority and a
capability of only the app's syscalls, file reads under `apps/`, no writes; the
app runs with that process's token; the process then ends through `proc.exit`
with exit code 0, 1 (the call failed) or 124 (out of time), its tokens accounted
in the table and any request still in flight cancelled.

Shared data lives in the namespace of the `apps` user (APP_DATA_OWNER). The host
reads it as that user, with a capability of `fs.read` alone (and seeds it with one
of `fs.versions` + `fs.write`), through the syscall table like anyone else: no
access check is skipped, and the audit log names the reading app's pid."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import jsonschema

from llmos.api.appkit import App, AppContext, SyscallFn
from llmos.errors import InvalidRequest, LlmosError, NotFound, Timeout
from llmos.kernel import Caller, Kernel
from llmos.kernel.capability import Capability
from llmos.kernel.syscalls import call_json
from llmos.params import APP_DATA_OWNER, APP_TIMEOUT_S, MAX_PRIORITY

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llmos.apps"
HOME_DIST = "llmos"  # its apps win name clashes
NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
DATA_PREFIX = "apps"  # an app process may read these paths of its owner's (overrides)
EXIT_FAILED = 1  # an app process's exit code when its call failed ...
EXIT_TIMEOUT = 124  # ... and when it ran out of time (as timeout(1) says)


class UnknownApp(NotFound):
    def __init__(self, name: str, apps: list[str]) -> None:
        super().__init__(f"no app named {name!r}; apps: {', '.join(apps) or 'none'}", param="name")
        self.apps = apps


def discover() -> list[tuple[App, str]]:
    """The apps of every installed `llmos.apps` entry point, with their
    distribution's name; llmos's own first."""
    found = sorted(
        entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (_dist(ep) != HOME_DIST, _dist(ep), ep.name),
    )
    apps = []
    for ep in found:
        try:
            obj = ep.load()
            app = obj() if isinstance(obj, type) else obj
            if not isinstance(app, App):
                raise TypeError(f"{ep.value} is not an llmos.apps.App")
        except Exception:  # a broken plugin must not take the API down
            log.warning("app entry point %r (%s) not loaded", ep.name, ep.value, exc_info=True)
            continue
        apps.append((app, _dist(ep)))
    return apps


def _dist(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


class AppHost:
    def __init__(self, kernel: Kernel, apps: Iterable[tuple[App, str]] | None = None) -> None:
        self.kernel = kernel
        self._apps: dict[str, tuple[App, str]] = {}  # name -> (app, its distribution)
        self._names: dict[str, str] = {}  # name or alias -> name
        self._seeded = False
        self._seed_lock = asyncio.Lock()
        for app, source in discover() if apps is None else apps:
            try:
                self.add(app, source)
            except InvalidRequest as exc:
                log.warning("app %r from %s not hosted: %s", app.name, source, exc.message)

    # -- the registry ------------------------------------------------------------
    def add(self, app: App, source: str) -> None:
        names = (app.name, *app.aliases)
        for n in names:
            if not isinstance(n, str) or not NAME.match(n):
                raise InvalidRequest(f"bad app name {n!r}", param="name")
            if n in self._names:
                raise InvalidRequest(f"the name {n!r} is taken", param="name")
        if not 0 <= app.priority <= MAX_PRIORITY:
            raise InvalidRequest(f"priority must be 0..{MAX_PRIORITY}", param="priority")
        try:
            jsonschema.Draft202012Validator.check_schema(app.input_schema)
        except jsonschema.SchemaError as exc:
            raise InvalidRequest(f"bad input schema: {exc.message}", param="input_schema") from None
        self._apps[app.name] = (app, source)
        self._names.update(dict.fromkeys(names, app.name))

    def names(self) -> list[str]:
        return sorted(self._apps)

    def lookup(self, name: str) -> App:
        canonical = self._names.get(name)
        if canonical is None:
            raise UnknownApp(name, self.names())
        return self._apps[canonical][0]

    def listing(self) -> list[dict[str, Any]]:
        return [{**app.describe(), "source": src} for app, src in self._ordered()]

    def _ordered(self) -> list[tuple[App, str]]:
        return [self._apps[n] for n in self.names()]

    @staticmethod
    def validate(app: App, value: Any) -> None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(app.input_schema).iter_errors(value)
        )
        if error is not None:
            param = "input" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            raise InvalidRequest(f"{app.name}: {param}: {error.message}", param=param)

    # -- shared data ---------------------------------------------------------------
    async def ensure_seeded(self) -> None:
        """Write each app's demo data that was never written (once per host)."""
        async with self._seed_lock:
            if self._seeded:
                return
            self.kernel.users.ensure(APP_DATA_OWNER, "user")
            writer = _data_caller("app-host:seed", frozenset({"fs.versions", "fs.write"}))
            for app, _ in self._ordered():
                try:
                    files = app.seed()
                except Exception:
                    log.warning("app %r: its seed data failed", app.name, exc_info=True)
                    continue
                for path, text in files.items():
                    try:
                        await self._seed(writer, path, text)
                    except LlmosError as exc:
                        log.warning("app %r: not seeded %s: %s", app.name, path, exc.message)
            self._seeded = True

    async def _seed(self, writer: Caller, path: str, text: str) -> None:
        try:  # ever written (a deletion counts): the data is someone's now
            await self.kernel.call("fs.versions", writer, {"path": path})
        except NotFound:
            await self.kernel.call("fs.write", writer, {"path": path, "content": text})

    # -- one call ------------------------------------------------------------------
    async def run(self, who: Caller, name: str, value: Any) -> dict[str, Any]:
        app = self.lookup(name)
        if value is not None:
            self.validate(app, value)
        elif app.needs_input:
            raise InvalidRequest(
                f"{app.name} needs an input: see its input_schema (GET /serving/apps)",
                param="input",
            )
        await self.ensure_seeded()
        spawned = await self.kernel.call("proc.spawn", who, self._spawn_args(who, app))
        pid = int(spawned["pid"])
        process = self.kernel.authenticate(spawned["token"])
        code = EXIT_FAILED
        try:
            ctx = self._context(app, process, pid)
            try:
                async with asyncio.timeout(APP_TIMEOUT_S):
                    result = await (app.run(ctx, value) if value is not None else app.default(ctx))
            except TimeoutError:
                code = EXIT_TIMEOUT
                raise Timeout(
                    f"app {app.name} did not finish in {APP_TIMEOUT_S:g} s", param="name"
                ) from None
            code = 0
        finally:
            await self._end(process, code)
        return {
            "status": "success",
            "app": app.name,
            "pid": pid,
            "result": result,
            "usage": ctx.usage.to_dict(),
        }

    def _spawn_args(self, who: Caller, app: App) -> dict[str, Any]:
        """The app's process: its priority and budget, inside a calling process's."""
        priority, budget = app.priority, app.token_budget
        parent = self.kernel.procs.find(who.pid) if who.pid is not None else None
        if parent is not None:
            priority = min(priority, parent.priority)
            if parent.token_budget is not None:
                left = parent.token_budget - parent.tokens_in - parent.tokens_out
                budget = max(1, left if budget is None else min(budget, left))
        args: dict[str, Any] = {
            "name": f"app:{app.name}",
            "priority": priority,
            "capabilities": {
                "syscalls": sorted({*app.syscalls, "proc.exit"}),
                "files": {"read": [DATA_PREFIX], "write": []},
                "memory": "none",
                "expires_in": APP_TIMEOUT_S + 60,
            },
        }
        if budget is not None:
            args["token_budget"] = budget
        return args

    def _context(self, app: App, process: Caller, pid: int) -> AppContext:
        model = self.kernel.models()[0]
        window = min(d.context_length for d in self.kernel.devices if d.model == model)
        reader = _data_caller(f"app:{pid}", frozenset({"fs.read"}))
        return AppContext(
            app=app.name,
            owner=process.owner,
            pid=pid,
            model=model,
            context_length=window,
            syscall=self._as(process),
            shared_syscall=self._as(reader),
        )

    def _as(self, caller: Caller) -> SyscallFn:
        async def call(name: str, args: dict[str, Any]) -> Any:
            return await call_json(self.kernel, name, caller, args)

        return call

    async def _end(self, process: Caller, code: int) -> None:
        try:
            await self.kernel.call("proc.exit", process, {"code": code})
        except LlmosError as exc:  # the call's own outcome matters more
            log.warning("app process %s did not exit: %s", process.pid, exc.message)


def _data_caller(token_id: str, syscalls: frozenset[str]) -> Caller:
    """The `apps` user, as the host acts for it: only `syscalls`, on its own files."""
    caps = Capability(syscalls, file_read=(DATA_PREFIX,), file_write=(DATA_PREFIX,))
    return Caller(token_id=token_id, owner=APP_DATA_OWNER, role="user", caps=caps)
