"""`llmos up`: build devices and kernel from settings, serve the API with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from llmos.api.app import create_app
from llmos.kernel import Kernel, boot
from llmos.kernel.backup import HomeLock
from llmos.params import Settings

# Idle keep-alive seconds: longer than clients' own idle expiry (httpx: 5 s), so a
# client never reuses a connection the server is closing that moment (a ReadError).
KEEP_ALIVE_S = 75


def _announce(kernel: Kernel, settings: Settings) -> None:
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    print(f"llmos kernel ready at {url}  (models: {', '.join(kernel.models())})", flush=True)
    print(f"dashboard: {url}/ui/", flush=True)
    if kernel.admin_token:
        print(f"admin token (shown once, saved to {kernel.admin_token_path}):", flush=True)
        print(f"  {kernel.admin_token}", flush=True)
    elif settings.admin_token:
        print("admin token: the value of LLMOS_TOKEN", flush=True)
    elif kernel.admin_token_path.is_file():
        token = kernel.admin_token_path.read_text().strip()
        print(f"admin token (from {kernel.admin_token_path}):\n  {token}", flush=True)
    else:
        print("admin token: created earlier; its file was removed", flush=True)
    print(
        f'try: curl -H "Authorization: Bearer $TOKEN" {url}/v1/chat/completions '
        f'-d \'{{"model":"{kernel.models()[0]}","messages":[{{"role":"user","content":"Hi"}}]}}\'',
        flush=True,
    )


def serve(settings: Settings) -> None:
    """Blocking. Raises LlmosError for bad settings (the CLI prints it)."""
    settings.validate()
    settings.home.mkdir(parents=True, exist_ok=True)
    # held while serving: `llmos restore` refuses this home; one kernel per home
    HomeLock(settings.home)  # released when this process ends
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # engine calls are not news
    kernel = Kernel(settings, *boot.build(settings))
    app = create_app(kernel)
    app.state.on_ready.append(lambda: _announce(kernel, settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        # Headers up to 4x the limit reach HeaderGuard (431 JSON); beyond, h11 says 400.
        h11_max_incomplete_event_size=4 * settings.max_header_bytes,
        # HTTPS when both are set (Settings.validate: both or neither); else plain HTTP.
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(1)
