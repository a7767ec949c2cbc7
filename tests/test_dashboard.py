"""The dashboard's static side, without a browser: /ui serves the page and its
assets from the package with the right types and cache headers, refuses anything
else (unknown names, directories, traversal), and no asset reaches outside the
kernel's origin or builds HTML from strings. The browser test is
test_dashboard_browser.py."""

from __future__ import annotations

import fnmatch
import re
import socket
import tomllib
from pathlib import Path

import pytest

from llmos.api import routes_ui
from tests._live_server import LiveServer
from tests.conftest import MockKernel

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "src" / "llmos" / "api" / "dashboard"
ASSETS = sorted(p.name for p in FOLDER.iterdir() if p.is_file())
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# XML namespace names are identifiers, never fetched; nothing else may be absolute.
NAMESPACES = {"http://www.w3.org/2000/svg"}


async def test_ui_serves_the_page_without_a_token(mock: MockKernel) -> None:
    c = mock.client
    r = await c.get("/ui", headers={"Authorization": ""}, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    r = await c.get("/ui/", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js"></script>' in r.text
    assert 'id="token"' in r.text and 'id="login"' in r.text
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp


@pytest.mark.parametrize("name", ASSETS)
async def test_every_asset_is_served_with_its_type_and_an_etag(mock: MockKernel, name: str) -> None:
    r = await mock.client.get(f"/ui/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == TYPES[Path(name).suffix]
    assert r.content == (FOLDER / name).read_bytes()
    etag = r.headers["etag"]
    again = await mock.client.get(f"/ui/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = await mock.client.get(f"/ui/{name}", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.content == r.content


def test_the_package_ships_every_asset() -> None:
    """Every file of the folder is served (a known type) and is package data."""
    assert set(routes_ui.load_assets()) == set(ASSETS)
    assert {"index.html", "app.js", "style.css"} <= set(ASSETS)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["llmos.api"]
    for name in ASSETS:
        assert any(fnmatch.fnmatch(f"dashboard/{name}", p) for p in patterns), name


def test_every_reference_between_assets_resolves() -> None:
    """index.html's links and the modules' imports all name shipped assets."""
    html = (FOLDER / "index.html").read_text()
    refs = set(re.findall(r'(?:src|href)="([^"#]+)"', html))
    assert {"app.js", "style.css", "icon.svg"} <= refs
    for js in FOLDER.glob("*.js"):
        refs |= {m.removeprefix("./") for m in re.findall(r'from "([^"]+)"', js.read_text())}
    assert refs <= set(ASSETS), refs - set(ASSETS)


@pytest.mark.parametrize("name", ASSETS)
def test_no_asset_reaches_outside_the_origin(name: str) -> None:
    text = (FOLDER / name).read_text()
    urls = set(re.findall(r"https?://[^\s\"'`)<>]+", text))
    assert urls <= NAMESPACES, urls - NAMESPACES
    assert not re.search(r"""(?:src|href)\s*=\s*["']//""", text)  # protocol-relative
    assert not re.search(r"@import|url\(\s*['\"]?(?!data:)", text)  # CSS fetches
    assert "fonts.googleapis" not in text and "cdn" not in text.lower()


@pytest.mark.parametrize("name", [n for n in ASSETS if n.endswith(".js")])
def test_scripts_never_parse_strings_as_html(name: str) -> None:
    """API data reaches the page as text nodes only (dom.js's h()/fill())."""
    text = (FOLDER / name).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in text, f"{name} uses {sink}"
    assert "new Function" not in text


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/routes_ui.py",
        "/ui/dashboard",
        "/ui/%2e%2e%2froutes_ui.py",
        "/ui/..%2Fapp.py",
        "/ui/%2E%2E/%2E%2E/pyproject.toml",
        "/ui/..%5croutes_ui.py",
        "/ui/style.css%00.py",
        "/ui/.hidden",
        "/ui/sub/app.js",
    ],
)
async def test_unknown_names_and_traversal_are_404(mock: MockKernel, path: str) -> None:
    r = await mock.client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert "from __future__" not in r.text and "[project]" not in r.text


def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """One GET with the request target sent exactly as given (clients normalise
    `..` away; an attacker's raw socket does not)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/ui/../routes_ui.py",
        "/ui/../../pyproject.toml",
        "/ui/./../app.py",
        "/ui/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/ui//etc/passwd",
    ],
)
def test_traversal_over_the_wire_is_refused(server: LiveServer, target: str) -> None:
    status, body = _raw_get(server.url, target)
    assert status in (400, 404)
    assert b"from __future__" not in body and b"root:" not in body and b"[project]" not in body


def test_the_wire_serves_the_real_page(server: LiveServer) -> None:
    status, body = _raw_get(server.url, "/ui/")
    assert status == 200 and b'id="login-form"' in body
