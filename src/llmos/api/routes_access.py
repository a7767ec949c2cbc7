"""Access-manager routes: users, API tokens, shares, the audit log, whoami.
Each is one syscall; the kernel decides who may."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    role: Literal["admin", "user", "viewer"] = "user"
    groups: list[str] = Field(default_factory=list, max_length=64)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "user", "viewer"] | None = None
    groups: list[str] | None = Field(default=None, max_length=64)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None  # an admin may make tokens for anyone
    name: str | None = Field(default=None, max_length=100)
    expires_in: float | None = Field(default=None, gt=0)  # seconds


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["process", "file", "memory"]
    resource: str | int  # a pid, a path prefix, a memory id or '*'
    principal: str  # user:<name> or group:<name>
    perm: Literal["read", "write"] = "read"
    owner: str | None = None  # an admin may share on anyone's behalf


def _listing(data: Any) -> dict[str, Any]:
    return {"object": "list", "data": data}


@router.get("/auth/whoami")
async def whoami(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("auth.whoami", who)


@router.get("/users")
async def list_users(request: Request, who: Caller = Depends(caller)) -> Any:
    return _listing(await kernel_of(request).call("user.list", who))


@router.post("/users", status_code=201)
async def add_user(body: UserCreate, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("user.add", who, body.model_dump())


@router.patch("/users/{name}")
async def update_user(
    name: str, body: UserUpdate, request: Request, who: Caller = Depends(caller)
) -> Any:
    args = {"name": name, **body.model_dump(exclude_none=True)}
    return await kernel_of(request).call("user.update", who, args)


@router.delete("/users/{name}")
async def remove_user(name: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("user.rm", who, {"name": name})


@router.get("/tokens")
async def list_tokens(
    request: Request, user: str | None = None, who: Caller = Depends(caller)
) -> Any:
    args = {} if user is None else {"user": user}
    return _listing(await kernel_of(request).call("token.list", who, args))


@router.post("/tokens", status_code=201)
async def create_token(body: TokenCreate, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("token.create", who, body.model_dump(exclude_none=True))


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("token.revoke", who, {"id": token_id})


@router.get("/shares")
async def list_shares(request: Request, who: Caller = Depends(caller)) -> Any:
    return _listing(await kernel_of(request).call("share.list", who))


@router.post("/shares", status_code=201)
async def add_share(body: ShareCreate, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("share.add", who, body.model_dump(exclude_none=True))


@router.delete("/shares/{share_id}")
async def remove_share(share_id: int, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("share.rm", who, {"id": share_id})


@router.get("/audit")
async def list_audit(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1),
    actor: str | None = None,
    outcome: Literal["allowed", "denied", "failed"] | None = None,
    who: Caller = Depends(caller),
) -> Any:
    args = {"limit": limit, "before": before, "actor": actor, "outcome": outcome}
    data = await kernel_of(request).call(
        "audit.list", who, {k: v for k, v in args.items() if v is not None}
    )
    return _listing(data)


@router.get("/audit/verify")
async def verify_audit(request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("audit.verify", who)
