"""`llmos tools`: the kernel's tools — list them, call one.

    llmos tools ls
    llmos tools call calculator --arg expression='2**10'
    llmos tools call python --json '{"code": "print(6 * 7)", "timeout_s": 5}'

`--arg KEY=VALUE` values are read as the tool's schema types them (a number for a
"number" parameter, JSON for an object or array, text for a string); `--json` gives
the whole arguments object, and `--arg`s override its keys."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli import mcp
from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, connect, console, fail


def build() -> typer.Typer:
    app = typer.Typer(
        name="tools",
        help="The kernel's tools: built-ins (calculator, time, memory, files, python) and MCP.",
        no_args_is_help=True,
    )
    app.command("ls")(ls)
    app.command("call")(call)
    mcp.register(app)  # add-mcp, rm-mcp, mcp-ls, mcp-restart (cli/mcp.py)
    return app


def ls(url: UrlOption = None, token: TokenOption = None) -> None:
    """List the tools and their parameters (? marks an optional one)."""
    with connect(url, token) as client:
        tools = client.tools()
    if not tools:
        console().print("no tools")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("NAME", "PARAMETERS", "SOURCE", "DESCRIPTION"):
        table.add_column(name, overflow="fold")
    for tool in tools:
        table.add_row(
            Text(str(tool.get("name"))),
            Text(_signature(tool.get("parameters") or {})),
            Text(str(tool.get("source", "-"))),
            Text(str(tool.get("description", ""))),
        )
    console().print(table)


def call(
    name: Annotated[str, typer.Argument(help="The tool's name (see `llmos tools ls`).")],
    arg: Annotated[
        list[str] | None,
        typer.Option("--arg", "-a", help="An argument KEY=VALUE; repeat for more."),
    ] = None,
    json_args: Annotated[
        str | None,
        typer.Option("--json", help="All arguments as one JSON object.", show_default=False),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Call a tool and print its result as JSON."""
    arguments = _json_object(json_args) if json_args is not None else {}
    pairs = [_pair(a) for a in arg or []]
    with connect(url, token) as client:
        if pairs:
            spec = next((t for t in client.tools() if t.get("name") == name), None)
            properties = ((spec or {}).get("parameters") or {}).get("properties") or {}
            for key, text in pairs:
                arguments[key] = _coerce(key, text, properties.get(key) or {})
        result = client.call_tool(name, **arguments)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


def _signature(schema: dict[str, Any]) -> str:
    required = set(schema.get("required") or [])
    props = schema.get("properties") or {}
    parts = [
        f"{key}{'' if key in required else '?'}: {prop.get('type', 'any')}"
        for key, prop in props.items()
    ]
    return ", ".join(parts) or "-"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--json is not valid JSON: {exc.msg}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail('--json must be a JSON object, e.g. \'{"expression": "1+1"}\'', EXIT_USAGE)
    return value


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        fail(f"--arg {text!r}: write KEY=VALUE", EXIT_USAGE)
    return key, value


def _coerce(key: str, text: str, prop: dict[str, Any]) -> Any:
    """VALUE as the parameter's schema types it; text when it says string or nothing."""
    kind = prop.get("type")
    if kind in (None, "string"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        fail(f"--arg {key}: {text!r} is not a {kind}", EXIT_USAGE)
    return value
