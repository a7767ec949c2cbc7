"""MCP from the command line, both directions:
- `llmos mcp` serves llmos as an MCP server over stdio (llmos/mcp_server.py);
- `llmos tools add-mcp NAME -- COMMAND ARGS...`, `rm-mcp`, `mcp-ls`, `mcp-restart`
  attach the kernel to MCP servers, whose tools become `mcp.<name>.<tool>`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, cell, connect, console, fail
from llmos.sdk import ApiError, KernelUnreachable

NameArg = Annotated[str, typer.Argument(help="The server's name; its tools are mcp.NAME.*.")]


def register(app: typer.Typer) -> None:
    """Add the MCP-server commands to the `tools` sub-app."""
    app.command("add-mcp")(add_mcp)
    app.command("rm-mcp")(rm_mcp)
    app.command("mcp-ls")(mcp_ls)
    app.command("mcp-restart")(mcp_restart)


def serve(
    url: UrlOption = None,
    token: TokenOption = None,
    no_kernel_tools: Annotated[
        bool,
        typer.Option(
            "--no-kernel-tools", help="Offer only syscalls, not the kernel's tools as well."
        ),
    ] = False,
) -> None:
    """Serve llmos as an MCP server on stdin/stdout, as the given token.

    For MCP clients: e.g. Claude desktop's mcpServers entry
    {"command": "llmos", "args": ["mcp"], "env": {"LLMOS_TOKEN": "..."}}."""
    from llmos.mcp_server import serve as run

    try:
        asyncio.run(run(url, token, kernel_tools=not no_kernel_tools))
    except KernelUnreachable as exc:
        fail(
            f"cannot reach the llmos kernel at {exc.url} ({exc.reason}) — start it with `llmos up`"
        )
    except ApiError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def add_mcp(
    name: NameArg,
    command: Annotated[
        list[str],
        typer.Argument(
            help="The server's command and its arguments, after `--`: -- npx -y some-server",
            metavar="COMMAND",
        ),
    ],
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="KEY=VALUE for the server's environment (repeat)."),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Attach an MCP server (admins): the kernel runs COMMAND and offers its tools."""
    variables: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env takes KEY=VALUE, not {item!r}", EXIT_USAGE)
        variables[key] = value
    with connect(url, token) as client:
        server = client.add_mcp(name, command[0], command[1:], variables)
    tools = server.get("tools") or []
    typer.echo(f"{server['name']}: running, {len(tools)} tools")
    for tool in tools:
        typer.echo(f"  {tool}")


def rm_mcp(name: NameArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Detach an MCP server (admins): stop it and drop its tools."""
    with connect(url, token) as client:
        client.remove_mcp(name)
    typer.echo(f"{name}: removed")


def mcp_restart(name: NameArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Restart an attached MCP server (admins); mcp.json is read afresh."""
    with connect(url, token) as client:
        server = client.restart_mcp(name)
    typer.echo(f"{server['name']}: running, {len(server.get('tools') or [])} tools")


def mcp_ls(url: UrlOption = None, token: TokenOption = None) -> None:
    """List the attached MCP servers and their state."""
    with connect(url, token) as client:
        servers = client.mcp_servers()
    if not servers:
        console().print("no MCP servers attached", markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("NAME", "STATE", "TOOLS", "ORIGIN", "COMMAND"):
        table.add_column(title, no_wrap=title != "COMMAND")
    for s in servers:
        command = " ".join([s.get("command") or "", *(s.get("args") or [])]).strip()
        table.add_row(
            Text(str(s.get("name"))),
            Text(str(s.get("state"))),
            cell(len(s.get("tools") or [])),
            Text(str(s.get("origin"))),
            Text(command or "-"),
        )
    console().print(table)
    for s in servers:
        if s.get("error"):
            console().print(Text(f"{s.get('name')}: {s['error']}"))
