"""`llmos tune`: measure a device's settings (slots, context per slot, batch), move
to better ones, and show the measurements and the decision; `llmos tune history`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from llmos.cli._shared import JsonOption, TokenOption, UrlOption, age, connect, console


def build() -> typer.Typer:
    app = typer.Typer(
        name="tune",
        help="Auto-tune a device's settings by measuring it (admin); `history` lists decisions.",
        invoke_without_command=True,
    )
    app.callback()(run)
    app.command("history")(history)
    return app


def run(
    ctx: typer.Context,
    device: Annotated[
        str | None,
        typer.Option(help="The device to tune. Default: the first tunable.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Measure and report; change nothing.")
    ] = False,
    max_seconds: Annotated[
        float | None,
        typer.Option(help="Time budget of the calibration, 5..600 s (default 60).", min=5, max=600),
    ] = None,
    json_: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Measure the device's throughput and latency at its settings and at neighbouring
    ones (hill-climbing), apply the best if not worse, and record the decision. The
    device takes no new requests meanwhile (they wait; running ones resume after)."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(url, token) as client:
        decision = client.tune(device, dry_run=dry_run, max_seconds=max_seconds)
    if json_:
        typer.echo(json.dumps(decision, indent=2))
        return
    out = console()
    out.print(_trials_table(decision))
    out.print(_decision_line(decision))


def history(
    limit: Annotated[int, typer.Option(help="Most decisions to show.", min=1, max=1000)] = 20,
    device: Annotated[
        str | None, typer.Option(help="Only this device's decisions.", show_default=False)
    ] = None,
    json_: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Recorded tuning decisions, newest first: settings and figures before and after."""
    with connect(url, token) as client:
        rows = client.tune_history(limit, device)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    out = console()
    if not rows:
        out.print("no tuning decisions yet (run `llmos tune`)")
        return
    for r in rows:
        a, b = r["measured_before"], r["measured_after"]
        kept = "[green]kept[/]" if r["kept"] else "[yellow]not kept[/]"
        out.print(
            f"[bold]#{r['id']}[/]  {age(r.get('at'))} ago  {r['device']}  {r['trigger']}  {kept}"
        )
        out.print(
            f"    {_settings(r['before'])} → {_settings(r['after'])}   "
            f"{_num(a.get('tokens_per_s'))} → {_num(b.get('tokens_per_s'))} tok/s   "
            f"p95 {_secs(a.get('p95_s'))} → {_secs(b.get('p95_s'))}"
        )
        out.print(f"    {escape(r['reason'])}")


def _trials_table(decision: dict[str, Any]) -> Table:
    table = Table(
        title=f"tuning {escape(decision['device'])} ({decision['trigger']})",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for name in ("STEP", "SLOTS", "CONTEXT", "BATCH", "TOK/S", "P50", "P95", "TTFT P50", "TIME"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    after = decision["after"]
    for t in decision.get("trials", []):
        c, m = t["config"], t["measure"]
        mark = "before" if t["step"] == 0 else ("chosen" if c == after else "")
        table.add_row(
            str(t["step"]),
            str(c["slots"]),
            str(c["context_length"]),
            _batch(c["batch"]),
            _num(m["tokens_per_s"]),
            _secs(m["p50_s"]),
            _secs(m["p95_s"]),
            _secs(m["ttft_p50_s"]),
            _secs(t["seconds"]),
            mark,
        )
    return table


def _decision_line(d: dict[str, Any]) -> str:
    a, b = d["measured_before"], d["measured_after"]
    ratio = b["tokens_per_s"] / a["tokens_per_s"] if a.get("tokens_per_s") else None
    gain = f" (x{ratio:.2f} throughput)" if ratio else ""
    verdict = "[green]kept[/]" if d["kept"] else "[yellow]not applied[/]"
    return (
        f"{verdict}: {_settings(d['before'])} → {_settings(d['after'])}{gain}\n"
        f"decision #{d['id']}: {escape(d['reason'])}"
    )


def _settings(c: dict[str, Any]) -> str:
    return f"{c['slots']}×{c['context_length']} b={_batch(c['batch'])}"


def _batch(batch: int | None) -> str:
    return "default" if batch is None else str(batch)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
