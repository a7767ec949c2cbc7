"""The llmos kernel: no HTTP in here; everything enters through the syscall table."""

from llmos.kernel.boot import build_devices
from llmos.kernel.kernel import Kernel
from llmos.kernel.process import Process, ProcState
from llmos.kernel.request import Delta, Done, ReqState, Request
from llmos.kernel.syscalls import TABLE as SYSCALLS
from llmos.kernel.tokens import Caller

__all__ = [
    "SYSCALLS",
    "Caller",
    "Delta",
    "Done",
    "Kernel",
    "ProcState",
    "Process",
    "ReqState",
    "Request",
    "build_devices",
]
