"""`llmos batch`: OpenAI-compatible batches — submit a JSONL file (and watch it with a
live progress bar), list, show, cancel, and fetch the results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console, fail
from llmos.params import MAX_JOB_LIST
from llmos.sdk import Client

IdArg = Annotated[str, typer.Argument(help="The batch's id (batch_…).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the batch as JSON.")]
OVER = ("completed", "failed", "expired", "cancelled")
POLL_S = 0.5


def build() -> typer.Typer:
    app = typer.Typer(
        name="batch",
        help="OpenAI-compatible batches: a JSONL file of requests, run at low priority.",
        no_args_is_help=True,
    )
    app.command("submit")(submit)
    app.command("ls")(ls)
    app.command("get")(get)
    app.command("cancel")(cancel)
    app.command("results")(results)
    return app


def submit(
    file: Annotated[Path, typer.Argument(help="JSONL: one {custom_id, method, url, body} a line.")],
    endpoint: Annotated[
        str, typer.Option(help="/v1/chat/completions or /v1/completions (every line's url).")
    ] = "/v1/chat/completions",
    max_concurrent: Annotated[
        int | None, typer.Option(help="Slots the batch may hold at once (default: all).")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Refuse the batch if its lines ask for more tokens.")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds; unfinished lines then expire.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show a live progress bar until the batch ends.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload FILE and start a batch over it; prints the batch id (or, with --watch,
    follows it to the end and prints its output and error file ids)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", 2)
    metadata = {
        key: str(value)
        for key, value in (
            ("llmos_max_concurrent", max_concurrent),
            ("llmos_token_budget", token_budget),
            ("llmos_deadline_s", deadline),
        )
        if value is not None
    }
    with connect(url, token) as client:
        uploaded = client.file_upload(data, file.name)
        batch = client.batch_create(uploaded["id"], endpoint, metadata=metadata or None)
        if not watch:
            typer.echo(batch["id"])
            return
        batch = _watch(client, batch)
    _summary(batch)
    if batch["status"] != "completed":
        raise typer.Exit(1)


def _watch(client: Client, batch: dict[str, Any]) -> dict[str, Any]:
    """A live bar (done = completed + failed of total) with the ETA, until the end."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(), transient=False) as bar:
        counts = batch["request_counts"]
        task = bar.add_task(batch["id"], total=counts["total"] or None, failed=0)
        while True:
            counts = batch["request_counts"]
            bar.update(
                task,
                completed=counts["completed"] + counts["failed"],
                failed=counts["failed"],
                description=f"{batch['id']} {batch['status']}",
            )
            if batch["status"] in OVER:
                return batch
            time.sleep(POLL_S)
            batch = client.batch_get(batch["id"])


def _summary(batch: dict[str, Any]) -> None:
    counts = batch["request_counts"]
    typer.echo(
        f"{batch['id']} {batch['status']}: {counts['completed']} completed,"
        f" {counts['failed']} failed of {counts['total']}"
    )
    typer.echo(f"output_file_id: {batch.get('output_file_id') or '-'}")
    typer.echo(f"error_file_id: {batch.get('error_file_id') or '-'}")


def ls(
    limit: Annotated[int, typer.Option(min=1, max=MAX_JOB_LIST, help="Most batches.")] = 20,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Your batches, newest first."""
    with connect(url, token) as client:
        batches = client.batch_list(limit=limit)
    if not batches:
        console().print("no batches")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    width = max(len(b["id"]) for b in batches)
    table.add_column("ID", no_wrap=True, min_width=width)  # ids are never cut
    for name in ("STATUS", "DONE", "FAILED", "TOTAL", "ENDPOINT", "AGE"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for b in batches:
        counts = b["request_counts"]
        table.add_row(
            b["id"],
            b["status"],
            cell(counts["completed"]),
            cell(counts["failed"]),
            cell(counts["total"]),
            b["endpoint"].removeprefix("/v1/"),
            age(b.get("created_at")),
        )
    console().print(table)


def get(
    batch_id: IdArg, json_: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """One batch: status, request counts, its files."""
    with connect(url, token) as client:
        batch = client.batch_get(batch_id)
    if json_:
        typer.echo(json.dumps(batch, indent=2))
    else:
        _summary(batch)


def cancel(batch_id: IdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a batch: unstarted lines never run, finished ones stay in its output."""
    with connect(url, token) as client:
        batch = client.batch_cancel(batch_id)
    typer.echo(f"{batch['id']} {batch['status']}")


def results(
    batch_id: IdArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="The error file instead of the output file.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The batch's output file (or --errors: its error file), JSONL."""
    with connect(url, token) as client:
        batch = client.batch_get(batch_id)
        file_id = batch.get("error_file_id" if errors else "output_file_id")
        if not file_id:
            which = "error" if errors else "output"
            fail(f"batch {batch_id} has no {which} file (status {batch['status']})")
        data = client.file_content(file_id)
    if output is None:
        typer.echo(data.decode("utf-8", errors="replace"), nl=False)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"{len(data.splitlines())} lines written to {output}")
