"""Where the kernel is and who we are: explicit argument, else environment, else the
defaults `llmos up` uses. The SDK's limits live here too."""

from __future__ import annotations

import os

import httpx

from llmos.params import DEFAULT_HOST, DEFAULT_PORT, default_home
from llmos.sdk._errors import ApiError

URL_ENV = "LLMOS_URL"
TOKEN_ENV = "LLMOS_TOKEN"
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
ADMIN_TOKEN_FILE = "admin-token"  # written by the kernel on first start, mode 0600

# Generation can queue behind other processes and then run for minutes, so reads
# wait long; failing to connect at all should be reported quickly.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def resolve_url(url: str | None) -> str:
    """The kernel's base URL, without a trailing slash."""
    url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ApiError(
            400,
            f"kernel URL must start with http:// or https://, got {url!r}",
            param="url",
            code="invalid_value",
        )
    return url


def resolve_token(token: str | None) -> str | None:
    """A bearer token: the argument, else $LLMOS_TOKEN, else the admin token file in
    $LLMOS_HOME (default ~/.llmos) if readable, else None (requests go out unauthenticated)."""
    if token:
        return token
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env
    try:
        text = (default_home() / ADMIN_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def resolve_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """A number is the read timeout; connecting never waits longer than the default."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, DEFAULT_TIMEOUT.connect or timeout))
