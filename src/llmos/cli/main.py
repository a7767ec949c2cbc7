"""The `llmos` command: one typer app, built on demand (no import-time state)."""

from __future__ import annotations

import typer

from llmos.cli import (
    access,
    agents,
    alerts,
    apps,
    ask,
    audio,
    backup,
    batch,
    chat,
    cluster,
    conv,
    fs,
    jobs,
    key,
    learn,
    mcp,
    mem,
    sched,
    sh,
    tables,
    tools,
    top,
    tune,
    up,
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="llmos",
        help="llmos: an operating system for LLM workloads.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.command("up")(up.up)
    app.command("chat")(chat.chat)
    app.command("talk")(conv.talk)
    app.command("context")(conv.context)
    app.command("ps")(tables.ps)
    app.command("spawn")(tables.spawn)
    app.command("kill")(tables.kill)
    app.command("renice")(tables.renice)
    app.command("top")(top.top)
    app.command("ask")(ask.ask)  # questions about the system, answered from its figures
    app.add_typer(alerts.build(), name="alerts")  # anomaly alerts; `alerts clear ID`
    agents.register(app)  # run, logs, wait, suspend, resume
    audio.register(app)  # transcribe, say, ocr
    app.command("info")(tables.info)
    app.command("devices")(tables.devices)
    app.command("cluster")(cluster.cluster)  # replica groups, placement, scaling events
    app.command("scale")(cluster.scale)  # `llmos scale GROUP N` (admin)
    app.command("sched")(sched.sched)
    app.command("mcp")(mcp.serve)
    app.command("sh")(sh.sh)
    app.add_typer(fs.build(), name="fs")
    app.add_typer(mem.build(), name="mem")
    app.add_typer(jobs.build(), name="jobs")
    app.add_typer(batch.build(), name="batch")  # OpenAI batches: submit --watch, results
    app.add_typer(tools.build(), name="tools")
    app.add_typer(apps.build(), name="app")
    app.add_typer(access.build_user(), name="user")
    app.add_typer(access.build_token(), name="token")
    app.add_typer(access.build_share(), name="share")
    app.add_typer(access.build_audit(), name="audit")
    app.add_typer(key.build_key(), name="key")
    app.add_typer(key.build_telemetry(), name="telemetry")
    app.add_typer(learn.build(), name="learn")
    app.add_typer(tune.build(), name="tune")  # `llmos tune [--dry-run]`, `tune history`
    app.add_typer(backup.build_backup(), name="backup")  # `backup [--to]`, `ls`, `verify`
    app.command("restore")(backup.restore)  # offline, into an empty LLMOS_HOME
    app.add_typer(backup.build_standby(), name="standby")  # follow a primary; `promote`
    return app


def main() -> None:
    build_app()()
