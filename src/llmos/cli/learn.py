"""`llmos learn`: the learned predictor — its held-out error against the naive
baseline (`stats`), and retraining on demand (`train`, admins)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console

JsonOption = Annotated[bool, typer.Option("--json", help="Print the kernel's answer as JSON.")]


def build() -> typer.Typer:
    app = typer.Typer(
        name="learn",
        help="The predictor the kernel learns from its telemetry (output tokens, slot time).",
        no_args_is_help=True,
    )
    app.command("stats")(stats)
    app.command("train")(train)
    return app


def stats(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Held-out mean absolute error of each model against the mean per app."""
    with connect(url, token) as client:
        info = client.learn_stats()
    show(info, as_json)


def train(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Retrain and evaluate the predictor now (admins), then show its figures."""
    with connect(url, token) as client:
        info = client.learn_train()
    show(info, as_json)


def show(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    out = console()
    trained = info.get("trained_at")
    when = f"trained {age(trained)} ago" if trained else "never trained"
    source = " (loaded from the database)" if info.get("loaded") else ""
    out.print(f"model: {info.get('model', 'none')}, {when}{source}, on {info.get('rows', 0)} rows")
    if info.get("note"):
        out.print(f"[yellow]{info['note']}[/]")
    targets = info.get("targets") or []
    if targets:
        holdout = float(info.get("holdout") or 0.2)
        out.print(
            f"held out: the newest {holdout:.0%} of the rows; "
            "baseline: the mean per app of the rest",
            style="dim",
        )
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("TARGET", no_wrap=True)
        table.add_column("HELD OUT", justify="right", no_wrap=True)
        table.add_column("MAE MODEL", justify="right", no_wrap=True)
        table.add_column("MAE BASELINE", justify="right", no_wrap=True)
        table.add_column("IMPROVEMENT", justify="right", no_wrap=True)
        for t in targets:
            unit = t.get("unit", "")
            pct = t.get("improvement_pct")
            style = "green" if pct is not None and pct > 0 else "red"
            table.add_row(
                cell(t.get("target")),
                cell(t.get("heldout")),
                _value(t.get("mae_model"), unit),
                _value(t.get("mae_baseline"), unit),
                "-" if pct is None else f"[{style}]{pct:+.1f}%[/]",
            )
        out.print(table)
    features = info.get("features") or []
    if features:
        out.print(f"features: {', '.join(features)}", style="dim")
    if info.get("training"):
        out.print("a training is under way", style="dim")
    if info.get("last_error"):
        out.print(f"last training failed: {info['last_error']}", style="dim")
    interval = info.get("interval_s")
    if interval:
        out.print(
            f"retrains every {info.get('retrain_every')} finished requests and every "
            f"{_duration(float(interval))} with new rows ({info.get('new_rows', 0)} new now)",
            style="dim",
        )


def _value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    return f"{float(v):.3f} s" if unit == "s" else f"{float(v):.1f} {unit}"


def _duration(seconds: float) -> str:
    return age(time.time() - seconds)
