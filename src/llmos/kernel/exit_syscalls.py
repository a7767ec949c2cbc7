"""`proc.exit {code?}`: a process ends itself, as a program calls exit(code).

Only a process token may make it, and only for its own pid. The process becomes
EXITED with its exit code (0: success), its accounting (tokens in and out,
requests) kept in the table; requests it still has in flight are cancelled, as
the threads of a program that exits are. Front ends that run a piece of work as a
process (the app host) end it with this call.

syscalls.py gathers EXIT_SYSCALLS into the syscall table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, Killed
from llmos.kernel.process import ProcState
from llmos.kernel.sysdefs import Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

PROCESSES = frozenset({"process"})  # calls a process makes about itself
MAX_EXIT_CODE = 255  # as a POSIX exit status


async def _proc_exit(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    if c.pid is None:
        raise InvalidRequest("only a process token may exit; use proc.kill", param="pid")
    code = a.get("code", 0)
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= MAX_EXIT_CODE:
        raise InvalidRequest(f"code must be an integer 0..{MAX_EXIT_CODE}", param="code")
    proc = k.procs.get(c.pid)
    if not proc.state.alive:
        return proc.to_dict()
    proc.exit_code = code
    proc.move(ProcState.EXITED)
    k.store.save_process(proc)
    for req in list(k.live.get(proc.pid, ())):  # queued: fail now; running: next token
        k.scheduler.cancel(req, Killed(f"process {proc.pid} exited", param="pid"))
    return proc.to_dict()


EXIT_SYSCALLS = (
    Syscall(
        "proc.exit",
        _proc_exit,
        PROCESSES,
        "end the calling process with an exit code; its requests in flight are cancelled",
    ),
)
