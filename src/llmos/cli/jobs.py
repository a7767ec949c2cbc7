"""`llmos jobs`: batch jobs kept in the kernel's crash-safe journal — submit, list,
show, wait for, cancel."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llmos.cli._shared import TokenOption, UrlOption, age, cell, connect, console, fail
from llmos.params import MAX_JOB_LIST

IdArg = Annotated[str, typer.Argument(help="The job's id (job-…).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the job as JSON.")]


def build() -> typer.Typer:
    app = typer.Typer(
        name="jobs",
        help="Batch jobs: requests the kernel runs in the background and never loses.",
        no_args_is_help=True,
    )
    app.command("submit")(submit)
    app.command("ls")(ls)
    app.command("get")(get)
    app.command("wait")(wait)
    app.command("cancel")(cancel)
    return app


def submit(
    text: Annotated[str, typer.Argument(help="The message (or prompt); `-` reads stdin.")],
    model: Annotated[
        str | None,
        typer.Option(help="Model id. Default: the kernel's first model.", show_default=False),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message to send first.")] = None,
    completion: Annotated[
        bool, typer.Option("--completion", help="A text completion of TEXT, not a chat.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Idempotency key: submitting it again returns the same job."),
    ] = None,
    wait_: Annotated[
        bool, typer.Option("--wait", help="Wait for the job and print its answer.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a job; prints its id once the kernel has it on disk."""
    if text == "-":
        text = sys.stdin.read()
    if completion and system:
        fail("--system is for chat jobs, not --completion", 2)
    options: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "idempotency_key": key,
    }
    with connect(url, token) as client:
        if completion:
            job = client.submit_job(prompt=text, **options)
        else:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": text})
            job = client.submit_job(messages, **options)
        if not wait_:
            typer.echo(job["id"])
            return
        job = client.wait_job(job["id"], timeout)
    _answer(job)


def ls(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only jobs in this status: queued, running, completed, failed, cancelled.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_JOB_LIST, help="Most jobs to show.")] = 100,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List your jobs, newest first."""
    with connect(url, token) as client:
        jobs = client.jobs(status, limit)
    if not jobs:
        console().print("no jobs" + (f" {status}" if status else ""), markup=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("ID", "STATUS", "KIND", "MODEL", "TRIES", "AGE", "REASON"):
        table.add_column(title, no_wrap=title != "REASON", overflow="fold")
    for j in jobs:
        reason = (j.get("error") or {}).get("message")
        table.add_row(
            Text(str(j.get("id"))),
            Text(str(j.get("status"))),
            Text(str(j.get("kind"))),
            Text(cell(j.get("model"))),
            cell(j.get("attempts")),
            age(j.get("created_at")),
            Text(cell(reason)),
        )
    console().print(table)


def get(
    job_id: IdArg, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Show a job: its status, and its answer or the reason it has none."""
    with connect(url, token) as client:
        job = client.job(job_id)
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    _show(job)


def wait(
    job_id: IdArg,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds.", show_default=False)
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Wait until a job is finished; print its answer (exit 1 if it has none)."""
    with connect(url, token) as client:
        job = client.wait_job(job_id, timeout)
    _answer(job)


def cancel(job_id: IdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a job: a queued one never runs, a running one stops at its next token."""
    with connect(url, token) as client:
        job = client.cancel_job(job_id)
    if job.get("status") == "cancelled":
        typer.echo(f"{job['id']}: cancelled")
    else:
        typer.echo(f"{job['id']}: already {job.get('status')}, left as it is")


def _text(job: dict[str, Any]) -> str:
    choice = ((job.get("result") or {}).get("choices") or [{}])[0]
    if "message" in choice:
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def _answer(job: dict[str, Any]) -> None:
    """The answer on stdout; a job without one fails the command, naming the reason."""
    if job.get("status") == "completed":
        typer.echo(_text(job))
        return
    reason = (job.get("error") or {}).get("message") or "no reason given"
    fail(f"job {job.get('id')} {job.get('status')}: {reason}")


def _show(job: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("id", "status", "kind", "model", "attempts", "owner"):
        table.add_row(key, Text(cell(job.get(key))))
    for key in ("created_at", "started_at", "finished_at"):
        value = job.get(key)
        table.add_row(key.replace("_", " "), Text(age(value) + " ago" if value else "-"))
    error = job.get("error")
    if error:
        table.add_row("reason", Text(f"{error.get('message')} ({error.get('code')})"))
    result = job.get("result")
    if result:
        choice = (result.get("choices") or [{}])[0]
        usage = result.get("usage") or {}
        table.add_row("finish", Text(cell(choice.get("finish_reason"))))
        tokens = f"{usage.get('prompt_tokens')} in, {usage.get('completion_tokens')} out"
        table.add_row("tokens", Text(tokens))
        table.add_row("answer", Text(_text(job)))
    console().print(table)
