"""Syscalls of the cluster: replica groups and their scaling decisions (fleet.py,
autoscale.py) and where requests were placed (placement.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest
from llmos.kernel.sysdefs import ADMINS, READERS, Syscall, int_in
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

MAX_EVENTS = 1000
RECENT_EVENTS = 10  # shown with the status


def _group_name(a: dict[str, Any], required: bool) -> str | None:
    name = a.get("group")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name:
        raise InvalidRequest("group must be a replica group's name", param="group")
    return name


async def _cluster_status(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    placement = k.scheduler.placement
    return {
        "groups": k.fleet.status(),
        "placement": {"mode": placement.mode, "counts": dict(placement.counts)},
        "events": k.fleet.events(limit=RECENT_EVENTS),
    }


async def _cluster_events(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    limit = int_in(a, "limit", 50, 1, MAX_EVENTS)
    name = _group_name(a, required=False)
    if name is not None:
        k.fleet.group(name)  # NotFound names the groups there are
    return k.fleet.events(limit=limit, group=name)


async def _cluster_scale(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    group = k.fleet.group(_group_name(a, required=True))
    replicas = a.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise InvalidRequest("replicas must be an integer", param="replicas")
    before = k.fleet.events(limit=1, group=group.name)
    since = before[0]["id"] if before else 0
    await k.fleet.scale_to(group, replicas, f"scaled to {replicas} by {c.owner}")
    # this order's events (the autoscaler leaves a group alone while it changes)
    events = [e for e in k.fleet.events(MAX_EVENTS, group.name) if e["id"] > since]
    return {"group": group.name, "replicas": len(k.fleet.active(group)), "events": events}


CLUSTER_SYSCALLS = (
    Syscall(
        "cluster.status",
        _cluster_status,
        READERS,
        "replica groups, the placement mode and counts, recent scaling events",
    ),
    Syscall("cluster.events", _cluster_events, READERS, "scaling decisions, newest first"),
    Syscall(
        "cluster.scale",
        _cluster_scale,
        ADMINS,
        "add or drain replicas of a group until it has `replicas` (nothing is lost)",
        True,
    ),
)
