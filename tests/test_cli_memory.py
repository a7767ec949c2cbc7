"""`llmos mem`, `llmos talk` and `llmos context` through typer's CliRunner, against a
live kernel on the mock device (its tokens are characters)."""

from __future__ import annotations

import re

from click.testing import Result
from typer.testing import CliRunner

from llmos.cli.main import build_app
from llmos.sdk import Client
from tests._live_server import LiveServer


def against(server: LiveServer, *args: str, input: str | None = None) -> Result:
    argv = [*args, "--url", server.url, "--token", server.token]
    return CliRunner().invoke(build_app(), argv, input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def failed(result: Result) -> str:
    """The one-line error of a clean failure (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    return result.stderr


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


# -- mem ---------------------------------------------------------------------------
def test_mem_add_get_ls_search_rm(server: LiveServer, client: Client) -> None:
    out = ok(against(server, "mem", "add", "The spare key is under the [bold]pot[/]", "--tag", "a"))
    match = re.fullmatch(r"memory (\d+) \(shared\)\n", out)
    assert match, out
    mid = int(match[1])
    assert client.mem_get(mid)["tags"] == ["a"]
    out = ok(against(server, "mem", "add", "-", "--tag", "a", "--tag", "b", input="Owls hoot."))
    second = int(out.split()[1])
    assert client.mem_get(second)["tags"] == ["a", "b"]

    out = ok(against(server, "mem", "get", str(mid)))
    assert "The spare key is under the [bold]pot[/]" in out  # shown as text, not markup
    assert re.search(r"scope\s+shared", out)

    rows = table(ok(against(server, "mem", "ls", "--tag", "a")))
    assert rows[0] == ["ID", "SCOPE", "TAGS", "TEXT", "AGE"]
    assert [row[0] for row in rows[1:]] == [str(second), str(mid)]  # newest first
    rows = table(ok(against(server, "mem", "ls", "--tag", "a", "--limit", "1")))
    assert [row[0] for row in rows[1:]] == [str(second)]

    rows = table(ok(against(server, "mem", "search", "where is the spare key", "-k", "1")))
    assert rows[0] == ["ID", "SCOPE", "TAGS", "TEXT", "SCORE"]
    assert [row[0] for row in rows[1:]] == [str(mid)]
    assert re.fullmatch(r"\d+\.\d{3}", rows[1][-1])

    assert ok(against(server, "mem", "rm", str(mid))) == f"forgot memory {mid}\n"
    assert str(mid) not in [row[0] for row in table(ok(against(server, "mem", "ls")))]
    assert ok(against(server, "mem", "ls", "--tag", "zzz")) == "no memories tagged 'zzz'\n"
    assert ok(against(server, "mem", "search", "owls", "--tag", "zzz")) == "no matches\n"


def test_mem_add_for_a_process(server: LiveServer, client: Client) -> None:
    pid = client.spawn("mem-cli")["pid"]
    out = ok(against(server, "mem", "add", "a note for the process", "--pid", str(pid)))
    assert out.endswith(f"(process {pid})\n")
    assert client.mem_get(int(out.split()[1]))["pid"] == pid


def test_mem_errors(server: LiveServer) -> None:
    assert "no memory with id 999999" in failed(against(server, "mem", "get", "999999"))
    assert "no memory with id 999999" in failed(against(server, "mem", "rm", "999999"))
    failed(against(server, "mem", "add", "  "))
    failed(against(server, "mem", "search", "x", "-k", "0"))
    failed(against(server, "mem", "add", "x", "--pid", "999999"))
    assert against(server, "mem", "get", "abc").exit_code == 2


def test_spawn_with_memory_shared(server: LiveServer, client: Client) -> None:
    out = ok(against(server, "spawn", "sharer", "--memory-shared"))
    pid = int(out.splitlines()[0].removeprefix("pid="))
    assert client.process(pid)["memory_shared"] is True


# -- talk and context --------------------------------------------------------------
def test_talk_streams_and_the_kernel_keeps_the_turns(server: LiveServer, client: Client) -> None:
    pid = str(client.spawn("cli-talker")["pid"])
    assert ok(against(server, "context", pid)).startswith(f"process {pid}: no message")
    first = ok(against(server, "talk", pid, "hello there", "--max-tokens", "6"))
    second = ok(against(server, "talk", pid, "-", "--max-tokens", "4", input="and again"))
    assert len(first) == 6 + 1 and len(second) == 4 + 1
    history = client.history(int(pid))
    assert [t["content"] for t in history] == [
        "hello there",
        first[:-1],
        "and again",
        second[:-1],
    ]

    out = ok(against(server, "context", pid))
    lines = out.splitlines()
    view = client.context(int(pid))
    assert lines[0].startswith(f"process {pid}: {view['prompt_tokens']} prompt tokens")
    rows = {row[0]: row[1:] for row in table("\n".join(lines[1:]))}
    assert list(rows) == ["PART", "core", "recent_turns", "recalled", "new_turn"]
    assert rows["recent_turns"][1:] == ["turns", "0-1"]
    assert rows["new_turn"][1:] == ["turn", "2"]
    assert rows["core"][0] == str(view["parts"][0]["tokens"])


def test_talk_and_context_errors(server: LiveServer, client: Client) -> None:
    assert "999999" in failed(against(server, "talk", "999999", "hi"))
    assert "999999" in failed(against(server, "context", "999999"))
    pid = str(client.spawn("cli-short")["pid"])
    assert "max_tokens" in failed(against(server, "talk", pid, "hi", "--max-tokens", "100000"))
    client.kill(int(pid))
    failed(against(server, "talk", pid, "hi"))
