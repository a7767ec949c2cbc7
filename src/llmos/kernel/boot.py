"""Devices from settings: an embedded llama.cpp (default model unless told; with
`mmproj` it has vision), an OpenAI-compatible server, or the mock engine (`llmos up
--device mock`); the last two with the capabilities `device_capabilities` says.
Or, with `--ray-address` and `--cluster FILE`, replica groups of devices placed as
Ray actors (devices/ray_device.py), which the fleet grows and shrinks."""

from __future__ import annotations

from collections.abc import Callable

from llmos.devices import cluster_spec
from llmos.devices.base import Device
from llmos.devices.catalog import default_model_path
from llmos.devices.llamacpp import LlamaCppDevice
from llmos.devices.mock import MockDevice
from llmos.devices.openai_http import OpenAIHttpDevice
from llmos.errors import InvalidRequest
from llmos.kernel.fleet import Group, ScalePolicy
from llmos.params import DEFAULT_MODEL_NAME, Settings


def build(settings: Settings) -> tuple[list[Device], list[Group]]:
    """The kernel's devices at start, and its replica groups (none off a cluster)."""
    if settings.ray_address is None and settings.cluster_file is None:
        return build_devices(settings), []
    if settings.ray_address is None or settings.cluster_file is None:
        missing = "ray_address" if settings.ray_address is None else "cluster"
        raise InvalidRequest("a cluster needs both --ray-address and --cluster FILE", param=missing)
    from llmos.devices.ray_device import RayDevice, connect

    spec = cluster_spec.load(settings.cluster_file)
    connect(settings.ray_address, settings.ray_node_ip)
    groups = [group_of(d, RayDevice) for d in spec.devices]
    devices = [d for g in groups for d in g.members]
    if not devices:
        raise InvalidRequest("the cluster file starts no replica (every min is 0)", param="cluster")
    return devices, groups


def group_of(spec: cluster_spec.DeviceSpec, kind: Callable[..., Device]) -> Group:
    """A replica group of a spec: `min` replicas now, up to `max` (autoscale.py)."""
    a = spec.autoscale
    policy = ScalePolicy(
        min=spec.replicas.min,
        max=spec.max_replicas,
        queue_per_slot=a.queue_per_slot,
        ttft_p95_s=a.ttft_p95_s,
        idle_s=a.idle_s,
        cooldown_s=a.cooldown_s,
        start_timeout_s=a.start_timeout_s,
        dead_after_s=a.dead_after_s,
    )
    members = [kind(spec, f"{spec.name}-{i}") for i in range(spec.replicas.min)]
    return Group(spec.name, policy, lambda name: kind(spec, name), members)


def build_devices(settings: Settings) -> list[Device]:
    caps = settings.device_capabilities or ("text",)
    if settings.mock_device:
        model = settings.model_name or "mock"
        return [
            MockDevice(
                model=model, slots=settings.slots, context_length=settings.ctx, capabilities=caps
            )
        ]
    if settings.device_url:
        return [
            OpenAIHttpDevice(
                settings.device_url,
                api_key=settings.device_api_key,
                model=settings.model_name,
                slots=settings.slots,
                ctx=settings.ctx,
                capabilities=caps,
            )
        ]
    path = settings.model_path or default_model_path()
    name = settings.model_name or (DEFAULT_MODEL_NAME if settings.model_path is None else None)
    return [
        LlamaCppDevice(
            path,
            slots=settings.slots,
            ctx=settings.ctx,
            threads=settings.threads,
            model=name,
            mmproj=settings.mmproj,
        )
    ]
