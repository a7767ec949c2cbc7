"""A device replica placed on a Ray cluster (extra `llmos[cluster]`).

The kernel keeps scheduling, accounting and access; the engine runs in a Ray actor
(ray_host.py) on whichever node has the resources the spec asks for. To the kernel
this is a Device like any other: tokens stream back one by one through Ray's
streaming generators, so preemption at token boundaries, snapshots and accounting
are unchanged. A Ray failure (the actor or its node died, the actor is unreachable)
is a DeviceError: the scheduler requeues the request with its snapshot and it
resumes on another device, and the autoscaler replaces the replica.

Loopback clusters: Ray rewrites 127.0.0.1 to the machine's outward address, so a
cluster kept on this machine uses other loopback addresses (127.0.0.2, ...), which
Ray keeps; `connect` passes that address on as this driver's node address."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from llmos.devices.base import Device
from llmos.devices.cluster_spec import DeviceSpec
from llmos.errors import DeviceError, InvalidRequest, LlmosError, Unavailable
from llmos.types import DeviceEvent, Snapshot

log = logging.getLogger(__name__)

NAMESPACE = "llmos"
CALL_TIMEOUT_S = 60.0  # tokenize, render_chat and the like
HEALTH_TIMEOUT_S = 5.0
CANCEL_TIMEOUT_S = 10.0  # waiting for a cancelled generation to close on the actor
PULL_WAIT_S = 5.0  # Ray Client: how long one pull waits for the next event
# Ray Client: the head starts a server process per client, and that start sometimes
# fails (a known Ray flake); the proxy frees the port and a new attempt gets a new one
CLIENT_ATTEMPTS = 3
CLIENT_RETRY_S = 1.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise Unavailable(
            "Ray is not installed: pip install 'llmos[cluster]'", param="ray_address"
        ) from None
    return ray


def node_ip_for(address: str) -> str | None:
    """The driver's node address for a cluster kept on loopback (see the module doc)."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback and str(ip) != "127.0.0.1" else None


def connect(address: str, node_ip: str | None = None) -> dict[str, Any]:
    """Join the Ray cluster at `address` ("auto", "host:port" or "ray://host:port")
    as a driver; returns what the cluster has (nodes, resources)."""
    ray = _ray()
    if not address or not isinstance(address, str):
        raise InvalidRequest("a Ray address is required", param="ray_address")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
        ip = node_ip or node_ip_for(address)
        if ip is not None and not address.startswith("ray://"):
            kwargs["_node_ip_address"] = ip
        _init(ray, address, kwargs)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "resources": ray.cluster_resources()}


def _init(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    attempts = CLIENT_ATTEMPTS if address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, log_to_driver=False, **kwargs)
            return
        except ConnectionAbortedError as exc:  # the server refused this client's start
            if attempt == attempts:
                raise _cannot_join(address, exc) from None
            log.warning("Ray Client at %s: %s; trying again", address, exc)
            time.sleep(CLIENT_RETRY_S)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise _cannot_join(address, exc) from None


def _cannot_join(address: str, exc: Exception) -> Unavailable:
    return Unavailable(f"cannot join the Ray cluster at {address}: {exc}", param="ray_address")


def disconnect() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


