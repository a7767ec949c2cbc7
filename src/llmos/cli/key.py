"""`llmos key` and `llmos telemetry`: encryption at rest (the active data key, rows
left to re-encrypt, rotation) and the differentially private telemetry export."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console, fail
from llmos.params import MAX_EPSILON, MAX_EXPORT_HOURS

JsonOption = Annotated[bool, typer.Option("--json", help="Print the kernel's answer as JSON.")]


def build_key() -> typer.Typer:
    app = typer.Typer(
        name="key",
        help="Encryption at rest: data keys and their rotation (admins).",
        no_args_is_help=True,
    )
    app.command("status")(status)
    app.command("rotate")(rotate)
    return app


def build_telemetry() -> typer.Typer:
    app = typer.Typer(
        name="telemetry",
        help="Telemetry, aggregated with differential privacy (admins and viewers).",
        no_args_is_help=True,
    )
    app.command("export")(export)
    return app


def status(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Show the active data key, every key's state and the rows left to re-encrypt."""
    with connect(url, token) as client:
        info = client.key_status()
    _show(info, as_json)


def rotate(
    wait: Annotated[
        bool, typer.Option("--wait", help="Return once every row is under the new key.")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Make a new data key active now; rows are re-encrypted in the background."""
    with connect(url, token) as client:
        info = client.key_rotate()
        while wait and (info.get("running") or info.get("rows_left")):
            if info.get("error"):
                break
            time.sleep(0.2)
            info = client.key_status()
    if not as_json:
        typer.echo(f"data key {info.get('active_key')} is active")
    _show(info, as_json)
    if info.get("error"):
        fail(f"re-encryption stopped: {info['error']}")


def export(
    epsilon: Annotated[
        float,
        typer.Option(
            help=f"Privacy budget the export spends (0 < epsilon <= {MAX_EPSILON:g}; smaller is"
            " more private and noisier)."
        ),
    ],
    hours: Annotated[
        int, typer.Option(min=1, max=MAX_EXPORT_HOURS, help="Past hours to cover.")
    ] = 24,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Per-app, per-hour request counts, token sums and latency histograms, with
    Laplace noise for epsilon-differential privacy (one request is the unit)."""
    with connect(url, token) as client:
        out = client.telemetry_export(epsilon, hours)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    stats = out.get("statistics", {})
    console().print(
        Text(
            f"epsilon {out.get('epsilon')} ({out.get('mechanism')}),"
            f" unit: {out.get('privacy_unit')};"
            f" noise scale: requests {_g(stats, 'requests')}, prompt tokens"
            f" {_g(stats, 'prompt_tokens')}, output tokens {_g(stats, 'output_tokens')}"
        )
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("APP", "HOUR (UTC)", "REQUESTS", "PROMPT TOK", "OUTPUT TOK"):
        table.add_column(title, justify="left" if title in ("APP", "HOUR (UTC)") else "right")
    for row in out.get("data", []):
        table.add_row(
            Text(str(row.get("app"))),
            str(row.get("hour")),
            f"{row.get('requests', 0):.1f}",
            f"{row.get('prompt_tokens', 0):.0f}",
            f"{row.get('output_tokens', 0):.0f}",
        )
    console().print(table)


def _g(stats: dict[str, Any], name: str) -> str:
    return f"{stats.get(name, {}).get('scale', 0):g}"


def _show(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    out = console()
    out.print(
        Text(
            f"{info.get('algorithm')}, master key from {info.get('master_key')};"
            f" active data key {info.get('active_key')};"
            f" rows left to re-encrypt: {info.get('rows_left')}"
            + ("  (re-encrypting)" if info.get("running") else "")
        ),
        soft_wrap=True,  # one line, whatever the terminal width: scripts grep it
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("KEY", "STATE", "CREATED", "RETIRED"):
        table.add_column(title, justify="right" if title == "KEY" else "left")
    for key in info.get("keys", []):
        table.add_row(
            cell(key.get("id")),
            str(key.get("state")),
            age(key.get("created_at")) + " ago",
            (age(key.get("retired_at")) + " ago") if key.get("retired_at") else "-",
        )
    out.print(table)
