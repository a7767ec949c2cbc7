"""What the kernel reports about itself: system info, devices, the scheduler's
state, and the telemetry row of a finished request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmos.kernel.request import Request
from llmos.params import POLICY_NAMES

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel


def sched_info(k: Kernel) -> dict[str, Any]:
    s = k.scheduler
    c = k.sched_config
    return {
        "policy": s.policy_name,
        "policies": list(POLICY_NAMES),
        "quantum": c.quantum,
        "aging_s": c.aging_s,
        "mlfq_levels": c.mlfq_levels,
        "mlfq_boost_s": c.mlfq_boost_s,
        "weights": dict(c.fair_weights),
        "preemptions": s.stats.preemptions,
        "resumes": s.stats.resumes,
        "resume_cache_hit": s.stats.cache_hit,
        "decision_us": (s.decision_ns / s.decisions / 1000) if s.decisions else None,
        "predictor": k.predictor.summary(),  # learn.stats has the figures
        "max_queue": k.admission.max_queue,
        "max_queue_per_owner": k.admission.max_queue_per_owner,
        "waiting": k.admission.waiting,
    }


def info(k: Kernel) -> dict[str, Any]:
    procs = k.procs.list()
    return {
        "version": version(),
        "uptime_s": round(time.time() - k.started_at, 3),
        "policy": k.scheduler.policy_name,
        "models": k.models(),
        "devices": len(k.devices),
        "slots": sum(d.slots for d in k.devices),
        "processes": len(procs),
        "processes_alive": sum(p.state.alive for p in procs),
        "requests_running": k.scheduler.num_running(),
        "requests_waiting": k.scheduler.num_waiting(),
        "home": str(k.settings.home),
    }


async def device_infos(k: Kernel) -> list[dict[str, Any]]:
    out = []
    for d in k.devices:
        info = await d.info()
        out.append(
            {
                **info.__dict__,
                "running": len(k.scheduler.running[d.name]),
                "peak_running": k.scheduler.peak_running[d.name],
                "dispatched": k.scheduler.dispatched[d.name],
                "waiting": len(k.scheduler.queue(k.scheduler.routes[d.name])),
                **k.scheduler.breakers[d.name].info(),
                "group": g.name if (g := k.fleet.group_of(d.name)) else None,  # fleet.py
                "draining": d.name in k.scheduler.draining,
            }
        )
    return out


def telemetry_row(req: Request) -> dict[str, Any]:
    end = req.finished_at or time.monotonic()
    return {
        "request_id": req.id,
        "owner": req.owner,
        "pid": req.pid,
        "model": req.model,
        "device": req.device,
        "kind": req.kind,
        "priority": req.priority,
        "prompt_tokens": req.prompt_tokens,
        "output_tokens": req.output_tokens,
        "cached_tokens": req.cached_tokens,
        "max_tokens": req.snapshot.params.max_tokens,
        "queue_wait_s": (req.started_at - req.created_at) if req.started_at else None,
        "ttft_s": (req.first_token_at - req.created_at) if req.first_token_at else None,
        "total_s": end - req.created_at,
        "finish_reason": req.finish_reason or "unknown",
        "created_at": req.created_wall,
        "preemptions": req.preemptions,
        "session": req.session,
        "app": req.app,
        "itl_s": req.itl_s,
    }


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmos")
    except PackageNotFoundError:
        return "0+unknown"
