"""Device capabilities -- what an engine takes and makes (`text`, `vision`, `audio_in`,
`audio_out`, `embeddings`; devices/base.py) -- and routing requests by them. (Not
process capability tokens: those are capability.py.)

A chat or completion needs `text`; each image part adds `vision`, each audio part
`audio_in` (media_parts.py decides whether parts go to the device or are converted).

Invariant: devices serving one model with the same capabilities are interchangeable
(a snapshot resumes on any of them) and share one run queue, a *route*. A model
served by devices of different capabilities has one route per capability set: the
first device's set keeps the model id as its key (so a model served one way has the
queue it always had), the others are keyed `model+text+vision`. A request is bound
to the route of the device it was built for (its prompt was tokenized there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from llmos.devices.base import Device
from llmos.errors import InvalidRequest
from llmos.params import CAPABILITIES

if TYPE_CHECKING:
    from llmos.kernel.scheduler import Scheduler

TEXT, VISION, AUDIO_IN = "text", "vision", "audio_in"
TEXT_ONLY = frozenset({TEXT})
NEED_OF_PART = {"image_url": VISION, "input_audio": AUDIO_IN}  # content part type -> need


def ordered(caps: Iterable[str]) -> list[str]:
    """Capability names in their canonical order (text, vision, audio_in, ...)."""
    have = set(caps)
    return [c for c in CAPABILITIES if c in have]


def routes(devices: Iterable[Device]) -> dict[str, str]:
    """Device name -> the key of the run queue it serves."""
    first: dict[str, frozenset[str]] = {}
    out: dict[str, str] = {}
    for d in devices:
        base = first.setdefault(d.model, d.capabilities)
        key = d.model if d.capabilities == base else "+".join([d.model, *ordered(d.capabilities)])
        out[d.name] = key
    return out


def route_for(dev: Device, devices: Iterable[Device], known: dict[str, str]) -> str:
    """The run queue a device joining `devices` serves: that of a device of the same
    model and capabilities if there is one, else a key made as `routes` makes them."""
    for d in devices:
        if d.model == dev.model and d.capabilities == dev.capabilities:
            return known[d.name]
    return routes([*devices, dev])[dev.name]


def capable(devices: Iterable[Device], needs: frozenset[str]) -> list[Device]:
    return [d for d in devices if needs <= d.capabilities]


def missing(model: str, devices: Sequence[Device], needs: frozenset[str]) -> str:
    """Why no device of `model` can take a request needing `needs`: names the
    capability none of them has (or says no single one has them all)."""
    lacking = [c for c in ordered(needs) if not any(c in d.capabilities for d in devices)]
    have = "; ".join(f"{d.name}: {', '.join(ordered(d.capabilities))}" for d in devices)
    if lacking:
        return f"no device serving model {model!r} has the {lacking[0]!r} capability ({have})"
    wanted = ", ".join(repr(c) for c in ordered(needs))
    return f"no single device serving model {model!r} has all of {wanted} ({have})"


def pick(model: str, serving: Sequence[Device], needs: frozenset[str], sched: Scheduler) -> Device:
    """A device of `model` with every capability in `needs`: on the route with a
    device up and the least work per slot; among equals the narrowest (a text request
    leaves vision devices free), then the first configured. InvalidRequest if none."""
    able = capable(serving, needs)
    if not able:
        raise InvalidRequest(missing(model, serving, needs), param="model", code="capability")
    by_route: dict[str, list[Device]] = {}
    for d in able:
        by_route.setdefault(sched.routes[d.name], []).append(d)

    def cost(key: str) -> tuple[bool, float, int]:
        devs = by_route[key]
        down = not any(sched.breakers.allows(d.name) for d in devs)
        work = len(sched.queue(key)) + sum(len(sched.running[d.name]) for d in devs)
        return down, work / max(1, sum(d.slots for d in devs)), len(devs[0].capabilities)

    devs = by_route[min(by_route, key=cost)]  # min keeps the first of equals
    up = [d for d in devs if sched.breakers.allows(d.name)]
    return (up or devs)[0]
