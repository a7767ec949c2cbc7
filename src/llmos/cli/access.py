"""`llmos user`, `llmos token`, `llmos share`, `llmos audit`: the access manager
from the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console, fail

RoleOption = Annotated[
    str, typer.Option("--role", help="admin, user or read-only viewer.", show_default=True)
]
GroupOption = Annotated[
    list[str] | None, typer.Option("--group", "-g", help="A group to join (repeatable).")
]


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold")
    for name in columns:
        table.add_column(name)
    return table


def _sub(name: str, help_text: str) -> typer.Typer:
    return typer.Typer(name=name, help=help_text, no_args_is_help=True)


# -- users --------------------------------------------------------------------------
def build_user() -> typer.Typer:
    app = _sub("user", "Users, their roles and groups (admin).")
    app.command("add")(user_add)
    app.command("rm")(user_rm)
    app.command("ls")(user_ls)
    return app


def user_add(
    name: Annotated[str, typer.Argument(help="Lowercase name, e.g. alice.")],
    role: RoleOption = "user",
    group: GroupOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add a user; prints their first token (shown only now)."""
    with connect(url, token) as client:
        user = client.add_user(name, role, group or [])
    console().print(f"user {user['name']} ({user['role']}) added; token:", markup=False)
    typer.echo(user["token"])


def user_rm(
    name: Annotated[str, typer.Argument(help="The user to remove.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Remove a user: their tokens stop working, their processes are killed."""
    with connect(url, token) as client:
        client.remove_user(name)
    console().print(f"user {name} removed", markup=False)


def user_ls(url: UrlOption = None, token: TokenOption = None) -> None:
    """List users."""
    with connect(url, token) as client:
        users = client.users()
    table = _table("NAME", "ROLE", "GROUPS", "CREATED")
    for u in users:
        table.add_row(Text(u["name"]), u["role"], Text(",".join(u["groups"])), age(u["created_at"]))
    console().print(table)


# -- tokens -------------------------------------------------------------------------
def build_token() -> typer.Typer:
    app = _sub("token", "Your API tokens (an admin: anyone's).")
    app.command("create")(token_create)
    app.command("revoke")(token_revoke)
    app.command("ls")(token_ls)
    return app


def token_create(
    user: Annotated[str | None, typer.Option("--user", help="For another user (admin).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label.")] = None,
    expires: Annotated[
        float | None, typer.Option("--expires", help="Seconds until it stops working.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a token; prints it (shown only now)."""
    if expires is not None and expires <= 0:
        fail("--expires must be a positive number of seconds", 2)
    with connect(url, token) as client:
        made = client.create_token(user, name, expires)
    console().print(f"token {made['id']} for {made['owner']}:", markup=False)
    typer.echo(made["token"])


def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `llmos token ls`).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token."""
    with connect(url, token) as client:
        client.revoke_token(token_id)
    console().print(f"token {token_id} revoked", markup=False)


def token_ls(
    user: Annotated[str | None, typer.Option("--user", help="Another user's (admin).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List tokens (never their secrets)."""
    with connect(url, token) as client:
        tokens = client.tokens(user)
    table = _table("ID", "OWNER", "ROLE", "PID", "NAME", "CREATED", "EXPIRES", "REVOKED")
    for t in tokens:
        table.add_row(
            t["id"],
            Text(t["owner"]),
            t["role"],
            cell(t["pid"]),
            Text(t["name"] or ""),
            age(t["created_at"]),
            cell(t["expires_at"] and round(t["expires_at"])),
            "yes" if t["revoked"] else "",
        )
    console().print(table)


# -- shares -------------------------------------------------------------------------
def build_share() -> typer.Typer:
    app = _sub("share", "Share processes, files or memories with users or groups.")
    app.command("add")(share_add)
    app.command("rm")(share_rm)
    app.command("ls")(share_ls)
    return app


def share_add(
    kind: Annotated[str, typer.Argument(help="process, file or memory.")],
    resource: Annotated[str, typer.Argument(help="A pid, a path prefix, a memory id or '*'.")],
    principal: Annotated[str, typer.Option("--with", help="user:NAME or group:NAME.")],
    perm: Annotated[str, typer.Option("--perm", help="read or write.")] = "read",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Share something of yours."""
    value: str | int = int(resource) if resource.isdigit() else resource
    with connect(url, token) as client:
        share = client.share(kind, value, principal, perm)
    console().print(
        f"share {share['id']}: {kind} {resource} -> {principal} ({share['perm']})", markup=False
    )


def share_rm(
    share_id: Annotated[int, typer.Argument(help="The share's id.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Withdraw a share."""
    with connect(url, token) as client:
        client.unshare(share_id)
    console().print(f"share {share_id} removed", markup=False)


def share_ls(url: UrlOption = None, token: TokenOption = None) -> None:
    """Shares you made or were given."""
    with connect(url, token) as client:
        shares = client.shares()
    table = _table("ID", "KIND", "OWNER", "RESOURCE", "WITH", "PERM")
    for s in shares:
        table.add_row(
            str(s["id"]),
            s["kind"],
            Text(s["owner"]),
            Text(s["resource"]),
            Text(s["principal"]),
            s["perm"],
        )
    console().print(table)


# -- audit --------------------------------------------------------------------------
def build_audit() -> typer.Typer:
    app = _sub("audit", "The hash-chained audit log (admin, viewer).")
    app.command("ls")(audit_ls)
    app.command("verify")(audit_verify)
    return app


def audit_ls(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    denied: Annotated[bool, typer.Option("--denied", help="Only denials.")] = False,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this user.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The newest audit rows."""
    with connect(url, token) as client:
        rows = client.audit(limit, actor=actor, outcome="denied" if denied else None)
    table = _table("SEQ", "AGE", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME", "REASON")
    for r in rows:
        table.add_row(
            str(r["seq"]),
            age(r["ts"]),
            Text(r["actor"]),
            r["role"],
            r["action"],
            Text(_target(r["target"])),
            r["outcome"],
            Text(r["reason"]),
        )
    console().print(table)


def _target(target: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in target.items())


def audit_verify(url: UrlOption = None, token: TokenOption = None) -> None:
    """Check the hash chain; exits 1 naming the first bad row."""
    with connect(url, token) as client:
        result = client.audit_verify()
    if not result["ok"]:
        fail(f"audit log tampered: {result['reason']}")
    console().print(f"audit log intact: {result['rows']} rows", markup=False)
