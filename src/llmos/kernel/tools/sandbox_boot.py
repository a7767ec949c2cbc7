"""The sandbox's first code, run in the child as `python -I -S -B -X utf8 -c <this
file's text> <config JSON>`, before the untrusted code, which it reads from stdin.

In order: it moves into the working directory, sets the resource limits (soft = hard,
so the code cannot raise them), installs an audit hook (PEP 578) and runs the code
as `__main__`. The hook refuses:
- starting programs or processes (fork, exec, spawn, system, subprocess) and
  signalling any process but itself; importing ctypes or a fresh _posixsubprocess
  (the one `subprocess` uses is loaded first, its fork_exec replaced);
- sockets other than AF_UNIX pairs, and every connect, bind, send-to or name lookup;
- opening or listing anything outside the working directory, the standard library
  and READ_ROOTS (read-only), and changing anything outside the working directory;
  creating symbolic links; opening directories outside the working directory;
- the introspection that reaches the hook's own state (gc referents, trace and
  profile functions, building code objects) and changing resource limits.

The hook is defence in depth, not the boundary. It sees ordinary Python operations;
an exploit of the interpreter itself, or a race on a path object that changes
between the open and the check, can get past it. What does not rely on it — the
namespaces, limits and the wall-clock kill that sandbox.py sets up — bounds what
such code can reach. The hook's state is bound in its closure when it is made, so
rebinding module attributes (os.readlink = …, builtins.isinstance = …) later
changes nothing it decides.

Not imported by the kernel: sandbox.py hands this file's text to the child."""

from __future__ import annotations

import builtins
import json
import os
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any

READ_ROOTS = ("/usr/share/zoneinfo", "/dev/null", "/dev/urandom")
DENIED = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "os.startfile",
        "os.killpg",
        "os.symlink",
        "subprocess.Popen",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.sethostname",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "resource.setrlimit",
        "resource.prlimit",
    }
)
DENIED_MODULES = frozenset(
    {"ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi"}
)
# event -> positions of the paths it reads / changes
READS = {
    "os.listdir": (0,),
    "os.scandir": (0,),
    "os.chdir": (0,),
    "os.listxattr": (0,),
    "os.getxattr": (0,),
}
WRITES = {
    "os.mkdir": (0,),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.chflags": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
MAX_LINK_HOPS = 40


def make_hook(cwd: str, read_roots: tuple[str, ...]) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook for a sandbox working in `cwd`."""
    # Everything the hook calls is bound here (C functions and immutable values).
    getcwd, readlink, stat, fspath, getpid = os.getcwd, os.readlink, os.stat, os.fspath, os.getpid
    str_, bytes_, int_, isinstance_ = str, bytes, int, isinstance
    refuse = PermissionError
    denied, denied_modules, reads, writes = DENIED, DENIED_MODULES, READS, WRITES
    write_flags, af_unix = WRITE_FLAGS, int(socket.AF_UNIX)

    def resolve(path: Any) -> str | None:
        """`path` made absolute, `..` and symbolic links resolved; None for an fd."""
        if path is None or isinstance_(path, int_):
            return None
        if not isinstance_(path, str_ | bytes_):
            path = fspath(path)
        if isinstance_(path, bytes_):
            path = path.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        todo = path.split("/")[::-1]  # a stack of the components still to walk
        parts: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
            try:
                target = readlink("/" + "/".join(parts))
            except OSError:  # not a link, or not there
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise refuse("sandbox: too many levels of symbolic links")
            parts.pop()
            if target.startswith("/"):
                parts = []
            todo.extend(target.split("/")[::-1])
        return "/" + "/".join(parts)

    def under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def check(path: Any, write: bool, event: str) -> None:
        where = resolve(path)
        if where is None:
            return
        if under(where, (cwd,)):
            return
        if write or not under(where, read_roots):
            raise refuse(f"sandbox: {event} outside the working directory: {where}")
        if event == "open" and stat(where).st_mode & 0o170000 == 0o040000:
            raise refuse(f"sandbox: opening a directory outside the working directory: {where}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in denied:
            raise refuse(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            write = bool(flags & write_flags) if isinstance_(flags, int_) else mode != "r"
            check(path, write, event)
        elif event == "import":
            name = args[0]
            if name in denied_modules:
                raise refuse(f"sandbox: importing {name} is not allowed")
        elif event in reads:
            for i in reads[event]:
                check(args[i], False, event)
        elif event in writes:
            for i in writes[event]:
                check(args[i], True, event)
        elif event == "socket.__new__":
            if args[1] != af_unix:
                raise refuse("sandbox: no network (only AF_UNIX socket pairs)")
        elif event == "os.kill" and args[0] != getpid():
            raise refuse("sandbox: signalling other processes is not allowed")

    return hook


def _disarm_subprocess() -> None:
    """`subprocess` (which asyncio imports) stays importable, but the C function it
    starts programs with is replaced before the hook goes in; the hook then refuses
    any fresh import of the real one."""
    import _posixsubprocess

    def fork_exec(*_: Any) -> int:
        raise PermissionError("sandbox: starting programs is not allowed")

    _posixsubprocess.fork_exec = fork_exec


def main() -> None:
    config = json.loads(sys.argv[1])
    code = sys.stdin.buffer.read()
    cwd = config["cwd"]
    os.chdir(cwd)
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    stdlib = os.path.dirname(os.__file__)
    if config["hook"]:
        roots = tuple(os.path.realpath(p) for p in (stdlib, *READ_ROOTS))
        _disarm_subprocess()
        sys.addaudithook(make_hook(os.path.realpath(cwd), roots))
    sys.argv = ["<sandbox>"]
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, "<sandbox>", "exec"), namespace)
    except MemoryError:
        sys.stderr.write("MemoryError: the sandbox's memory limit was reached\n")
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
