"""The web dashboard: static files at /ui (index) and /ui/<asset>, shipped in the
package (api/dashboard/). The page holds no data and needs no token; it asks for
one and calls the JSON API with it, so every figure it shows passes the same
access checks as any other client.

Assets are read once into a table keyed by file name: a request can only name a
file in that table, so there is no directory listing and no path to traverse.
They are served with `Cache-Control: no-cache` and an ETag (browsers revalidate
and get a 304 while nothing changed), and with a Content-Security-Policy that
allows nothing from outside the kernel's own origin."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from llmos.errors import NotFound

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

# Scripts and styles from this origin only, fetch() to this origin only, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the package's dashboard folder with a known type, by name."""
    folder = resources.files("llmos.api").joinpath("dashboard")
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in TYPES or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body, TYPES[suffix], etag)
    return assets


def _serve(asset: Asset, request: Request) -> Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",  # revalidate each load: names carry no version
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
    }
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def make_router() -> APIRouter:
    """A router over the assets as they are now (read once, at app creation)."""
    assets = load_assets()
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/")
    async def ui_index(request: Request) -> Response:
        return _serve(assets["index.html"], request)

    @router.get("/{name}")
    async def ui_asset(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound(f"no dashboard asset named {name!r}", param="path")
        return _serve(asset, request)

    return router
