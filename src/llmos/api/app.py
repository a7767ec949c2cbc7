"""The FastAPI app factory: HTTP in, syscalls out. No module-level state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmos.api import (
    errors,
    limits,
    openapi,
    routes_access,
    routes_agents,
    routes_alerts,
    routes_apps,
    routes_ask,
    routes_audio,
    routes_backup,
    routes_batches,
    routes_cluster,
    routes_files,
    routes_jobs,
    routes_key,
    routes_learn,
    routes_llm,
    routes_mcp,
    routes_memory,
    routes_procs,
    routes_syscalls,
    routes_telemetry,
    routes_tools,
    routes_tune,
    routes_ui,
)
from llmos.api.auth import caller
from llmos.api.metrics import Metrics
from llmos.errors import Forbidden
from llmos.kernel import Caller, Kernel


def create_app(kernel: Kernel, *, manage_kernel: bool = True) -> FastAPI:
    """`manage_kernel`: start the kernel (load models) and stop it with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_kernel:
            await kernel.start()
        for hook in app.state.on_ready:
            hook()
        try:
            yield
        finally:
            if manage_kernel:
                await kernel.stop()

    app = FastAPI(title="llmos", version="0.1.0", lifespan=lifespan)
    app.state.kernel = kernel
    app.state.metrics = Metrics(kernel)
    app.state.on_ready = []
    errors.install(app)
    app.add_middleware(errors.BodyGuard, limit=kernel.settings.max_body_bytes)
    limits.install(app, kernel.settings)  # header size (431), slow readers
    openapi.install(app)  # the schema declares the real error responses
    app.include_router(routes_llm.router)
    app.include_router(routes_procs.router)
    app.include_router(routes_memory.router)
    app.include_router(routes_batches.router)  # OpenAI files + batches: before the store's
    app.include_router(routes_files.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_access.router)
    app.include_router(routes_syscalls.router)
    app.include_router(routes_key.router)
    app.include_router(routes_telemetry.router)
    app.include_router(routes_learn.router)  # /v1/learn: the predictor's stats, retraining
    app.include_router(routes_alerts.router)  # /v1/alerts: anomaly alerts
    app.include_router(routes_backup.router)  # /v1/backups: snapshots, the standby's stream
    app.include_router(routes_ask.router)  # /v1/ask: questions about the system
    app.include_router(routes_tune.router)  # /v1/tune: device auto-tuning
    app.include_router(routes_cluster.router)  # /v1/cluster: replica groups, scaling
    app.include_router(routes_tools.router)  # /v1/tools
    app.include_router(routes_agents.router)  # /v1/processes/exec, logs, signal, wait
    app.include_router(routes_apps.router)  # /serving: apps
    app.include_router(routes_mcp.router)
    app.include_router(routes_audio.router)  # /v1/audio/*, /v1/images/ocr: perception
    app.include_router(routes_ui.make_router())  # /ui: the web dashboard (static)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        devices = [await d.health() for d in kernel.devices]
        return {"status": "ok" if all(devices) else "degraded", "devices": len(devices)}

    @app.get("/metrics", response_class=PlainTextResponse)  # Prometheus text format
    async def metrics(request: Request, who: Caller = Depends(caller)) -> Response:
        if who.role not in ("admin", "viewer"):  # it names every owner and their usage
            raise Forbidden("/metrics is for admins and viewers", param="authorization")
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
