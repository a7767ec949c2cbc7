"""The alert syscalls: `alert.list` (alerts of the processes the caller may see) and
`alert.clear` (an admin's: the alert ends and its process's throttle is lifted).
Thin handlers; anomaly.py does the work. syscalls.py gathers ALERT_SYSCALLS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest
from llmos.kernel.sysdefs import ADMINS, READERS, Syscall, int_in
from llmos.kernel.tokens import Caller
from llmos.params import MAX_INT

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

MAX_ALERT_LIST = 1000  # alerts one alert.list may return


async def _alert_list(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    active_only = a.get("active_only", False)
    if not isinstance(active_only, bool):
        raise InvalidRequest("active_only must be true or false", param="active_only")
    limit = int_in(a, "limit", 100, 1, MAX_ALERT_LIST)
    return {"object": "list", "data": k.anomalies.visible(c, active_only, limit)}


async def _alert_clear(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return k.anomalies.clear(int_in(a, "id", None, 1, MAX_INT)).to_dict()


ALERT_SYSCALLS = (
    Syscall("alert.list", _alert_list, READERS, "anomaly alerts of the processes you may see"),
    Syscall(
        "alert.clear",
        _alert_clear,
        ADMINS,
        "clear an anomaly alert and lift its process's throttle",
        True,
    ),
)
