"""`llmos backup [--to PATH] [--include-key]`, `backup ls`, `backup verify PATH`,
`llmos restore PATH` (offline), `llmos standby --primary URL` and `standby promote`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, age, connect, console, fail
from llmos.errors import LlmosError, Unavailable
from llmos.kernel import backup as bk
from llmos.kernel import standby as sb
from llmos.kernel.masterkey import ENV
from llmos.params import DEFAULT_HOST, DEFAULT_PORT, default_home
from llmos.sdk import ApiError, Client

KEY_WARNING = (
    "WARNING: this backup CONTAINS THE MASTER KEY: whoever holds it can read every"
    " file, memory and conversation in it. Keep it as safe as the key itself."
)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str, option: str) -> float:
    """`90`, `90s`, `30m`, `1h`, `7d` in seconds; a usage error names the option."""
    t = text.strip().lower()
    try:
        return float(t[:-1]) * _UNITS[t[-1]] if t and t[-1] in _UNITS else float(t)
    except ValueError:
        fail(f"{option} must be a duration like 90s, 30m, 1h or 7d (got {text!r})", EXIT_USAGE)


def _summary(m: dict[str, Any]) -> str:
    size = sum(f["size"] for f in m.get("files", {}).values())
    rows = sum(m.get("tables", {}).values())
    return f"{len(m.get('files', {}))} files, {size} bytes, {rows} rows"


def create(
    ctx: typer.Context,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="A new directory here (the snapshot is downloaded). "
            "Default: the kernel's LLMOS_HOME/backups/<time>.",
        ),
    ] = None,
    include_key: Annotated[
        bool,
        typer.Option(
            "--include-key", help="Put the master key in the backup (it is useless without it)."
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Back up the kernel's state while it serves (admins)."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(url, token) as client:
        if to is None:
            m = client.backup(None, include_key)
        else:  # the kernel writes only under its home: download the snapshot here
            m = _download(client, to.resolve(), include_key)
    typer.echo(f"backup {m['path']}: {_summary(m)} in {m.get('seconds', 0)} s")
    if m.get("key_included"):
        typer.echo(KEY_WARNING, err=True)
    else:
        typer.echo(f"the master key is not in it: restore needs --key-file or {ENV}")


def _download(client: Client, to: Path, include_key: bool) -> dict[str, Any]:
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        fail(f"--to {to}: not a new or empty directory")
    to.mkdir(parents=True, exist_ok=True, mode=0o700)
    tar = to.with_name(to.name + ".incoming.tar")
    started = time.monotonic()
    try:
        client.backup_download(tar, include_key)
        manifest = bk.unpack(tar, to)
    finally:
        tar.unlink(missing_ok=True)
    return {"path": str(to), "seconds": round(time.monotonic() - started, 3), **manifest}


def listing(url: UrlOption = None, token: TokenOption = None) -> None:
    """Backups under the kernel's LLMOS_HOME/backups, newest first."""
    with connect(url, token) as client:
        rows = client.backups()
    out = console()
    if not rows:
        out.print("no backups (make one with `llmos backup`)")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "AGE", "BYTES", "ROWS", "KEY"):
        table.add_column(col, no_wrap=True)
    table.add_column("PATH", overflow="fold")
    for b in rows:
        table.add_row(
            b["name"],
            age(b.get("created_at")),
            str(b["bytes"]),
            str(sum(b.get("tables", {}).values())),
            "INCLUDED" if b.get("key_included") else "-",
            b["path"],
        )
    out.print(table)


def verify(path: Annotated[Path, typer.Argument(help="A backup directory.")]) -> None:
    """Check a backup's files against its manifest's sizes and SHA-256 sums (offline)."""
    try:
        m = bk.verify(path)
    except LlmosError as exc:
        fail(exc.message)
    key = "INCLUDED" if m.get("key_included") else "not included"
    typer.echo(f"ok: {path}: {_summary(m)}; master key {key}; data keys {m.get('data_keys')}")


def _key_text(key_file: Path | None) -> tuple[str | None, str]:
    if key_file is not None:
        try:
            return key_file.read_text(), str(key_file)
        except OSError as exc:
            fail(f"cannot read --key-file {key_file}: {exc.strerror}", EXIT_USAGE)
    env = os.environ.get(ENV)
    return (env, ENV) if env else (None, ENV)


