"""Bearer-token authentication as a FastAPI dependency."""

from __future__ import annotations

from fastapi import Query, Request

from llmos.errors import Unauthorized
from llmos.kernel import Caller, Kernel


def kernel_of(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


def caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return kernel_of(request).authenticate(token.strip())


Owner = dict[str, str]


def namespace(
    owner: str | None = Query(
        None, description="another user's namespace, when they shared it with you"
    ),
) -> Owner:
    """The optional `owner` query parameter of file and memory routes."""
    return {} if owner is None else {"owner": owner}
