"""The Python sandbox against hostile snippets: each is stopped or refused with a
clear result, nothing leaks out, and the kernel keeps serving throughout.

The snippets run through the kernel (`tool.call` of the `python` tool) with the
isolation this machine allows; the OS layers are also checked on their own, with
the audit hook switched off, where the full isolation is available."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from llmos.devices import MockDevice
from llmos.errors import Overloaded
from llmos.kernel import Caller, Kernel
from llmos.kernel.syscalls import call_json
from llmos.kernel.tools.builtins import register_builtins
from llmos.kernel.tools.sandbox import Limits, Sandbox
from llmos.params import Settings

TIMEOUT_S = 1.5  # for the snippets that never end on their own
SECRET = "s3cr3t-value-that-must-not-leak"
ALLOWED_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "MALLOC_ARENA_MAX"}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """One sandbox for the module: the isolation probe runs once."""
    return Sandbox()


@dataclass
class World:
    k: Kernel
    admin: Caller
    home: Path
    outside: Path  # a directory outside the sandbox holding a 0600 secret
    listener: Listener

    async def python(self, code: str, timeout_s: float = 10.0) -> dict[str, Any]:
        args = {"name": "python", "arguments": {"code": code, "timeout_s": timeout_s}}
        result: dict[str, Any] = await self.k.call("tool.call", self.admin, args)
        return result

    async def chat(self) -> dict[str, Any]:
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        answer: dict[str, Any] = await call_json(self.k, "llm.chat", self.admin, body)
        return answer


class Listener:
    """A TCP server on 127.0.0.1 that records whether anyone connected."""

    def __init__(self) -> None:
        self.connected = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connected += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture
async def world(tmp_path: Path, sandbox: Sandbox) -> AsyncIterator[World]:
    home = tmp_path / "home"
    # No admin token given: the kernel writes one to LLMOS_HOME/admin-token.
    k = Kernel(Settings(home=home, admin_token=None), [MockDevice(slots=2)])
    register_builtins(k.tools, sandbox)  # the module's sandbox (probed once)
    await k.start()
    assert k.admin_token is not None and k.admin_token_path.is_file()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_text(SECRET)
    (outside / "shadow").chmod(0o600)
    listener = Listener()
    await listener.start()
    yield World(k, k.authenticate(k.admin_token), home, outside, listener)
    await listener.stop()
    await k.stop()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def refused(out: dict[str, Any], *words: str) -> None:
    """The snippet ran, failed, and said why."""
    assert out["exit_code"] == 1 and not out["timed_out"], out
    for word in words:
        assert word in out["stderr"], out


def _no_secret(w: World, out: dict[str, Any]) -> None:
    assert w.k.admin_token is not None
    for stream in (out["stdout"], out["stderr"]):
        assert SECRET not in stream and w.k.admin_token not in stream


# -- the hostile snippets ----------------------------------------------------------
# (code, check) — `code` may use {home}, {outside} and {port}.
Check = Callable[[World, dict[str, Any]], None]


def _timeout(w: World, out: dict[str, Any]) -> None:
    assert out["timed_out"] and out["killed_by"] == "timeout" and out["exit_code"] is None


def _memory(w: World, out: dict[str, Any]) -> None:
    assert out["killed_by"] == "memory" and out["exit_code"] == 1, out
    assert "MemoryError" in out["stderr"]


def _forks_refused(w: World, out: dict[str, Any]) -> None:
    refused(out, "PermissionError", "not allowed")


def _secret_refused(w: World, out: dict[str, Any]) -> None:
    refused(out, "PermissionError")
    _no_secret(w, out)


def _nothing_written(w: World, out: dict[str, Any]) -> None:
    refused(out, "PermissionError")
    assert sorted(p.name for p in w.outside.iterdir()) == ["shadow"]
    assert (w.outside / "shadow").read_text() == SECRET


def _no_connection(w: World, out: dict[str, Any]) -> None:
    refused(out, "PermissionError")
    assert w.listener.connected == 0


def _output_capped(w: World, out: dict[str, Any]) -> None:
    assert out["killed_by"] == "output" and out["exit_code"] is None
    assert len(out["stdout"]) + len(out["stderr"]) <= Limits().output_bytes


HOSTILE: dict[str, tuple[str, Check]] = {
    "infinite loop": ("while True:\n    pass", _timeout),
    "sleeping forever": ("import time\ntime.sleep(3600)", _timeout),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", _forks_refused),
    "subprocess": ("import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])", _forks_refused),
    "os.system": ("import os\nos.system('echo hi')", _forks_refused),
    "multiprocessing": (
        "import multiprocessing as mp\nmp.Process(target=print).start()",
        _forks_refused,
    ),
    "ctypes": ("import ctypes\nctypes.CDLL(None).fork()", _forks_refused),
    "killing the kernel": ("import os\nos.kill(os.getppid() or 2, 9)", _forks_refused),
    "memory hog": ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", _memory),
    "one huge allocation": ("x = bytearray(2**40)", _memory),
    "reading the admin token": ("print(open('{home}/admin-token').read())", _secret_refused),
    "listing LLMOS_HOME": ("import os\nprint(os.listdir('{home}'))", _secret_refused),
    "reading the keys and database": (
        "for f in ('data-key', 'audit-key', 'llmos.db'):\n    print(open('{home}/' + f).read())",
        _secret_refused,
    ),
    "reading a root-only file": ("print(open('{outside}/shadow').read())", _secret_refused),
    "reading /etc/shadow": ("print(open('/etc/shadow').read())", _secret_refused),
    "reading the kernel's environment": (
        "import os\nprint(open(f'/proc/{{os.getppid()}}/environ').read())",
        _secret_refused,
    ),
    "a symlink out": (
        "import os\nos.symlink('{outside}/shadow', 'x')\nprint(open('x').read())",
        _secret_refused,
    ),
    "a path with ..": (
        "import os\nprint(open(os.getcwd() + '/../../{outside}/shadow').read())",
        _secret_refused,
    ),
    "writing outside": ("open('{outside}/pwned', 'w').write('x')", _nothing_written),
    "overwriting outside": ("open('{outside}/shadow', 'w').write('x')", _nothing_written),
    "mkdir outside": ("import os\nos.mkdir('{outside}/d')", _nothing_written),
    "renaming out": (
        "import os\nopen('f', 'w').write('x')\nos.rename('f', '{outside}/f')",
        _nothing_written,
    ),
    "a socket to 127.0.0.1": (
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
        _no_connection,
    ),
    "a connection helper": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        _no_connection,
    ),
    "urllib": (
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)",
        _no_connection,
    ),
    "huge output": ("while True:\n    print('x' * 10000)", _output_capped),
}


def _code(w: World, template: str) -> str:
    return template.format(home=w.home, outside=w.outside, port=w.listener.port)


def _limit(name: str) -> float:
    """Snippets that never end get a short wall clock; the others a generous one, so
    that a loaded machine does not turn a refusal into a timeout."""
    return TIMEOUT_S if HOSTILE[name][1] is _timeout else 30.0


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_snippet_is_stopped_or_refused(world: World, name: str) -> None:
    template, check = HOSTILE[name]
    before = _children()
    out = await world.python(_code(world, template), _limit(name))
    check(world, out)
    assert _children() <= before  # nothing it started outlives it
    assert (await world.chat())["usage"]["completion_tokens"] == 3


async def test_the_kernel_serves_through_all_of_them(world: World, sandbox: Sandbox) -> None:
    """Every hostile snippet, as many at once as the sandbox allows; a chat request
    is answered while the first batch is still running, and after all of them."""
    names = list(HOSTILE)
    for start in range(0, len(names), sandbox.max_running):
        batch = names[start : start + sandbox.max_running]
        runs = [
            asyncio.create_task(world.python(_code(world, HOSTILE[n][0]), _limit(n))) for n in batch
        ]
        if start == 0:  # the infinite loop is in this batch: it cannot have ended yet
            assert (await world.chat())["finish_reason"] == "length"
            assert not runs[0].done()
        for name, out in zip(batch, await asyncio.gather(*runs), strict=True):
            HOSTILE[name][1](world, out)
    assert (await world.chat())["usage"]["completion_tokens"] == 3


# -- what the code does get --------------------------------------------------------
async def test_ordinary_code_runs_in_an_empty_private_directory(world: World) -> None:
    code = (
        "import asyncio, json, os, pathlib\n"
        "print(json.dumps(sorted(os.listdir('.'))))\n"
        "pathlib.Path('notes.txt').write_text('kept for this run')\n"
        "os.mkdir('sub')\n"
        "print(open('notes.txt').read(), os.getcwd(), sep='|')\n"
        "async def f():\n    return 6 * 7\n"
        "print(asyncio.run(f()))\n"
    )
    out = await world.python(code)
    assert out["exit_code"] == 0 and out["killed_by"] is None, out
    listing, rest, answer = out["stdout"].splitlines()
    assert listing == "[]"
    text, cwd = rest.split("|")
    assert text == "kept for this run" and answer == "42"
    assert not Path(cwd).exists()  # deleted after the run


async def test_the_environment_holds_no_secrets(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_TOKEN", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = await world.python("import os\nfor k, v in os.environ.items():\n    print(k, v)")
    assert out["exit_code"] == 0, out
    names = {line.split(" ", 1)[0] for line in out["stdout"].splitlines()}
    assert names <= ALLOWED_ENV
    _no_secret(world, out)


async def test_exit_status_and_errors_come_back(world: World) -> None:
    out = await world.python("import sys\nprint('bye')\nsys.exit(3)")
    assert (out["stdout"], out["exit_code"], out["killed_by"]) == ("bye\n", 3, None)
    out = await world.python("1 / 0")
    assert out["exit_code"] == 1 and "ZeroDivisionError" in out["stderr"]
    out = await world.python("def (:")
    assert out["exit_code"] == 1 and "SyntaxError" in out["stderr"]


# -- concurrency -------------------------------------------------------------------
async def test_sandboxes_run_side_by_side(world: World) -> None:
    """Two runs overlap in time: each reports the system-wide monotonic clock when
    it starts and ends (ordering of events, not a speed threshold)."""
    code = "import time\nprint(time.monotonic())\ntime.sleep(0.5)\nprint(time.monotonic())"
    a, b = await asyncio.gather(world.python(code), world.python(code))
    (a0, a1), (b0, b1) = ([float(x) for x in o["stdout"].split()] for o in (a, b))
    assert a0 < b1 and b0 < a1


async def test_too_many_at_once_is_429_and_cancelling_kills(tmp_path: Path) -> None:
    sandbox = Sandbox(max_running=1)
    before = _children()
    first = asyncio.create_task(sandbox.run("while True:\n    pass", 30))
    while sandbox.running == 0 or not _children() - before:
        await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as busy:
        await sandbox.run("print(1)")
    assert busy.value.status == 429
    first.cancel()  # a client that goes away: its sandbox is killed, not left running
    with pytest.raises(asyncio.CancelledError):
        await first
    assert _children() <= before
    assert (await sandbox.run("print(1)")).stdout == "1\n"


# -- the OS layers alone -----------------------------------------------------------
async def _full_without_hook(sandbox: Sandbox) -> Sandbox:
    await sandbox.run("pass")  # the probe
    if sandbox.isolation != "full":
        pytest.skip(f"namespaces with mounts unavailable here (isolation {sandbox.isolation})")
    return Sandbox(isolation="full", audit_hook=False)


async def test_os_layers_hold_without_the_audit_hook(world: World, sandbox: Sandbox) -> None:
    bare = await _full_without_hook(sandbox)

    async def run(template: str, timeout: float = 10.0) -> dict[str, Any]:
        out = await bare.run(_code(world, template), timeout, hide=[world.home])
        return out.to_dict()

    out = await run("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
    assert out["exit_code"] == 1 and "Network is unreachable" in out["stderr"], out
    assert world.listener.connected == 0
    out = await run("print(open('{home}/admin-token').read())")
    assert "No such file or directory" in out["stderr"] and out["exit_code"] == 1
    _no_secret(world, out)
    out = await run("open('{outside}/pwned', 'w').write('x')")
    assert "Read-only file system" in out["stderr"] and not (world.outside / "pwned").exists()
    out = await run("import os\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))")
    assert out["stdout"] == "['1']\n"  # its own PID namespace: no host process visible
    out = await run("x = bytearray(2**40)")
    assert out["killed_by"] == "memory"
    out = await run("while True:\n    pass", TIMEOUT_S)
    assert out["killed_by"] == "timeout"
    out = await run("open('big', 'wb').write(b'x' * (64 * 2**20))")
    assert "File too large" in out["stderr"]
    # Even code that makes raw mount(2) calls (ctypes: nothing refuses it here)
    # cannot uncover LLMOS_HOME or make / writable: those mounts are locked.
    out = await run(
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.umount2(b'{home}', 2), libc.mount(None, b'/', None, 32 | 4096, None))\n"
        "print(os.path.exists('{home}/admin-token'))\n"
        "open('{outside}/pwned', 'w')\n"
    )
    assert out["stdout"] == "-1 -1\nFalse\n", out
    assert "Read-only file system" in out["stderr"] and not (world.outside / "pwned").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="RLIMIT_NPROC does not bind root")
async def test_a_fork_bomb_without_the_hook_is_bounded(world: World, sandbox: Sandbox) -> None:
    bare = await _full_without_hook(sandbox)
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    before = _children()
    out = await bare.run(code, TIMEOUT_S)
    assert out.killed_by == "timeout"
    assert _children() <= before


async def test_without_namespaces_the_hook_still_refuses(world: World) -> None:
    weak = Sandbox(isolation="none")
    out = (await weak.run(_code(world, HOSTILE["a socket to 127.0.0.1"][0]))).to_dict()
    _no_connection(world, out)
    out = (await weak.run(_code(world, HOSTILE["reading the admin token"][0]))).to_dict()
    _secret_refused(world, out)
    assert out["isolation"] == "none"
