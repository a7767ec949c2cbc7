"""The engines' own figures (KV-cache use, engine counters), read in the background.

Reading them takes a round trip to each engine, while `/metrics` scrapes and the
sampler's samples are synchronous; so a task beside the sampler asks every device
each interval and keeps the newest answer in `last`. A device that stops answering
drops out of `last` (no figure rather than a stale one)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from llmos.devices.base import Device
from llmos.kernel import bgtask

log = logging.getLogger(__name__)


class EngineMonitor:
    def __init__(self, devices: Sequence[Device], interval_s: float) -> None:
        self.devices = devices
        self.interval_s = interval_s
        self.timeout_s = max(1.0, interval_s)  # a slower engine is left out of a reading
        self.last: dict[str, dict[str, float]] = {}  # device name -> its figures
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Ask every device at once; one that fails or is slower than `timeout_s` is
        left out of this reading."""

        async def one(d: Device) -> dict[str, float]:
            async with asyncio.timeout(self.timeout_s):
                return await d.engine_metrics()

        devices = list(self.devices)  # replicas may come and go meanwhile (fleet.py)
        answers = await asyncio.gather(*(one(d) for d in devices), return_exceptions=True)
        for name in set(self.last) - {d.name for d in devices}:
            del self.last[name]
        for d, got in zip(devices, answers, strict=True):
            if isinstance(got, BaseException):
                if not isinstance(got, TimeoutError):
                    log.warning("engine metrics of %s failed: %r", d.name, got)
                self.last.pop(d.name, None)
            elif got:
                self.last[d.name] = dict(got)
            else:
                self.last.pop(d.name, None)

    def kv(self, device: str) -> dict[str, float]:
        """The KV-cache figures of a device, for the sampler's per-device row."""
        m = self.last.get(device, {})
        return {k: m[k] for k in ("kv_cache_usage_ratio", "kv_cache_tokens") if k in m}

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await bgtask.cancel(task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a failed reading must not stop the monitor
                log.exception("engine metrics refresh failed")
            await asyncio.sleep(self.interval_s)