def restore(
    path: Annotated[Path, typer.Argument(help="A backup directory.")],
    home: Annotated[
        Path | None, typer.Option(help="An empty state directory. Default: $LLMOS_HOME.")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help=f"The master key (else {ENV}, else the backup's own).")
    ] = None,
) -> None:
    """Restore a backup into an empty LLMOS_HOME (no kernel may be running on it)."""
    target = home or default_home()
    text, source = _key_text(key_file)
    try:
        got = bk.restore(path, target, text, source)
    except LlmosError as exc:
        fail(exc.message)
    typer.echo(f"restored {path} into {target}: {_summary(got.manifest)} (key: {got.key_source})")
    typer.echo(f"start it with: llmos up --home {target}")


def follow(
    ctx: typer.Context,
    primary: Annotated[str | None, typer.Option(help="The primary kernel's URL.")] = None,
    token: Annotated[
        str | None, typer.Option(help="An admin token of the primary.", envvar="LLMOS_TOKEN")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="The standby's own state directory.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between snapshots (the RPO).")] = 30.0,
    key_file: Annotated[
        Path | None, typer.Option(help=f"The primary's master key (else {ENV}).")
    ] = None,
    with_key: Annotated[
        bool, typer.Option("--with-key", help="Pull the master key with each snapshot.")
    ] = False,
    host: Annotated[str, typer.Option(help="Where to listen once promoted.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on once promoted.")] = DEFAULT_PORT,
    device: Annotated[str, typer.Option(help="Engine once promoted: llamacpp or mock.")] = (
        "llamacpp"
    ),
) -> None:
    """Follow a primary as a warm standby; serve its state once promoted."""
    if ctx.invoked_subcommand is not None:
        return
    if not primary or not token:
        fail("a standby needs --primary URL and --token ADMIN_TOKEN", EXIT_USAGE)
    text, source = _key_text(key_file)
    if text is None and not with_key:
        fail(f"a standby needs the primary's master key: --key-file, {ENV} or --with-key")
    target = home or default_home()
    client = Client(primary, token)
    s = sb.Standby(lambda tar: _pull(client, tar, with_key), target, interval, text, source)
    try:
        s.check()
    except LlmosError as exc:
        fail(exc.message, EXIT_USAGE)
    signal.signal(signal.SIGUSR1, lambda *_: sb.request_promotion(target))
    typer.echo(f"standby of {primary} in {target}: a snapshot every {interval} s", err=True)
    try:
        s.follow()
    finally:
        client.close()
    try:
        got = s.promote()
    except LlmosError as exc:
        fail(exc.message)
    age_s = time.time() - got.manifest["created_at"]
    typer.echo(f"promoted: data from {age_s:.1f} s ago; serving on {host}:{port}", err=True)
    from llmos.cli import up

    up.up(host=host, port=port, home=target, device=device)


def _pull(client: Client, tar: Path, with_key: bool) -> None:
    try:
        client.backup_download(tar, with_key)
    except ApiError as exc:  # recorded in the standby's status; retried next interval
        raise Unavailable(f"the primary at {client.url}: {exc.message}") from None


def promote(
    home: Annotated[Path | None, typer.Option(help="The standby's state directory.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait until it serves; 0: no wait.")] = 60,
) -> None:
    """Promote the standby following in --home: it restores its last snapshot and serves."""
    target = home or default_home()
    started = time.time()
    try:
        sb.request_promotion(target)
    except LlmosError as exc:
        fail(exc.message)
    while wait and time.time() - started < wait:
        st = sb.read_status(target)
        if st.get("state") == "promoted":
            typer.echo(
                f"promoted in {st['promoted_at'] - started:.2f} s;"
                f" data age {st.get('data_age_s')} s (recovery point)"
            )
            return
        time.sleep(0.1)
    if wait:
        fail(f"the standby in {target} did not promote within {wait} s (is it running?)")
    typer.echo("promotion requested")


def build_backup() -> typer.Typer:
    app = typer.Typer(
        name="backup", help="Back up the kernel's state; list and verify backups.",
        invoke_without_command=True,
    )  # fmt: skip
    app.callback()(create)
    app.command("ls")(listing)
    app.command("verify")(verify)
    return app


def build_standby() -> typer.Typer:
    app = typer.Typer(
        name="standby", help="A warm standby of a primary kernel; `standby promote`.",
        invoke_without_command=True,
    )  # fmt: skip
    app.callback()(follow)
    app.command("promote")(promote)
    return app