class RayDevice(Device):
    kind = "ray"

    def __init__(self, spec: DeviceSpec, name: str) -> None:
        super().__init__(
            name=name,
            model=spec.model_id,
            slots=spec.slots,
            context_length=spec.ctx,
            capabilities=spec.capabilities,
        )
        self.spec = spec
        self.actor: Any = None
        self.placed: dict[str, Any] = {}  # where the actor runs (node, pid): from start()
        self._resumable = True

    @property
    def resumable(self) -> bool:
        return self._resumable

    def _options(self) -> dict[str, Any]:
        r = self.spec.resources
        opts: dict[str, Any] = {
            "name": self.name,
            "namespace": NAMESPACE,
            "num_cpus": r.num_cpus,
            "num_gpus": r.num_gpus,
            "max_restarts": 0,  # a dead replica is replaced by the kernel's autoscaler
            "max_concurrency": max(64, 4 * self.spec.slots),
        }
        if r.memory_gb is not None:
            opts["memory"] = int(r.memory_gb * (1 << 30))
        if r.custom:
            opts["resources"] = dict(r.custom)
        return opts

    async def start(self) -> None:
        """Place the actor (waits until some node has the resources) and load the engine."""
        ray = _ray()
        from llmos.devices.ray_host import EngineHost

        host = ray.remote(EngineHost)
        self.actor = host.options(**self._options()).remote(self.spec, self.name)
        try:
            self.placed = await self.actor.start.remote()
        except asyncio.CancelledError:
            ray.kill(self.actor)  # not placed in time: do not leave it pending
            raise
        except Exception as exc:
            ray.kill(self.actor)
            raise DeviceError(f"replica {self.name} did not start: {_why(exc)}") from None
        self.slots = self.placed["slots"]
        self.context_length = self.placed["context_length"]
        self.tunable = self.placed["tunable"]
        self.batch = self.placed["batch"]
        self.train_context = self.placed["train_context"]
        self._resumable = self.placed["resumable"]

    async def close(self) -> None:
        if self.actor is None:
            return
        actor, self.actor = self.actor, None
        with contextlib.suppress(Exception):  # dead or stuck: killing it is enough
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await actor.close.remote()
        _ray().kill(actor)

    async def _call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        if self.actor is None:
            raise DeviceError(f"replica {self.name} is not running")
        try:
            async with asyncio.timeout(timeout):  # wait_for can lose a cancellation (3.11)
                return await getattr(self.actor, method).remote(*args)
        except TimeoutError:
            raise DeviceError(
                f"replica {self.name} did not answer {method} in {timeout:g} s"
            ) from None
        except Exception as exc:
            raise _translated(self.name, exc) from None

    async def health(self) -> bool:
        try:
            return bool(await self._call("health", timeout=HEALTH_TIMEOUT_S))
        except DeviceError:
            return False

    async def tokenize(self, text: str) -> list[int]:
        result: list[int] = await self._call("tokenize", text)
        return result

    async def detokenize(self, ids: list[int]) -> str:
        return str(await self._call("detokenize", ids))

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(await self._call("render_chat", messages))

    async def engine_metrics(self) -> dict[str, float]:
        try:
            result: dict[str, float] = await self._call("engine_metrics", timeout=HEALTH_TIMEOUT_S)
            return result
        except DeviceError:
            return {}

    async def reconfigure(self, *, slots: int, context_length: int, batch: int | None) -> None:
        if not self.tunable:
            await super().reconfigure(slots=slots, context_length=context_length, batch=batch)
        await self._call("reconfigure", slots, context_length, batch, timeout=600)
        self.slots, self.context_length, self.batch = slots, context_length, batch

    def details(self) -> dict[str, Any]:
        keys = ("node_id", "node_ip", "host", "pid")
        where = {k: self.placed.get(k) for k in keys}
        return {"engine": self.spec.engine, "node": self.placed.get("node_ip"), **where}

    def generate(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        if _ray().util.client.ray.is_connected():  # Ray Client cannot stream: pull
            return self._pulled(snapshot)
        return self._streamed(snapshot)

    async def _pulled(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        """Through Ray Client (ray://): the actor buffers the events, the kernel pulls
        what is ready (waiting up to PULL_WAIT_S for the first) and cancels the rest."""
        sid = await self._call("open", snapshot)
        ended = False
        self.in_flight += 1
        try:
            while not ended:
                events, ended = await self._call("next", sid, PULL_WAIT_S)
                for event in events:
                    yield event
        finally:
            self.in_flight -= 1
            if not ended:
                with contextlib.suppress(DeviceError):
                    await self._call("cancel", sid, timeout=CANCEL_TIMEOUT_S)

    async def _streamed(self, snapshot: Snapshot) -> AsyncGenerator[DeviceEvent, None]:
        if self.actor is None:
            raise DeviceError(f"replica {self.name} is not running")
        ray = _ray()
        stream = self.actor.generate.options(num_returns="streaming").remote(snapshot)
        ended = False
        self.in_flight += 1
        try:
            try:
                async for ref in stream:
                    yield await ref
            except Exception as exc:
                raise _translated(self.name, exc) from None
            ended = True
        finally:
            self.in_flight -= 1
            if not ended:  # closed early (preempted, stopped, cancelled): stop it there
                ray.cancel(stream)
                await _wait_closed(stream)


async def _wait_closed(stream: Any) -> None:
    """Wait until the actor has ended a cancelled stream (its slot is free)."""

    async def drain() -> None:
        async for ref in stream:
            try:
                await ref
            except Exception:
                return

    try:
        async with asyncio.timeout(CANCEL_TIMEOUT_S):
            await drain()
    except Exception:  # the actor died meanwhile, or took too long: nothing runs there now
        log.debug("cancelled stream did not end cleanly", exc_info=True)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _translated(name: str, exc: BaseException) -> Exception:
    """Ray's errors as the kernel's: an engine's own LlmosError (the request's fault)
    comes back as it was raised; everything else is the device's failure."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LlmosError):
        return cause
    if isinstance(exc, LlmosError):
        return exc
    return DeviceError(f"replica {name} failed: {_why(exc)}")
