"""The Python sandbox behind the `python` tool: untrusted code in a child process.

Each run gets a fresh empty working directory (deleted after), an environment with
nothing inherited (HOME and TMPDIR point at that directory; no LLMOS_* variable,
no token), and `python -I -S -B` (isolated: no site-packages, no user paths, no
PYTHON* variables). Layers, outermost first:

1. Namespaces, through util-linux `unshare`, probed once and the strongest that
   works kept (`isolation`):
   - "full": a user namespace (no host capabilities: no mknod, mount, module
     loading, ptrace of host processes), a network namespace (no interface but a
     down loopback: nothing is reachable, 127.0.0.1 included), a PID namespace
     with its own /proc (host processes are invisible; killing its first process
     ends all of them), and a mount namespace in which every file system is
     read-only, the working directory is a size-capped tmpfs, and LLMOS_HOME
     (tokens, keys, database) is covered by an empty one — set up, then locked
     by entering a nested user namespace (see MOUNTS);
   - "namespaces": the same without the mounts; "net": a network namespace only
     (root where user namespaces are off); "none": no namespaces.
2. Resource limits, set in the child before the code runs (sandbox_boot.py):
   CPU seconds, address space, file size, processes, open files, no core dumps.
   RLIMIT_NPROC does not bind root (the kernel ignores it for uid 0), so as root a
   fork bomb is stopped by the audit hook, which refuses every fork, and contained
   by the PID namespace and the process-group kill.
3. The audit hook (sandbox_boot.py): no processes, no network, no reads outside
   the working directory and the standard library, no writes outside the working
   directory. The OS enforces no-network, read-only-elsewhere and hidden-LLMOS_HOME
   ("full"); other reads (say /etc) are refused by the hook alone, as are writes
   and LLMOS_HOME at the weaker levels.
4. The supervisor here: a wall-clock timeout, after which the whole process group
   is killed; output capped (more stops the run).

The kernel keeps serving while sandboxes run: the child is an asyncio subprocess,
no thread blocks, and no lock is held across runs (at most `max_running` at once;
more are refused with 429)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llmos.errors import Overloaded
from llmos.params import (
    SANDBOX_DISK_BYTES,
    SANDBOX_FILE_BYTES,
    SANDBOX_MAX_RUNNING,
    SANDBOX_MEMORY_BYTES,
    SANDBOX_NOFILE,
    SANDBOX_NPROC,
    SANDBOX_OUTPUT_BYTES,
    SANDBOX_TIMEOUT_S,
)

log = logging.getLogger(__name__)

ISOLATIONS = ("full", "namespaces", "net", "none")  # strongest first
NAMESPACES = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")
# Run by `sh` inside the new namespaces: make every mount but /proc read-only (those
# that refuse stay as they are; / must not), mount the working directory's tmpfs,
# cover each hidden directory with an empty one, then enter one more user and mount
# namespace and become the Python child there. In that inner, less privileged
# namespace the mounts made here are locked: even code that could call mount(2)
# cannot unmount the covers or make a file system writable again.
MOUNTS = """set -e
while read -r _ point _; do
  case "$point" in /proc|/proc/*) continue ;; esac
  mount -o remount,bind,ro "$point" 2>/dev/null || true
done < /proc/self/mounts
mount -o remount,bind,ro /
mount -t tmpfs -o "size=$1,mode=0700" llmos-sandbox "$2"
cd "$2"
unset OLDPWD PWD
unshare=$3
n=$4
shift 4
while [ "$n" -gt 0 ]; do
  mount -t tmpfs -o size=4k,mode=0 llmos-hidden "$1"
  shift
  n=$((n - 1))
done
exec "$unshare" --user --map-root-user --mount "$@"
"""
PROBE_CODE = "print(6 * 7)"
PROBE_TIMEOUT_S = 20.0
CHUNK = 65536


@dataclass(frozen=True)
class Limits:
    timeout_s: float = SANDBOX_TIMEOUT_S
    memory_bytes: int = SANDBOX_MEMORY_BYTES
    file_bytes: int = SANDBOX_FILE_BYTES
    disk_bytes: int = SANDBOX_DISK_BYTES
    nproc: int = SANDBOX_NPROC
    nofile: int = SANDBOX_NOFILE
    output_bytes: int = SANDBOX_OUTPUT_BYTES

    def rlimits(self, timeout_s: float) -> dict[str, tuple[int, int]]:
        cpu = math.ceil(timeout_s) + 1  # CPU time never outlasts the wall clock by much
        return {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU, then SIGKILL
            "RLIMIT_AS": (self.memory_bytes, self.memory_bytes),
            "RLIMIT_FSIZE": (self.file_bytes, self.file_bytes),
            "RLIMIT_NPROC": (self.nproc, self.nproc),
            "RLIMIT_NOFILE": (self.nofile, self.nofile),
            "RLIMIT_CORE": (0, 0),
        }


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    exit_code: int | None  # None: it did not exit, it was killed (see killed_by)
    timed_out: bool
    killed_by: str | None  # "timeout" | "output" | "memory" | "cpu" | "signal:SIG…" | None
    isolation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sandbox:
    """Runs code; one per kernel. `isolation` forces a level (tests); `audit_hook`
    False leaves only the OS layers (tests of those layers)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        isolation: str | None = None,
        audit_hook: bool = True,
        max_running: int = SANDBOX_MAX_RUNNING,
    ) -> None:
        if isolation is not None and isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}")
        self.limits = limits or Limits()
        self.audit_hook = audit_hook
        self.max_running = max_running
        self.running = 0
        self.isolation: str | None = None  # chosen at the first run
        self._wanted = isolation
        self._probe_lock = asyncio.Lock()  # guards only the one-time probe
        self._boot = resources.files("llmos.kernel.tools").joinpath("sandbox_boot.py").read_text()

    async def run(
        self, code: str, timeout_s: float | None = None, hide: Sequence[Path] = ()
    ) -> Outcome:
        """Run `code`; its output, exit status and what stopped it. `hide`:
        directories the code must not see (covered where mounts are available)."""
        if self.running >= self.max_running:
            raise Overloaded(f"all {self.max_running} sandboxes are busy; retry shortly")
        self.running += 1
        try:
            isolation = await self._isolation()
            return await self._execute(isolation, code, timeout_s or self.limits.timeout_s, hide)
        finally:
            self.running -= 1

    # -- isolation -----------------------------------------------------------------
    async def _isolation(self) -> str:
        """The strongest isolation that works here (probed once)."""
        if self.isolation is not None:
            return self.isolation
        async with self._probe_lock:
            if self.isolation is None:
                self.isolation = await self._probe()
                log.info("python sandbox isolation: %s", self.isolation)
        return self.isolation

    async def _probe(self) -> str:
        candidates = ISOLATIONS if self._wanted is None else (self._wanted,)
        hidden = Path(tempfile.mkdtemp(prefix="llmos-sandbox-probe-"))
        try:
            for level in candidates:
                if _prefix(level, "/", 0, [hidden]) is None:
                    continue
                try:
                    out = await self._execute(level, PROBE_CODE, PROBE_TIMEOUT_S, [hidden])
                except OSError:
                    continue
                if out.exit_code == 0 and out.stdout == "42\n":
                    return level
                log.debug("sandbox isolation %s unavailable: %s", level, out.stderr[-500:])
        finally:
            shutil.rmtree(hidden, ignore_errors=True)
        if self._wanted is not None:
            raise RuntimeError(f"sandbox isolation {self._wanted!r} does not work here")
        return "none"

    # -- one run -------------------------------------------------------------------
    async def _execute(
        self, isolation: str, code: str, timeout_s: float, hide: Sequence[Path]
    ) -> Outcome:
        cwd = tempfile.mkdtemp(prefix="llmos-sandbox-")
        try:
            hidden = [h for h in hide if h.is_dir() and not _under(Path(cwd), h)]
            prefix = _prefix(isolation, cwd, self.limits.disk_bytes, hidden) or []
            config = {
                "cwd": cwd,
                "rlimits": self.limits.rlimits(timeout_s),
                "hook": self.audit_hook,
            }
            argv = [*prefix, sys.executable, "-I", "-S", "-B", "-X", "utf8"]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                "-c",
                self._boot,
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=_environment(cwd),
                start_new_session=True,  # its own process group, killed as one
            )
            try:
                return await self._supervise(proc, code, timeout_s, isolation)
            finally:
                _kill_group(proc)  # whatever is left of it, on every path out
                await proc.wait()
        finally:
            await asyncio.to_thread(_remove, cwd)

    async def _supervise(
        self, proc: asyncio.subprocess.Process, code: str, timeout_s: float, isolation: str
    ) -> Outcome:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        overflow = False

        async def feed(stdin: asyncio.StreamWriter) -> None:
            try:
                stdin.write(code.encode("utf-8", "surrogatepass"))
                await stdin.drain()
                stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it died before reading its code; its status says why

        async def pump(stream: asyncio.StreamReader, buf: bytearray) -> None:
            nonlocal overflow
            while chunk := await stream.read(CHUNK):
                room = self.limits.output_bytes - len(out) - len(err)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    overflow = True
                    _kill_group(proc)
                    return

        timed_out = False
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(
                    feed(proc.stdin), pump(proc.stdout, out), pump(proc.stderr, err)
                )
                await proc.wait()
        except TimeoutError:
            timed_out = True
            _kill_group(proc)
        rc = await proc.wait()
        stderr = err.decode("utf-8", "replace")
        return Outcome(
            stdout=out.decode("utf-8", "replace"),
            stderr=stderr,
            exit_code=rc if rc >= 0 and not timed_out and not overflow else None,
            timed_out=timed_out,
            killed_by=_killed_by(rc, timed_out, overflow, stderr),
            isolation=isolation,
        )


def _prefix(isolation: str, cwd: str, disk_bytes: int, hide: Sequence[Path]) -> list[str] | None:
    """The command that wraps the child at this isolation; None if a tool is missing."""
    if isolation == "none":
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    if isolation == "net":
        return [unshare, "--net"]
    if isolation == "namespaces":
        return [unshare, *NAMESPACES]
    sh, mount = shutil.which("sh"), shutil.which("mount")
    if sh is None or mount is None:
        return None
    mounts = [sh, "-c", MOUNTS, "llmos-sandbox", str(disk_bytes), cwd, unshare, str(len(hide))]
    return [unshare, *NAMESPACES, "--mount", "--mount-proc", *mounts, *map(str, hide)]


def _environment(cwd: str) -> dict[str, str]:
    """All the child gets: nothing of the kernel's own environment."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MALLOC_ARENA_MAX": "2",  # glibc's per-thread arenas would eat RLIMIT_AS
    }


def _killed_by(rc: int, timed_out: bool, overflow: bool, stderr: str) -> str | None:
    if timed_out:
        return "timeout"
    if overflow:
        return "output"
    if rc < 0:
        if -rc == signal.SIGXCPU:
            return "cpu"
        try:
            return f"signal:{signal.Signals(-rc).name}"
        except ValueError:
            return f"signal:{-rc}"
    lines = stderr.rstrip().splitlines()
    if rc != 0 and lines and lines[-1].startswith("MemoryError"):
        return "memory"
    return None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.killpg(proc.pid, signal.SIGKILL)


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _remove(path: str) -> None:
    """Delete a run's directory, even where the code took away its own permissions."""
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    for root, dirs, _ in os.walk(path):  # top-down: each directory opened before entered
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not delete sandbox directory %s: %s", path, exc)
